#!/usr/bin/env bash
# One-GPU check (under 10 minutes on one large GPU): the paper-scale pieces this 2-core CPU cannot run.
#   bash benchmarks/gpu_check.sh [--tiny] [--out DIR]
#  1. fig2_beta1:   the Fig. 2 teacher-student simulation at beta = 1 (N = 700, d = 150, n = 3000, App. C's
#                   five sigma^2, 16 networks each) for a reduced step count, compared with the theory;
#  2. modular_P401: the modular Langevin sigma^2 sweep at the paper's Fig. 3 sizes (P = 401, N = 1000,
#                   sa2 = 0.002/N, gamma = 1e-4), cooling from the prior, with the exact Gibbs readout;
#  3. bench_sims:   the simulation benchmark (engine vs the hand-written step; --quick rounds);
#  4. precision:    the reduced-precision bias at beta = 1/8: float32 with full products (highest) against
#                   the device's own reduced setting (default: TF32 on Ampere+ GPUs) and the tf32/bf16
#                   emulations, paired per data set (docs/precision.md);
#  5. multi_device: with more than one device (or --tiny: two CPU host devices), a modular run on one
#                   device and sharded over all of them (data compared), then the same run as two
#                   processes (--distributed, one device each) against one process with two devices.
# Everything (netCDF results, JSON summaries, logs, timings.json, the device) goes to one folder
# (default results/gpu_check).  --tiny: the same three steps at toy sizes (seconds to a minute on a CPU;
# what the test suite runs to check that the script works).
set -euo pipefail
TINY=0
OUT=results/gpu_check
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) TINY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GROKPHASE=${GROKPHASE:-grokphase}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
TIMINGS="$OUT/timings.jsonl"
: > "$TIMINGS"

step() {   # step NAME CMD...: run, capture stdout (JSON) and stderr, record wall time and status
  local name=$1; shift
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" > "$OUT/$name.json" 2> "$OUT/$name.log" || rc=$?
  t1=$(date +%s.%N)
  printf '{"step": "%s", "seconds": %.2f, "rc": %d}\n' "$name" "$(echo "$t1 - $t0" | bc -l)" "$rc" >> "$TIMINGS"
  echo "gpu_check: $name rc=$rc ($(tail -n 1 "$TIMINGS"))" >&2
  return $rc
}

"$PYTHON" - > "$OUT/device.json" <<'PY'
import json, jax
print(json.dumps({"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "jax": jax.__version__}))
PY
NDEV=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["devices"]))' "$OUT/device.json")
BACKEND=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["backend"])' "$OUT/device.json")

same_data() {   # same_data A.nc B.nc TOL: JSON of the largest difference; rc 1 when over TOL (0: bit for bit)
  "$PYTHON" - "$@" <<'PY'
import json, sys
import numpy as np
from grokphase.io import load_dataset
a, b, tol = load_dataset(sys.argv[1]), load_dataset(sys.argv[2]), float(sys.argv[3])
worst, name = 0.0, None
for v in a.data_vars:
    x, y = np.asarray(a[v].values, float), np.asarray(b[v].values, float)
    d = float(np.nanmax(np.abs(x - y) / (1 + np.abs(x)), initial=0.0)) if x.shape == y.shape else np.inf
    if d > worst:
        worst, name = d, v
same = all(np.array_equal(a[v].values, b[v].values, equal_nan=a[v].dtype.kind in "fc") for v in a.data_vars)
print(json.dumps({"a": sys.argv[1], "b": sys.argv[2], "bit_identical": same, "max_rel_diff": worst,
                  "worst_variable": name, "tolerance": tol}))
sys.exit(0 if worst <= tol else 1)
PY
}

if [[ $TINY == 1 ]]; then
  TS=(--beta 1/32 --datasets 2 --inits 1 --steps 200 --burn-in 50 --record-every 50 --lr 0.05 --s2 0.1,0.3)
  MOD=(--P 7 --N 16 --sa2 4.3e-3 --gamma 0.01 --steps 40 --burn-in 10 --record-every 10 --s2 0.1,0.25 --lr 0.05)
  BENCH=(--quick --pairs 1 --only 0.125 --M 32 --dtype float32 --impls engine,hand --stats-steps 0 --skip-devices
         --skip-memory)
  PREC='beta = 0.03125
s2 = [0.1]
datasets = 2
inits = 1
steps = 200
burn_in = 50
record_every = 50
lr = 0.05'
  MULTI=(--P 7 --N 16 --sa2 4.3e-3 --gamma 0.01 --steps 40 --burn-in 10 --record-every 10 --s2 0.1,0.25 --lr 0.05
         --seeds 2)
else
  TS=(--beta 1 --datasets 8 --inits 2 --steps 4000 --burn-in 1000 --record-every 100 --lr 0.002)
  MOD=(--P 401 --N 1000 --sa2 2e-6 --gamma 1e-4 --steps 600 --burn-in 200 --record-every 50
       --s2 0.16,0.2,0.24,0.28 --lr 0.02)
  BENCH=(--quick --impls engine,hand --skip-devices --skip-memory)
  PREC='beta = 0.125
s2 = [0.17]
datasets = 16
inits = 1
steps = 4000
burn_in = 1000
record_every = 50
lr = 0.05'
  MULTI=(--P 97 --N 512 --sa2 4e-5 --gamma 1e-3 --steps 2000 --burn-in 500 --record-every 100 --s2 0.14,0.18,0.22,0.26
         --lr 0.02 --seeds 4)
fi

rc=0
step fig2_beta1 "$GROKPHASE" sim teacher-student "${TS[@]}" --no-progress --json --out "$OUT/fig2_beta1.nc" || rc=1
if [[ $TINY == 0 && -f "$OUT/fig2_beta1.nc" ]]; then
  step fig2_beta1_compare "$GROKPHASE" compare teacher-student --sim "$OUT/fig2_beta1.nc" --json \
      --out "$OUT/fig2_beta1_compare.nc" --plot "$OUT/fig2_beta1_compare.png" || rc=1
fi
step modular_P401 "$GROKPHASE" sim modular "${MOD[@]}" --optimizer langevin --seeds 1 --anneal down \
    --no-progress --json --out "$OUT/modular_P401.nc" || rc=1
step bench_sims "$PYTHON" "$HERE/bench_sims_ts.py" "${BENCH[@]}" --out "$OUT/bench_sims.jsonl" || rc=1

# 4. precision: float32 highest (the reference) against the device's reduced setting and the emulations
PDIR="$OUT/precision"
mkdir -p "$PDIR"
{
  printf 'model = "teacher-student"\nout_dir = "%s"\n[common]\n%s\nseed = 0\ndtype = "float32"\n' "$PDIR" "$PREC"
  for p in highest default tf32 bf16; do
    printf '[[sim]]\nname = "float32_%s"\nmatmul_precision = "%s"\n' "$p" "$p"
  done
} > "$PDIR/precision.toml"
step precision_runs "$GROKPHASE" run "$PDIR/precision.toml" --no-progress --json || rc=1
step precision "$PYTHON" -m grokphase.experiments.precision "$PDIR" --reference float32_highest \
    --out "$OUT/precision_bias.nc" || rc=1

# 5. several devices: sharded against one device, then two processes against one process
if [[ $NDEV -gt 1 || $TINY == 1 ]]; then
  K=$(( NDEV > 1 ? NDEV : 2 ))
  step multi_device_1 "$GROKPHASE" sim modular "${MULTI[@]}" --devices 1 --no-progress --json \
      --out "$OUT/multi_device_1.nc" || rc=1
  step multi_device_k "$GROKPHASE" sim modular "${MULTI[@]}" --devices "$K" --no-progress --json \
      --out "$OUT/multi_device_k.nc" || rc=1
  step multi_device_compare same_data "$OUT/multi_device_1.nc" "$OUT/multi_device_k.nc" 1e-5 || rc=1
  step multi_process_ref "$GROKPHASE" sim modular "${MULTI[@]}" --devices 2 --no-progress --json \
      --out "$OUT/multi_process_ref.nc" || rc=1
  two_processes() {    # two processes of one run on localhost, one device each
    local port pids=() code=0
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
    for i in 0 1; do
      if [[ $BACKEND == cpu ]]; then dev=(--devices 2); else dev=(); fi
      CUDA_VISIBLE_DEVICES=$([[ $BACKEND == cpu ]] && echo "" || echo "$i") JAX_COORDINATOR_ADDRESS=localhost:$port \
        JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i GROKPHASE_DISTRIBUTED_TIMEOUT=120 \
        "$GROKPHASE" sim modular "${MULTI[@]}" "${dev[@]}" --distributed --no-progress --json \
        --out "$OUT/multi_process.nc" > "$OUT/multi_process.p$i.json" 2> "$OUT/multi_process.p$i.log" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || code=1; done
    cat "$OUT/multi_process.p0.json"
    return $code
  }
  step multi_process two_processes || rc=1
  step multi_process_compare same_data "$OUT/multi_process_ref.nc" "$OUT/multi_process.nc" 0 || rc=1
fi
echo "gpu_check: results in $OUT (timings: $TIMINGS)" >&2
exit $rc
