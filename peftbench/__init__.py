"""peftbench: parameter-efficient fine-tuning methods as points in one design space (He et al., ICLR 2022)."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

__all__ = ["MethodSpec", "ModuleSpec", "PromptSpec", "apply_method", "load_method", "load_run", "__version__"]

# conf/hydra/launcher/{joblib,submitit_slurm}.yaml carry our defaults under the plugins' own names, and Hydra still
# validates them against the plugins' schemas (a typo is caught), with a deprecation notice in every process.
warnings.filterwarnings("ignore", message=r"\n?'hydra/launcher/\w+' is validated against ConfigStore schema")


def __getattr__(name: str):
    # Lazy so that `import peftbench.run.data` or `peftbench.report` does not pull in torch and transformers.
    if name in ("load_method",):
        from peftbench.space.presets import load_method

        return load_method
    if name in ("apply_method",):
        from peftbench.space.inject import apply_method

        return apply_method
    if name in ("load_run",):
        from peftbench.run.artefacts import load_run

        return load_run
    if name in ("MethodSpec", "ModuleSpec", "PromptSpec"):
        from peftbench.space import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'peftbench' has no attribute {name!r}")
