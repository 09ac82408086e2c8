#!/usr/bin/env bash
# Wheel smoke test (issue 17, installable anywhere): build the wheel, install it into a fresh venv
# outside the checkout, and run the shipped experiment definitions from an empty folder:
#   grokphase reproduce fig1 --scale tiny      (theory/reproduce.toml, shipped)
#   grokphase run tiny/fig2                    (sims/tiny/fig2.toml, shipped, by name)
#   grokphase run no_such_experiment           (exit 2, one line listing the names)
# Exit status 0 only if every step does what it should; prints each step's time.
#
#   bash tests/wheel_smoke.sh            (PYTHON=... picks the interpreter; KEEP=1 keeps the temp folder)
#
# The build runs on a copy of the files git knows about (tracked and untracked, not ignored), so the
# checkout gets no build/ folder.  Dependencies come from PyPI (pip's cache makes a rerun fast), pinned
# to the versions of the checkout's .venv when it has one, so the smoke test runs what the tests ran.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/grokphase-wheel-smoke.XXXXXX")"
case "$WORK" in "$REPO"/*) echo "wheel_smoke: temp folder $WORK is inside the checkout" >&2; exit 1;; esac
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

T0=$SECONDS
STEP_T=$SECONDS
step() { echo "[wheel_smoke] $1: $((SECONDS - STEP_T)) s"; STEP_T=$SECONDS; }
fail() { echo "[wheel_smoke] FAIL: $*" >&2; exit 1; }

# 1. the wheel, built from a copy of the source tree (symlinks kept: grokphase/definitions -> sims/, theory/)
mkdir -p "$WORK/src" "$WORK/dist"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$REPO" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/grokphase-*.whl)"
"$PYTHON" - "$WHEEL" "$REPO" <<'EOF'
import pathlib, sys, zipfile
wheel, repo = sys.argv[1], pathlib.Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
want = {f"grokphase/definitions/{p.relative_to(repo).as_posix()}" for p in (repo / "sims").rglob("*.toml")}
want.add("grokphase/definitions/theory/reproduce.toml")
missing = sorted(want - names)
if missing:
    sys.exit(f"[wheel_smoke] FAIL: the wheel lacks {len(missing)} definition file(s): {', '.join(missing)}")
print(f"[wheel_smoke] {pathlib.Path(wheel).name}: {len(want)} definition files shipped")
EOF
step "build the wheel"

# 2. a fresh venv outside the checkout, the wheel and its dependencies
"$PYTHON" -m venv "$WORK/venv"
PIN=()
if [[ -x "$REPO/.venv/bin/python" ]]; then
    "$REPO/.venv/bin/python" -m pip freeze --exclude-editable 2>/dev/null | grep -v '^grokphase' > "$WORK/pins.txt" || true
    PIN=(-c "$WORK/pins.txt")
fi
"$WORK/venv/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check "${PIN[@]}" "$WHEEL"
step "install into a fresh venv"

# 3. run from an empty folder: no checkout around, only the shipped definitions
mkdir "$WORK/empty"
cd "$WORK/empty"
GP="$WORK/venv/bin/grokphase"
where="$("$WORK/venv/bin/python" -c 'import grokphase; print(grokphase.__file__)')"
[[ "$where" == "$WORK/venv/"* ]] || fail "grokphase imported from $where, not from the fresh venv"

"$GP" reproduce fig1 --scale tiny --out-dir figs --no-progress || fail "reproduce fig1 --scale tiny: exit $?"
for f in figs/fig1_tiny.png figs/fig1_tiny.pdf results/reproduce/tiny/summary_fig1.json; do
    [[ -s "$f" ]] || fail "reproduce fig1 wrote no $f"
done
step "grokphase reproduce fig1 --scale tiny"

"$GP" run tiny/fig2 --no-progress || fail "run tiny/fig2: exit $?"
[[ -s results/fig2/beta_1_32.nc ]] || fail "run tiny/fig2 wrote no results/fig2/beta_1_32.nc"
"$WORK/venv/bin/python" - <<'EOF'
import xarray as xr
from grokphase.io import load_dataset
ds = load_dataset("results/fig2/beta_1_32.nc")
assert ds.attrs.get("grokphase_kind"), "the result file has no grokphase provenance"
EOF
step "grokphase run tiny/fig2"

set +e
"$GP" run no_such_experiment > out.txt 2> err.txt
rc=$?
set -e
[[ $rc == 2 ]] || fail "run no_such_experiment: exit $rc, expected 2"
[[ "$(wc -l < err.txt)" == 1 ]] && grep -q "tiny/fig2" err.txt || fail "run no_such_experiment: stderr is not one line listing the names: $(cat err.txt)"
rm -f out.txt err.txt
step "unknown experiment name"

echo "[wheel_smoke] OK in $((SECONDS - T0)) s"
