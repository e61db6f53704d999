"""One benchmark run: from a command line to its record.

`config` is the schema every config group is checked against; `sweep` turns a command line into its jobs and
`validate` checks every one of them, and the folders they write to, before anything runs; `job` runs one job
(resume, claim, checkpoint, record). The run itself: `setup` (GLUE data: the task facts of `tasks`, loaded by
`data`, tokenised by `tokenisation`; the model from `models`, the method applied), `train` (batches from `batching`,
the best epoch kept on the held-out split), `evaluate` (scores from `metrics`), `precision` (what
``mixed_precision=auto`` resolves to), `latency` (inference cost). `checkpoint` and `claims` let a run survive
preemption and share a results folder; `record` writes the one self-describing ``result.json``, `artefacts` what the
run trained (`export` turns it into peft's format or a merged checkpoint); `rerun` and `verify` rerun a committed
record and compare it bit for bit; `tracking` logs to W&B. The run imports the design space (`peftbench.space`),
never the analysis.
"""
