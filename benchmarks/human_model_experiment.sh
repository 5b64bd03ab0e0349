#!/usr/bin/env bash
# Does a policy trained with the drawn human (SimConfig.human.model: drawn, ifshm_ray/sim/human.py) page less and
# heal better where paging is realistic, and how do the fixed-trained hier_alert policies of configs/sweep_alert.yaml
# fare under it? Trains configs/demo_alert.yaml as that sweep's hier_alert runs (200 iterations, hand-picked split,
# jobs/sweep.py's train command) with --set env.config.human.model=drawn, then evaluates with
# benchmarks/human_model.py (jobs/evaluate.py's incidents: same split, seed and episode indices) under both human
# models. One heavy command at a time, niced.
#
#   bash benchmarks/human_model_experiment.sh [SWEEP_RUNS] [OUT] [EPISODES] [SEEDS]
#
# SWEEP_RUNS: the sweep's hier_alert runs (default results/sweep/runs/hier_alert/handpicked, holding seed<S>/);
# OUT: where the drawn-trained runs and the evaluations go (default results/human_model); EPISODES per fault type
# (default 10; the sweep's 3 are its first 3); SEEDS: training seeds (default "0 1"). A trained run (its
# summary.json) is not trained again.
set -euo pipefail
source "$(dirname "$0")/lib_drawn_train.sh"
SWEEP=${1:-results/sweep/runs/hier_alert/handpicked}
OUT=${2:-results/human_model}
EP=${3:-10}
SEEDS=${4:-0 1}

drawn_arms=() fixed_arms=() dg="" fg=""
for s in $SEEDS; do
  d=$OUT/runs/hier_alert_drawn/handpicked/seed$s
  PY="nice -n 5 $PY" drawn_train "$d" configs/demo_alert.yaml "$s"
  drawn_arms+=(--arm "drawn_s$s=checkpoint:$d")
  fixed_arms+=(--arm "fixed_s$s=checkpoint:$SWEEP/seed$s")
  dg+="${dg:++}drawn_s$s" fg+="${fg:++}fixed_s$s"
done
common=(--split handpicked --faults known,unknown --episodes "$EP" --seed 0 "${drawn_arms[@]}" "${fixed_arms[@]}"
        --group "drawn_trained=$dg" --group "fixed_trained=$fg" --pair drawn_trained:fixed_trained)

# (a)-(c): everything under the drawn human; the references' rows and pairs beside the trained ones
nice -n 5 $PY benchmarks/human_model.py --human drawn "${common[@]}" \
  --arm oracle --arm runbook --arm runbook-full --arm runbook-instant --arm nearest-known --arm escalate-first \
  --arm random \
  --pair drawn_trained:runbook --pair fixed_trained:runbook --pair drawn_trained:escalate-first \
  --pair fixed_trained:escalate-first --out "$OUT/eval_drawn" > "$OUT/eval_drawn.json"

# (d): the same trained policies under the fixed human (as they were trained / as the drawn ones were not)
nice -n 5 $PY benchmarks/human_model.py --human fixed "${common[@]}" --arm runbook --arm escalate-first \
  --pair drawn_trained:runbook --pair fixed_trained:runbook --pair drawn_trained:escalate-first \
  --pair fixed_trained:escalate-first --out "$OUT/eval_fixed" > "$OUT/eval_fixed.json"

# sensitivity: MTTR is censored at the episode's time limit (1 h; a drawn page often runs past it, and so does a
# policy that never pages), so the same under the drawn human with a 4 h limit (SimConfig.time_limit_s; it also
# spreads the benign blips' start over 2 h instead of 30 min, so the incidents differ slightly from the 1 h runs)
nice -n 5 $PY benchmarks/human_model.py --human drawn --set time_limit_s=14400 "${common[@]}" --arm oracle \
  --arm runbook --arm escalate-first \
  --pair drawn_trained:runbook --pair fixed_trained:runbook --pair drawn_trained:escalate-first \
  --pair fixed_trained:escalate-first --out "$OUT/eval_drawn_4h" > "$OUT/eval_drawn_4h.json"
