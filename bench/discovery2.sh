#!/usr/bin/env bash
# Discovery campaign 2 (issue #26), stage by stage; every stage resumes where a killed run stopped, and
# commits what it wrote (NLFS_COMMIT=0: leave committing to you). Plan: bench/results/discovery2_plan.md.
#
#   bash bench/discovery2.sh rates       # the baselines' learning rates in the target (the searches' warm starts)
#   bash bench/discovery2.sh baselines   # every baseline's learning rate and 10 test seeds (no search needed)
#   bash bench/discovery2.sh search      # one nlfs.evolve search per regime (its --target, the frozen rungs)
#   bash bench/discovery2.sh test        # each search's finalists: learning rate and 10 test seeds
#   bash bench/discovery2.sh heldout     # every loss in the held-out settings (digits, noise settings)
#   bash bench/discovery2.sh confirm     # pre-register (file committed first), then the fresh seeds
#   bash bench/discovery2.sh report      # bench/results/discovery2_{clean,noisy}.md
#   bash bench/discovery2.sh all         # every stage in turn
#
# REGIME=clean|noisy limits a stage to one regime; NLFS_WORKERS trainings at once (default 2, 1 thread each).
# Search run directories live under runs/ (not committed); every other training is a row of
# bench/results/discovery2_trainings.csv, appended as it finishes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${NLFS_WORKERS:-2}
REGIME=${REGIME:-both}
RESULTS=bench/results
mkdir -p runs/logs "$RESULTS/discovery2"

stage() {  # python -m bench.discovery2 STAGE, niced, logged
  nice -n 5 "$PY" -m bench.discovery2 "$1" --regime "$REGIME" --workers "$WORKERS" 2>&1 | tee -a "runs/logs/disc2-$1.log"
}

commit() {  # commit these paths only (whatever else is staged stays staged), when they changed
  [[ ${NLFS_COMMIT:-1} == 1 ]] || return 0
  local msg=$1; shift
  local paths=()
  for p in "$@"; do [[ -e $p ]] && paths+=("$p"); done
  ((${#paths[@]})) || return 0
  git add -- "${paths[@]}"
  local known=()  # git refuses a pathspec it tracks nothing under (an empty folder)
  for p in "${paths[@]}"; do [[ -n $(git ls-files -- "$p") ]] && known+=("$p"); done
  ((${#known[@]})) || return 0
  git diff --cached --quiet -- "${known[@]}" || git commit -q -m "$msg" --only -- "${known[@]}"
}

publish() {  # the reports recomputed from what is there, committed with it (they always agree)
  stage report
  commit "Discovery 2: $1" "$RESULTS/discovery2_trainings.csv" "$RESULTS/discovery2" \
    "$RESULTS"/discovery2_{clean,noisy}.md
}

published() {  # a stage, then what it wrote published even when it failed; returns the stage's status
  local rc=0
  stage "$1" || rc=$?
  publish "$2"
  return $rc
}

main() {
  case ${1:-} in
    rates) published rates "the baselines' learning rates so far" ;;
    baselines) published baselines "baseline trainings so far" ;;
    search) stage search || { publish "the searches' evaluations so far"; return 1; }
      published finalists "the searches' finalists and evaluations" ;;
    test) published test "test-stage trainings so far" ;;
    heldout) published heldout "held-out trainings so far" ;;
    confirm)
      stage preregister || return
      # the pre-registration is committed before any confirmation training starts, with the reports
      # recomputed from it (they show it as pending): committed files and reports always agree
      publish "confirmation pre-registered (finalist, baseline, seeds, test)"
      published confirm "confirmation trainings so far" ;;
    report) publish "report" ;;
    # the searches before the baselines' test seeds (a regime whose search finds nothing novel needs none),
    # the finalists' test seeds before the held-out settings: the test stage answers the question first
    all) main rates && main search && main test && main baselines && main heldout && main confirm && main report ;;
    *) sed -n '2,16p' "$0"; return 2 ;;
  esac
}

# one line, so that bash has read it all before it runs: the script may be edited while a stage runs
main "$@"; exit $?
