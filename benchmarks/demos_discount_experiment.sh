#!/usr/bin/env bash
# Under the drawn paged human (SimConfig.human.model: drawn): hier_alert (configs/demo_alert.yaml) with and without the
# blind runbook's demonstrations in the replay (configs/demo_alert_demos.yaml) and with and without the semi-MDP
# duration discount (env.config.reward.duration_discount = ppo.gamma), 200 iterations each on the hand-picked split,
# two runs at a time, then one paired evaluation of the four groups with the references (benchmarks/human_model.py,
# 5 incidents per type, incident seed 0). A finished run (its summary.json) is not trained again.
#
#   bash benchmarks/demos_discount_experiment.sh [OUT] [SEEDS]      (default results/drawn_demos, "0 1 2"; ~35 min)
set -euo pipefail
source "$(dirname "$0")/lib_drawn_train.sh"
OUT=${1:-results/drawn_demos}
SEEDS=${2:-0 1 2}
train() { # name config seed [--set ...]
  local name=$1 cfg=$2 s=$3; shift 3
  drawn_train "$OUT/runs/$name/handpicked/seed$s" "$cfg" "$s" "$@"
  echo "$(date +%T) trained $name seed $s"
}
DISC=(--set env.config.reward.duration_discount=0.99)
for s in $SEEDS; do
  train plain configs/demo_alert.yaml "$s" & train demos configs/demo_alert_demos.yaml "$s" & wait
  train disc configs/demo_alert.yaml "$s" "${DISC[@]}" & train disc_demos configs/demo_alert_demos.yaml "$s" "${DISC[@]}" &
  wait
done
arms=() groups=()
for g in plain demos disc disc_demos; do
  m=""
  for s in $SEEDS; do arms+=(--arm "${g}_s$s=checkpoint:$OUT/runs/$g/handpicked/seed$s"); m+="${m:++}${g}_s$s"; done
  groups+=(--group "$g=$m")
done
$PY benchmarks/human_model.py --human drawn --split handpicked --faults known,unknown --episodes 5 --seed 0 \
  "${arms[@]}" "${groups[@]}" --arm runbook --arm escalate-first --arm oracle \
  --pair demos:plain --pair disc:plain --pair disc_demos:plain --pair disc_demos:disc --pair plain:runbook \
  --pair demos:runbook --pair disc:runbook --pair disc_demos:runbook \
  --out "$OUT/eval_drawn" > "$OUT/eval_drawn.json"
