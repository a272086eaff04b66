#!/usr/bin/env bash
# The discovery campaign (issue #14), stage by stage; every stage resumes where a killed run stopped.
#
#   bash bench/discovery.sh search     # three searches on Fashion-MNIST, ~30 min each on 2 workers
#   bash bench/discovery.sh publish    # copy each run's summary, hall of fame and plots to bench/results
#
# Run directories live under runs/ (not committed); what is committed is under bench/results/discovery/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${NLFS_SEARCH_MINUTES:-28}   # no new candidate after this; screened ones finish their rungs
WORKERS=${NLFS_WORKERS:-2}
RESULTS=bench/results/discovery
mkdir -p runs/logs "$RESULTS"

# name | evolve arguments. GP over the GP tree space warm-started from CE and Poly1 (the default);
# regularized evolution over NLFS cells (random starts: that space has no warm start); GP under Mixup,
# whose soft targets make a different loss optimal (the third seed paper searched per augmentation).
SEARCHES=(
  "disc-gp|--algorithm gp --seed 0"
  "disc-nlfs|--algorithm regularized --space nlfs --seed 0"
  "disc-gp-mixup|--algorithm gp --augment mixup --seed 1"
)

search_one() {
  local name=$1 args=$2 dir=runs/$1
  if [[ -f $dir/summary.json ]]; then
    echo "[$name] finished: $dir/summary.json"; return
  fi
  if [[ -f $dir/run.db ]]; then  # killed: resume for a shorter while rather than start over
    echo "[$name] resuming $dir"
    nice -n 5 "$PY" -m nlfs.evolve --resume "$dir" --time-limit "$((MINUTES / 3))" --workers "$WORKERS" \
      --no-progress >>"runs/logs/$name.log" 2>&1
  else
    # shellcheck disable=SC2086  # args is a word list on purpose
    nice -n 5 "$PY" -m nlfs.evolve --dataset fashion-mnist $args --time-limit "$MINUTES" --workers "$WORKERS" \
      --run-dir "$dir" --no-progress >"runs/logs/$name.log" 2>&1
  fi
}

publish() {
  for spec in "${SEARCHES[@]}"; do
    local name=${spec%%|*} dir=runs/${spec%%|*}
    [[ -f $dir/summary.json ]] || { echo "[$name] not finished"; continue; }
    mkdir -p "$RESULTS/$name"
    cp "$dir"/{summary.json,hall_of_fame.md,fitness.png,best_losses.py} "$RESULTS/$name/"
    [[ -f $dir/loss_shapes.png ]] && cp "$dir/loss_shapes.png" "$RESULTS/$name/"
    cp "runs/logs/$name.log" "$RESULTS/$name/evolve.log"
  done
}

main() {
  case ${1:-} in
    search) for spec in "${SEARCHES[@]}"; do search_one "${spec%%|*}" "${spec#*|}"; done; publish ;;
    publish) publish ;;
    *) sed -n '2,8p' "$0"; return 2 ;;
  esac
}

# one line, so that bash has read it all before it runs: the script may be edited while a stage runs
main "$@"; exit $?
