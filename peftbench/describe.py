"""Budget before training: ``python -m peftbench.describe method=<name> model=<name> [overrides]``.

Prints one JSON object with the parameter counts of ``apply_method`` and the per-module breakdown. The model is
built on the meta device from its config, so no weights are loaded and ``model=roberta_base`` works offline.
"""

from __future__ import annotations

import json
import sys

from peftbench.run.config import compose, fail, one_line_error, to_specs


def describe(overrides: list[str]) -> dict:
    """The budget of one (method, model) as plain data."""
    from peftbench.run.models import load_model
    from peftbench.run.tasks import get_task
    from peftbench.space.inject import apply_method

    specs = to_specs(compose(overrides))
    model = load_model(specs.model, num_labels=get_task(specs.task.name).num_labels, device="meta")
    report = apply_method(model, specs.method)
    out = {"method": specs.method.name, "model": specs.model.name, "task": specs.task.name}
    out.update(report.as_dict())
    out["paper_share_percent"] = round(100 * report.paper_share, 4)
    out["design"] = specs.method.coordinates()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        result = describe(argv)
    except Exception as err:  # composition, validation and model errors all end here with one line
        fail(one_line_error(err))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
