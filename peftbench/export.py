"""Export a run's trained modules to the tools researchers already use.

    python -m peftbench.export RUN_DIR --to peft OUT     # adapter_config.json + adapter_model.safetensors
    python -m peftbench.export RUN_DIR --merged OUT      # a plain transformers checkpoint, LoRA merged in

What each format can express, and the refusals, are `peftbench.run.export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftbench.run.artefacts import ArtefactError
from peftbench.run.export import ExportError, to_merged, to_peft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftbench.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a completed run's folder (result.json + modules.safetensors)")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--to", choices=("peft",), default="peft", help="the format (default: peft)")
    parser.add_argument("--merged", action="store_true",
                        help="write a plain transformers checkpoint with the linear modules merged instead")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.out.is_dir():  # before the model loads: a folder is written there
            raise ExportError(f"OUT {str(args.out)!r} is a file; give a folder to write (new, or one to overwrite)")
        out = to_merged(args.run_dir, args.out) if args.merged else to_peft(args.run_dir, args.out)
    except (ExportError, ArtefactError) as err:
        print(f"peftbench.export: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk, a parent that is a file: what and where, in one line
        where = f": {err.filename}" if err.filename else ""
        print(f"peftbench.export: error: {type(err).__name__}: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
