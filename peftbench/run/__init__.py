"""One benchmark run: from a composed config to its record.

`config` is the schema every config group is checked against; `train` is the run itself (GLUE data from `data` and
`batching`, the model from `models`, scores from `metrics`, inference cost from `latency`); `checkpoint` and `claims`
let a run survive preemption and share a results folder; `record` writes the one self-describing ``result.json``,
`artefacts` what the run trained; `tracking` logs to W&B. The run imports the design space (`peftbench.space`),
never the analysis.
"""
