# Sourced by the benchmarks/*_experiment.sh scripts (not run alone): the offline, single-threaded environment of a
# training run, and drawn_train, which trains one jobs/train.py run the way those experiments do (200 iterations on
# the hand-picked split under the drawn paged human, one CPU) unless the run already finished (its summary.json).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
unset RAY_ADDRESS

drawn_train() { # RUN_DIR CONFIG SEED [--set ...]
  local d=$1 cfg=$2 s=$3; shift 3
  mkdir -p "$d"
  [ -f "$d/summary.json" ] || $PY jobs/train.py --config "$cfg" --out "$d" --seed "$s" --iterations 200 \
    --max-wall-s 1800 --num-cpus 1 --set env.config.split=handpicked --set runners.torch_threads=1 \
    --set env.config.human.model=drawn "$@" > "$d/train.log" 2>&1
}
