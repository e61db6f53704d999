#!/usr/bin/env bash
# Run the protocol of experiments/README.md for each named experiment, resuming from the records in results/:
#   1. its tuning grid (seeds 0-2; completed runs are skipped),
#   2. twice the lr extensions `report --next-lrs` prints (a held-out choice at a grid edge),
#   3. the evaluation seeds `report --next-evals N` prints (seeds from 100, at each arm's chosen lr).
# Usage: bash experiments/run_protocol.sh insertion_cpu composition_cpu
# Environment: PEFTBENCH_EXEC (default: one worker, one thread; "train.threads=1 hydra/launcher=joblib
# hydra.launcher.n_jobs=2" is 1.16x faster on a quiet 2-core machine, benchmarks/RESULTS.md section 7),
# PEFTBENCH_EVALS (evaluation seeds per arm, default 5; "auto": what each undecided comparison's power analysis
# asks for, within 5-12), PEFTBENCH_LOG (default protocol.log), PYTHON, and
# PEFTBENCH_GRID: overrides for the tuning grid's command only ("task=sst2" runs one task's grid; the lr extensions
# and evaluation seeds follow the records, so a task without them gets none).
# Run it in a worktree of its own (git worktree add --detach ../sweep main) so that edits to the working tree
# do not change a running sweep, and copy finished records back with experiments/copy_records.sh.
set -u
PY=${PYTHON:-python}
EXEC=${PEFTBENCH_EXEC:-train.threads=1}
EVALS=${PEFTBENCH_EVALS:-5}
GRID=${PEFTBENCH_GRID:-}
LOG=${PEFTBENCH_LOG:-protocol.log}
log() { echo "$(date +%H:%M:%S) $*" | tee -a "$LOG"; }
run_printed() {  # run every command a report option prints; lines carrying a '#' note are left for a person
  local exp=$1 opt=$2 cmds
  cmds=$(mktemp)
  $PY -m peftbench.report "results/$exp" $opt 2>/dev/null | grep '^python -m peftbench' | grep -v '#' > "$cmds"
  log "$exp $opt: $(wc -l < "$cmds") commands"
  while read -r line; do
    # the printed line's own execution settings give way to EXEC
    cmd=$(echo "$line" | tr ' ' '\n' | grep -v '^train.threads=\|^hydra/launcher=\|^hydra.launcher\.' | tr '\n' ' ')
    log "run: $cmd"
    eval "${cmd/python/$PY} $EXEC" >> "$LOG.runs" 2>&1 || log "FAILED: $cmd"
  done < "$cmds"
  rm -f "$cmds"
}
for exp in "$@"; do
  log "$exp: tuning grid"
  $PY -m peftbench -m "+experiment=$exp" $GRID $EXEC >> "$LOG.runs" 2>&1 || log "grid FAILED $exp"
  for _ in 1 2; do run_printed "$exp" --next-lrs; done
  run_printed "$exp" "--next-evals $EVALS"
  log "$exp: done"
done
