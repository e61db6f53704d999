"""One benchmark run: from a command line to its record.

`config` is the schema every config group is checked against; `sweep` turns a command line into its jobs and
`validate` checks every one of them, and the folders they write to, before anything runs; `job` runs one job
(resume, claim, checkpoint, record); `train` is the run itself (GLUE data from `data` and `batching`, the model from
`models`, scores from `metrics`, inference cost from `latency`); `checkpoint` and `claims` let a run survive
preemption and share a results folder; `record` writes the one self-describing ``result.json``, `artefacts` what the
run trained; `tracking` logs to W&B. The run imports the design space (`peftbench.space`), never the analysis.
"""
