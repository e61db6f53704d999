#!/usr/bin/env bash
# Copy the finished records (result.json only, never weights or interrupted runs) that a sweep worktree has made
# and this tree lacks.  Usage: bash experiments/copy_records.sh ../sweep
set -u
src=${1:?usage: copy_records.sh SWEEP_WORKTREE}
dst=$(pwd)
n=0
while IFS= read -r f; do
  grep -q '"status": "interrupted"' "$src/$f" && continue
  if [ ! -e "$dst/$f" ]; then mkdir -p "$dst/$(dirname "$f")"; cp "$src/$f" "$dst/$f"; n=$((n + 1)); fi
done < <(cd "$src" && find results -name result.json)
echo "copied $n records from $src"
