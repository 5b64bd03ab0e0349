#!/usr/bin/env bash
# Semi-MDP discounting (reward.duration_discount = ppo.gamma: the simulator discounts the unhealthy time inside a
# step, and ifshm_ray/policy/semi_mdp.py the learner's GAE and the replay's returns across steps, gamma ** the step's
# length) under the drawn paged human, with the entity target head: configs/demo_alert_entity.yaml trained with
# (smdp) and without (ent) the discount, 200 iterations per seed on the hand-picked split, two runs at a time, then one
# paired evaluation (benchmarks/human_model.py, drawn human, 5 incidents per type, incident seed 0) with the
# references. A finished run (its summary.json) is not trained again.
#
#   bash benchmarks/semi_mdp_experiment.sh [OUT] [SEEDS]      (default results/semi_mdp, "0 1 2"; ~45 min on 2 cores)
set -euo pipefail
source "$(dirname "$0")/lib_drawn_train.sh"
OUT=${1:-results/semi_mdp}
SEEDS=${2:-0 1 2}
train() { # name seed [--set ...]
  local name=$1 s=$2; shift 2
  drawn_train "$OUT/runs/$name/handpicked/seed$s" configs/demo_alert_entity.yaml "$s" "$@"
  echo "$(date +%T) trained $name seed $s"
}
for s in $SEEDS; do
  train ent "$s" & train smdp "$s" --set env.config.reward.duration_discount=0.99 & wait
done
arms=() groups=()
for g in ent smdp; do
  m=""
  for s in $SEEDS; do arms+=(--arm "${g}_s$s=checkpoint:$OUT/runs/$g/handpicked/seed$s"); m+="${m:++}${g}_s$s"; done
  groups+=(--group "$g=$m")
done
$PY benchmarks/human_model.py --human drawn --split handpicked --faults known,unknown --episodes 5 --seed 0 \
  "${arms[@]}" "${groups[@]}" --arm runbook --arm escalate-first --arm oracle \
  --pair smdp:ent --pair ent:runbook --pair smdp:runbook \
  --out "$OUT/eval_drawn" > "$OUT/eval_drawn.json"
