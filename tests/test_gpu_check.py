"""benchmarks/gpu_check.sh --tiny runs on CPU and writes what it promises: one folder with every
step's result file, JSON summary, log and timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grokphase.io import load_dataset

REPO = Path(__file__).resolve().parents[1]


def dev_backend(out: Path) -> str:
    return json.loads((out / "device.json").read_text())["backend"]


@pytest.mark.slow
def test_gpu_check_tiny(tmp_path):
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHON": sys.executable, "GROKPHASE": str(bindir / "grokphase")}
    if not (bindir / "grokphase").exists():
        pytest.skip("grokphase console script not installed next to this Python")
    out = tmp_path / "gpu_check"
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=1200, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == ["fig2_beta1", "modular_P401", "bench_sims", "precision_runs", "precision",
                                          "multi_device_1", "multi_device_k", "multi_device_compare",
                                          "multi_process_ref", "multi_process", "multi_process_compare"]
    assert all(s["rc"] == 0 and s["seconds"] > 0 for s in steps)
    ts = load_dataset(out / "fig2_beta1.nc", "sims.teacher_student")
    summary = json.loads((out / "fig2_beta1.json").read_text())
    assert [p["s2"] for p in summary["points"]] == pytest.approx(ts["s2"].values.tolist())
    assert [p["cubic_learned"] for p in summary["points"]] == pytest.approx(ts["cubic_learned"].values.tolist())
    md = load_dataset(out / "modular_P401.nc", "sims.modular")
    assert int(md.attrs["param_P"]) == 7 and md.sizes["s2"] == 2
    recs = [json.loads(line) for line in (out / "bench_sims.jsonl").read_text().splitlines() if line.strip()]
    eng = [r for r in recs if r.get("implementation") == "engine"]
    assert eng and all(r["net_steps_per_s"]["median"] > 0 for r in eng)
    # several devices: sharded = one device, two processes = one process, bit for bit (the modular task)
    for name in ("multi_device_compare", "multi_process_compare"):
        cmp = json.loads((out / f"{name}.json").read_text())
        assert cmp["bit_identical"] and cmp["max_rel_diff"] == 0.0, cmp
    assert int(load_dataset(out / "multi_process.nc").attrs["jax_process_count"]) == 2
    # the precision step: the device's reduced setting and the emulations against float32 highest; on a CPU
    # "default" equals "highest" bit for bit and the emulations move the statistics
    bias = load_dataset(out / "precision_bias.nc")
    assert bias.attrs["reference"] == "float32_highest" and bias.sizes["run"] == 4
    diff = bias["diff"].sel(statistic="linear_learned")
    if dev_backend(out) == "cpu":
        assert float(diff.sel(run="float32_default")) == 0.0
        assert float(diff.sel(run="float32_bf16")) != 0.0
    dev = json.loads((out / "device.json").read_text())
    assert dev["backend"] in ("cpu", "gpu", "cuda", "rocm", "tpu") and dev["devices"]
