#!/usr/bin/env bash
# The README's first command (python -m nlfs.evolve, its defaults), timed at each revision given (default:
# HEAD), one after another on this machine: a row of bench/results/first_command_time.csv per run (date,
# machine, revision, wall and CPU seconds, load at the start, the run's own stage line). Time it on quiet
# cores: pause background trainings first (kill -STOP -PGID, then kill -CONT -PGID).
#
#   bash bench/first_command_time.sh 356da15 HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
OUT=$ROOT/bench/results/first_command_time.csv
WORK=$ROOT/runs/first_command
mkdir -p "$WORK"
[[ -f $OUT ]] || echo "date,machine,revision,wall_s,cpu_s,load_at_start,candidates_trained,stages" > "$OUT"
machine=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)", $(nproc) cores"
for rev in "${@:-HEAD}"; do
  sha=$(git rev-parse --short "$rev")
  tree=$WORK/tree-$sha run=$WORK/run-$sha-$(date +%s)
  [[ -d $tree ]] || git worktree add -q --detach "$tree" "$sha"
  cp nlfs/_cpp*.so "$tree/nlfs/" 2>/dev/null || true  # the C++ evaluator as built here (bootstrap's)
  load=$(cut -d' ' -f1 /proc/loadavg)
  # the tree's own nlfs: -m puts the working directory first on the path (the workers inherit it)
  rc=0
  (cd "$tree" && /usr/bin/time -f "%e %U %S" -o "$run.time" "$PY" -m nlfs.evolve --run-dir "$run" --no-progress \
     > "$run.log" 2>&1) || rc=$?
  read -r wall user sys < <(tail -1 "$run.time")  # (a failed command's file starts with its exit status)
  cpu=$(echo "$user + $sys" | bc)
  trained=$(grep -o "^candidates [0-9]*: trained [0-9]*" "$run.log" | grep -o "[0-9]*$" || true)
  stages=$(grep "^rungs:" "$run.log" | sed 's/^rungs: //; s/,/;/g' || true)
  ((rc == 0)) || stages="FAILED (exit $rc, $run.log): $stages"
  echo "$(date -u +%F),\"$machine\",$sha,$wall,$cpu,$load,$trained,\"$stages\"" | tee -a "$OUT"
done
