"""App. D at the quick scale's sizes (sims/appD_quick.toml: N = 700/350/175, d = 75, n = 300), half
the steps: the qualitative result that Figs. 5 and 6 show must already hold in the data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_scale_orders_widths():
    from grokphase.analysis import appd
    from grokphase.sims.teacher_student import run_teacher_student

    spec = tomllib.loads((REPO / "sims" / "appD_quick.toml").read_text())
    spec["appd"].update(steps=1500, burn_in=750)          # the quick run's first half (same seeds)
    ds = appd.combine([run_teacher_student(sim, progress=False) for sim in appd.appd_sims(spec)])
    rows = appd.appd_summary(ds)["widths"]
    assert [r["N"] for r in rows] == [700, 350, 175]        # widest first
    wide, narrow = rows[0], rows[-1]
    # Fig. 5: the narrowest network ends with the lowest test loss, the widest with the highest
    # (same data sets at every width: paired), while all train losses have long converged
    test_final = [r["final_test_mse"] for r in rows]
    assert narrow["final_test_mse"] < wide["final_test_mse"], test_final
    for r in rows:
        assert r["t_half_train"] < 100                 # the train loss covers half its change within 100 steps
    # Fig. 6 / Fig. 4: only the narrow networks learn the cubic part and form droplets
    assert narrow["final_cubic_learned"] > wide["final_cubic_learned"] + 3 * np.hypot(
        narrow["final_cubic_learned_sem"], wide["final_cubic_learned_sem"])
    assert wide["final_cubic_learned"] < 0.02
    assert narrow["droplet_fraction"] > wide["droplet_fraction"]
    # the test loss keeps falling after the train loss has settled: its half-change time is later
    assert narrow["t_half_test"] > 3 * narrow["t_half_train"]
