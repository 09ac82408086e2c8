#!/usr/bin/env bash
# One-GPU check (under 10 minutes on one large GPU): the paper-scale pieces this 2-core CPU cannot run.
#   bash benchmarks/gpu_check.sh [--tiny] [--out DIR]
#  1. fig2_beta1:   the Fig. 2 teacher-student simulation at beta = 1 (N = 700, d = 150, n = 3000, App. C's
#                   five sigma^2, 16 networks each) for a reduced step count, compared with the theory;
#  2. modular_P401: the modular Langevin sigma^2 sweep at the paper's Fig. 3 sizes (P = 401, N = 1000,
#                   sa2 = 0.002/N, gamma = 1e-4), cooling from the prior, with the exact Gibbs readout;
#  3. bench_sims:   the simulation benchmark (engine vs the hand-written step; --quick rounds).
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
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
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

if [[ $TINY == 1 ]]; then
  TS=(--beta 1/32 --datasets 2 --inits 1 --steps 200 --burn-in 50 --record-every 50 --lr 0.05 --s2 0.1,0.3)
  MOD=(--P 7 --N 16 --sa2 4.3e-3 --gamma 0.01 --steps 40 --burn-in 10 --record-every 10 --s2 0.1,0.25 --lr 0.05)
  BENCH=(--quick --pairs 1 --only 0.125 --M 32 --dtype float32 --impls engine,hand --stats-steps 0 --skip-devices
         --skip-memory)
else
  TS=(--beta 1 --datasets 8 --inits 2 --steps 4000 --burn-in 1000 --record-every 100 --lr 0.002)
  MOD=(--P 401 --N 1000 --sa2 2e-6 --gamma 1e-4 --steps 600 --burn-in 200 --record-every 50
       --s2 0.16,0.2,0.24,0.28 --lr 0.02)
  BENCH=(--quick --impls engine,hand --skip-devices --skip-memory)
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
echo "gpu_check: results in $OUT (timings: $TIMINGS)" >&2
exit $rc
