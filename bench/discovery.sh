#!/usr/bin/env bash
# The discovery campaign (issue #14), stage by stage; every stage resumes where a killed run stopped.
#
#   bash bench/discovery.sh search     # three searches on Fashion-MNIST, ~30 min each on 2 workers
#   bash bench/discovery.sh refine     # tune each run's best 2, eliminate all runs' best to 3 finalists
#   bash bench/discovery.sh heldout    # 4 held-out settings x (3 finalists + 3 baselines) x 10 seeds
#   bash bench/discovery.sh confirm    # the held-out lead most likely real vs CE, on 20 fresh seeds
#   bash bench/discovery.sh report     # publish the runs' files, the table, the plot; then `ship`
#   bash bench/discovery.sh all        # every stage in turn
#
# Run directories live under runs/ (not committed); what is committed is under bench/results/discovery/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${NLFS_SEARCH_MINUTES:-28}   # no new candidate after this; screened ones finish their rungs
WORKERS=${NLFS_WORKERS:-2}
RESULTS=bench/results/discovery
mkdir -p runs/logs "$RESULTS"

# name | evolve arguments. GP over the GP tree space warm-started from CE and Poly1 (the default then, named);
# regularized evolution over NLFS cells (random starts: that space has no warm start); GP under Mixup,
# whose soft targets make a different loss optimal (the third seed paper searched per augmentation).
SEARCHES=(
  "disc-gp|--algorithm gp --seed-losses CE,Poly1 --seed 0"
  "disc-nlfs|--algorithm regularized --space nlfs --seed 0"
  "disc-gp-mixup|--algorithm gp --seed-losses CE,Poly1 --augment mixup --seed 1"
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

refine() {
  # budgets above the search's (its last rung: 4,096 images, 2 epochs, 3 seeds): 8,192 images, 2 epochs
  # per tuning trial; elimination rounds of 2, 4 and 8 epochs on 8,192 images with 2, 3 and 5 new seeds
  local budget=(--train-size 8192 --epochs 2 --val-size 5000)
  for spec in "${SEARCHES[@]}"; do
    local dir=runs/${spec%%|*}
    [[ -f $dir/tuned.json ]] || nice -n 5 "$PY" -m nlfs.tune --run-dir "$dir" --top 2 --novel-only --trials 12 \
      --batch 4 --workers "$WORKERS" "${budget[@]}" >>runs/logs/tune.log 2>&1
  done
  local first=runs/${SEARCHES[0]%%|*} also=""
  for spec in "${SEARCHES[@]:1}"; do also+="${also:+,}runs/${spec%%|*}"; done
  nice -n 5 "$PY" -m nlfs.eliminate --run-dir "$first" --also "$also" --tuned --novel-only --pool 8 \
    --keep 10,5,3 --seeds 2,3,5 --budget-scale 1,2,4 --models surrogate --first-seed 100 \
    --workers "$WORKERS" "${budget[@]}" >>runs/logs/eliminate.log 2>&1
  "$PY" -m bench.discovery finalists
}

heldout() {
  # one setting at a time, one training per core (each transfer resumes its CSVs)
  local s
  for s in arch cutout noise full; do
    nice -n 5 "$PY" -m bench.discovery heldout "$s" --workers "$WORKERS" >>"runs/logs/heldout-$s.log" 2>&1 || return
  done
}

confirm() {
  # the held-out lead most likely to be real, trained again on fresh seeds (rule: bench/discovery.py)
  mkdir -p "$RESULTS/heldout"
  cp runs/disc-heldout/*.csv runs/disc-heldout/*.md "$RESULTS/heldout/"
  nice -n 5 "$PY" -m bench.discovery confirm --workers "$WORKERS" >>runs/logs/confirm.log 2>&1
}

report() {
  publish
  local first=runs/${SEARCHES[0]%%|*}
  cp "$first"/elimination.{md,json} "$RESULTS/"
  for spec in "${SEARCHES[@]}"; do
    local dir=runs/${spec%%|*}
    [[ -f $dir/tuned.md ]] && cp "$dir/tuned.md" "$RESULTS/${spec%%|*}/tuned.md"
  done
  cp runs/disc-finalists.json "$RESULTS/finalists.json"
  mkdir -p "$RESULTS/heldout"
  cp runs/disc-heldout/*.csv runs/disc-heldout/*.md "$RESULTS/heldout/" 2>/dev/null || true
  if [[ -d runs/disc-confirm ]]; then
    mkdir -p "$RESULTS/confirm"
    cp runs/disc-confirm/*.csv runs/disc-confirm/*.md "$RESULTS/confirm/"
  fi
  "$PY" -m bench.discovery trajectory $(for spec in "${SEARCHES[@]}"; do echo "runs/${spec%%|*}"; done)
  "$PY" -m bench.discovery report
}

publish() {
  for spec in "${SEARCHES[@]}"; do
    local name=${spec%%|*} dir=runs/${spec%%|*}
    [[ -f $dir/summary.json ]] || { echo "[$name] not finished"; continue; }
    mkdir -p "$RESULTS/$name"
    cp "$dir"/{summary.json,hall_of_fame.md,fitness.png} "$RESULTS/$name/"
    [[ -f $dir/loss_shapes.png ]] && cp "$dir/loss_shapes.png" "$RESULTS/$name/"
    cp "runs/logs/$name.log" "$RESULTS/$name/evolve.log"
  done
}

main() {
  case ${1:-} in
    search) for spec in "${SEARCHES[@]}"; do search_one "${spec%%|*}" "${spec#*|}"; done; publish ;;
    refine) refine ;;
    heldout) heldout ;;
    confirm) confirm ;;
    report) report ;;
    publish) publish ;;
    all) main search && refine && heldout && confirm && report && "$PY" -m bench.discovery ship ;;
    *) sed -n '2,11p' "$0"; return 2 ;;
  esac
}

# one line, so that bash has read it all before it runs: the script may be edited while a stage runs
main "$@"; exit $?
