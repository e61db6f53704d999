"""Errors in one line: Hydra's and OmegaConf's multi-line, chained errors as the one line a command prints, and the
"did you mean" for an unknown key (the valid fields of its schema, nested ones too).

`peftbench.run.config.one_line_error` calls `one_line_error` with the config's schemas; `fail` prints the line and
exits 2.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import fields

#: names users reach for that a schema spells otherwise (ModuleSpec's bottleneck dimension / rank is ``r``)
ALIASES = {"rank": "r", "dim": "r", "bottleneck": "r", "alpha": "scale", "lora_alpha": "scale"}
_NOT_IN = re.compile(r"Key '([^']+)' not in '(\w+)'")
_OVERRIDE = re.compile(r"Could not override '([^']+)'")


def closest(key: str, valid: list[str]) -> list[str]:
    """The valid field a mistyped `key` most likely meant: an alias, a close spelling, or a prefix of it."""
    if ALIASES.get(key) in valid:
        return [ALIASES[key]]
    return difflib.get_close_matches(key, valid, n=1) or sorted(
        (v for v in valid if key.startswith(v) or v.startswith(key)), key=len, reverse=True)[:1]


def unknown_key_message(text: str, schemas: tuple[type, ...]) -> str | None:
    """Hydra's "Could not override 'a.b.k' ... Key 'k' not in 'Schema'" in the words of `check_known_keys`: the
    valid fields of that schema, nested ones (``method.modules.attn.rank``: ModuleSpec) too, and "did you mean"."""
    found = _NOT_IN.search(text)
    schema = {s.__name__: s for s in schemas}.get(found[2]) if found else None
    if schema is None:
        return None
    key, override = found[1], _OVERRIDE.search(text)
    dotted = override[1] if override and override[1].endswith(key) else key
    where = dotted[: -len(key)]
    valid = [f.name for f in fields(schema)]
    close = closest(key, valid)
    hint = f"; did you mean {where}{close[0]}?" if close else ""
    return f"unknown key {dotted!r}; valid keys of {where.rstrip('.') or 'the config'} ({found[2]}): {', '.join(valid)}{hint}"


def one_line_error(err: BaseException, schemas: tuple[type, ...] = ()) -> str:
    """One line from Hydra/OmegaConf errors, which span lines and chain causes (the key, the valid options); an
    unknown key of one of `schemas` as `unknown_key_message` words it."""
    chain: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(chain) < 5:
        chain.append(str(seen))
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    message = unknown_key_message("\n".join(chain), schemas)
    if message:
        return message
    parts: list[str] = []
    seen = err
    while seen is not None and len(parts) < 3:
        text = str(seen)
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(seen).__name__
        if "Available options" in text:
            block = text.split("Available options", 1)[1].split("Config search path", 1)[0]
            options = [o.strip() for o in block.splitlines()[1:] if o.strip() and not o.strip().startswith("base_")]
            first = f"{first}; valid: {', '.join(options)}"
        first = first.removeprefix("In 'config': ").rstrip(".")
        if not any(first in p for p in parts) and "$VALUE" not in first:
            parts.append(first)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return "; ".join(parts)


def fail(message: str, code: int = 2) -> None:
    print(f"peftbench: error: {message}", file=sys.stderr)
    raise SystemExit(code)
