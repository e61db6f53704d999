"""Named methods are presets of one spec: the YAML files in ``conf/method/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from peftbench.space.spec import MethodSpec, SpecError

#: the Hydra config tree: its ``method/`` group holds the presets; the run's schema composes the whole of it
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def load_method(name: str, **overrides: Any) -> MethodSpec:
    """The validated spec of preset ``name`` with overrides applied.

    Keys are dotted paths into the spec; a key whose first part is a module slot of the preset may omit
    ``modules.``: ``load_method("mam", **{"ffn.r": 64, "attn.r": 30})`` is ``modules.ffn.r=64 modules.attn.r=30``.
    Unknown keys and values of the wrong type raise :class:`SpecError`.
    """
    if name not in preset_names():
        raise SpecError(f"unknown method {name!r}; valid methods: {', '.join(preset_names())}")
    cfg = OmegaConf.merge(OmegaConf.structured(MethodSpec), OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml"))
    for key, value in overrides.items():
        path = f"modules.{key}" if key.split(".")[0] in cfg.modules else key
        try:
            OmegaConf.update(cfg, path, value, merge=False)
        except Exception as err:  # OmegaConf raises several error types; all mean a bad key or value
            raise SpecError(f"method override {key}={value!r}: {str(err).splitlines()[0]}") from err
    return OmegaConf.to_object(cfg)
