"""`grokphase reproduce`: end to end at the tiny scale, checked against independent computations,
and the step cache (a second call computes nothing; a changed parameter only what depends on it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

from grokphase.experiments import reproduce as rp
from grokphase.errors import ParameterError
from grokphase.io import load_dataset

REPO = Path(__file__).resolve().parents[1]
GFL, GMFL_I, GMFL_II = 0, 1, 2


def _run(names, tmp_path, defs=None, **kw):
    return rp.reproduce(names, scale="tiny", out_dir=tmp_path / "fig", cache_dir=tmp_path / "cache",
                        defs=defs or REPO, progress=False, **kw)


@pytest.fixture(scope="module")
def fig1_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fig1")
    before = dict(rp.COMPUTED)
    out = _run(["fig1"], tmp)
    return tmp, out, before


# ------------------------------------------------------------------------------------------------
# independent phase labels (THEORY.md §3 and §4 closed forms, re-derived here with NumPy/SciPy)
# ------------------------------------------------------------------------------------------------


def ts_limit_phase(s2, N, n=3000.0, d=150.0, sw2=0.5, eps=-0.3):
    """Concentrated (paper's) scaling limit: GFL b from its self-consistency, then GMFL-I iff the
    GFL action Shat(q; b, c = eps) has a minimum below Shat(0) = 0 at q != 0."""
    sa2 = 8.0 / N
    u = n**2 * sa2 / (s2**2 * d * N)
    r = s2 * N / n

    def kappa(b):
        return 1.0 / (2 * sw2) - (2 * u / np.pi) * b * b / (1 + 2 * sw2)

    b_max = min(1.0, np.sqrt((1 + 2 * sw2) * np.pi / (4 * u * sw2)))

    def f(b):
        return b * (1 + u * r * 2 / (np.pi * (1 + 2 * sw2) * kappa(b))) - 1.0

    b = brentq(f, 1e-12, b_max * (1 - 1e-12))
    q = np.linspace(1e-3, 3.0, 30001)
    q2 = q * q
    x = q2 / (1 + 2 * (sw2 + q2))
    S = q2 / (2 * sw2) - (2 * u / np.pi) * x * (b - 2 * eps * x) ** 2
    return (GMFL_I if S.min() < 0 else GFL), float(S.min())


def modular_limit_phase(s2, N, P=401.0, gamma=1e-4):
    """P -> infinity phases of THEORY.md §4 (paper normalisation), sa2 = 0.002/N."""
    sa2 = 0.002 / N
    u = 2 * sa2 * P**2 / (N * s2**2)
    if u <= 2 * np.sqrt(gamma / 3):
        return GFL
    a = -np.sqrt(2 * np.sqrt(gamma / 3) / u)
    p = s2 * gamma * (1 / abs(a) - 1) / (3 * sa2)
    return GMFL_II if p >= 1 else GMFL_I


def test_fig1_phase_labels_match_closed_forms(fig1_run):
    tmp, out, _ = fig1_run
    ds = load_dataset(out["fig1"]["data"], "reproduce.fig1")
    # modular: every grid point against the closed forms
    s2m, Nm = ds["modular_s2"].values, ds["modular_N"].values
    want = np.array([[modular_limit_phase(s, N) for s in s2m] for N in Nm])
    assert np.array_equal(ds["modular_phase"].values, want)
    assert {GFL, GMFL_I, GMFL_II} <= set(np.unique(want))
    # teacher-student (concentrated approximation, the paper's): every point not within 1e-6 of the boundary
    assert ds.attrs["ts_approximation"] == "concentrated"
    s2t, Nt = ds["ts_s2"].values, ds["ts_N"].values
    mism = 0
    for i, N in enumerate(Nt):
        for j, s in enumerate(s2t):
            label, smin = ts_limit_phase(s, N)
            if abs(smin) > 1e-6:
                mism += int(ds["ts_phase"].values[i, j] != label)
    assert mism == 0
    assert {GFL, GMFL_I} <= set(np.unique(ds["ts_phase"].values))
    # each inset sits in the region it is labelled with, and its action is that phase's shape:
    # GFL: q = 0 the unique minimum (Shat > 0 elsewhere); GMFL-I: degenerate minima (min Shat ~ 0 at q != 0)
    for k in range(ds.sizes["ts_inset"]):
        s, N = float(ds["ts_inset_x"].values[k]), float(ds["ts_inset_y"].values[k])
        code = int(ds["ts_inset_phase"].values[k])
        assert ts_limit_phase(s, N)[0] == code
        S, q = ds["ts_inset_action"].values[k], ds["q"].values
        away = np.abs(q) > 0.2
        if code == GFL:
            assert S[away].min() > 0
        else:
            assert abs(S[away].min()) < 2e-3
    for k in range(ds.sizes["modular_inset"]):
        s, N = float(ds["modular_inset_x"].values[k]), float(ds["modular_inset_y"].values[k])
        assert modular_limit_phase(s, N) == int(ds["modular_inset_phase"].values[k])
    # the JSON summary is the data's
    counts = out["fig1"]["modular"]["phase_counts"]
    assert counts == {lab: int((want == c).sum()) for c, lab in enumerate(("GFL", "GMFL-I", "GMFL-II"))}
    for f in out["fig1"]["figures"]:
        assert Path(f).stat().st_size > 10_000
    assert {Path(f).suffix for f in out["fig1"]["figures"]} == {".png", ".pdf"}


def _count_calls(monkeypatch, targets):
    counts = {}
    for mod, name in targets:
        orig = getattr(mod, name)
        key = f"{mod.__name__}.{name}"
        counts[key] = 0

        def wrapped(*a, _orig=orig, _key=key, **k):
            counts[_key] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(mod, name, wrapped)
    return counts


def test_second_call_recomputes_nothing_and_changes_recompute_only_dependents(fig1_run, monkeypatch, tmp_path):
    from grokphase.theory import modular as md
    from grokphase.theory import teacher_student as ts

    tmp, out, before = fig1_run
    assert rp.COMPUTED["fig1"] - before.get("fig1", 0) == 1
    calls = _count_calls(monkeypatch, [(ts, "solve_limit"), (ts, "solve_finite_d"), (ts, "solve_transition"),
                                       (md, "solve"), (md, "solve_limit")])
    again = _run(["fig1"], tmp)
    assert sum(calls.values()) == 0, calls
    assert again["fig1"]["data"] == out["fig1"]["data"]
    # change one modular parameter in a copy of the definitions: only the modular diagram (and the
    # figure data that depends on it) is recomputed; the teacher-student solve is reused
    defs = tmp_path / "defs"
    (defs / "theory").mkdir(parents=True)
    shutil.copytree(REPO / "sims", defs / "sims")
    text = (REPO / rp.DEFINITIONS).read_text()
    assert 'modular_x = "s2:0.05:0.35:12"' in text
    (defs / rp.DEFINITIONS).write_text(text.replace('modular_x = "s2:0.05:0.35:12"', 'modular_x = "s2:0.05:0.35:11"'))
    n0 = dict(rp.COMPUTED)
    changed = _run(["fig1"], tmp, defs=defs)
    assert calls["grokphase.theory.teacher_student.solve_limit"] == 0
    assert calls["grokphase.theory.modular.solve"] >= 1
    assert rp.COMPUTED["theory_modular_phase_diagram"] - n0.get("theory_modular_phase_diagram", 0) == 1
    assert rp.COMPUTED["theory_ts_phase_diagram"] == n0.get("theory_ts_phase_diagram", 0)
    assert load_dataset(changed["fig1"]["data"]).sizes["modular_s2"] == 11


def test_corrupt_cache_file_is_recomputed(fig1_run):
    tmp, out, _ = fig1_run
    path = Path(out["fig1"]["data"])
    path.write_bytes(path.read_bytes()[:200])          # a partial file
    n0 = rp.COMPUTED["fig1"]
    again = _run(["fig1"], tmp)
    assert rp.COMPUTED["fig1"] == n0 + 1
    assert load_dataset(again["fig1"]["data"], "reproduce.fig1").sizes["modular_s2"] == 12


def test_step_key_depends_on_config_and_inputs():
    a = rp.step_key("k", {"x": 1.0, "y": [1, 2]})
    assert a == rp.step_key("k", {"y": [1, 2], "x": 1.0})           # order-free
    assert a != rp.step_key("k", {"x": 1.0 + 1e-12, "y": [1, 2]})
    assert a != rp.step_key("k2", {"x": 1.0, "y": [1, 2]})
    assert a != rp.step_key("k", {"x": 1.0, "y": [1, 2]}, deps=["abc"])


def test_bad_requests_name_the_problem(tmp_path):
    with pytest.raises(ParameterError, match="unknown figure 'fig9'"):
        _run(["fig9"], tmp_path)
    with pytest.raises(ParameterError, match="unknown scale"):
        rp.reproduce(["fig1"], scale="huge", defs=REPO)
    with pytest.raises(ParameterError, match="no theory/reproduce.toml"):
        _run(["fig1"], tmp_path, defs=tmp_path)
    defs = tmp_path / "defs"
    (defs / "theory").mkdir(parents=True)
    (defs / "sims").mkdir()
    (defs / rp.DEFINITIONS).write_text('[fig2]\n[fig2.tiny]\nsims = "sims/missing.toml"\n')
    with pytest.raises(ParameterError, match="missing.toml does not exist"):
        _run(["fig2"], tmp_path, defs=defs)
    (defs / rp.DEFINITIONS).write_text('[fig2]\n[fig2.tiny]\nsims = "sims/bad.toml"\n')
    (defs / "sims" / "bad.toml").write_text('model = "teacher-student"\n[[sim]]\nbeta = 0.03125\nsteps = 10\nwidth = 3\n')
    with pytest.raises(ParameterError, match="unknown option"):
        _run(["fig2"], tmp_path, defs=defs)
    (defs / "sims" / "bad.toml").write_text('model = "teacher-student"\n[[sim]]\nsteps = 10.5\n')
    with pytest.raises(ParameterError, match="steps must be an integer"):
        _run(["fig2"], tmp_path, defs=defs)
    # reproduce.toml itself: a misspelled key or a non-number where a number belongs is an error
    (defs / rp.DEFINITIONS).write_text('[fig3]\nsa2_times_n = 0.002\n')
    with pytest.raises(ParameterError, match="unknown key.*sa2_times_n.*fig3"):
        _run(["fig3"], tmp_path, defs=defs)
    (defs / rp.DEFINITIONS).write_text('[fig3]\nN = "wide"\n')
    with pytest.raises(ParameterError, match="N must be a finite number"):
        _run(["fig3"], tmp_path, defs=defs)


def test_every_definition_table_is_valid():
    """Every figure table of the repository's reproduce.toml, at every scale, uses known keys, and every
    experiment file (those it names and all of sims/) passes the schema of its model."""
    import tomllib

    from grokphase.experiments.runner import check_file

    defs = tomllib.loads((REPO / rp.DEFINITIONS).read_text())
    files = set()
    for name in rp.cache.FIGURE_KEYS:
        for scale in rp.SCALES:
            cfg = rp.figure_config(defs, name, scale)
            if cfg.get("sims"):
                files.add(cfg["sims"])
    assert files
    for rel in sorted(files | {str(p.relative_to(REPO)) for p in (REPO / "sims").rglob("*.toml")}):
        spec = tomllib.loads((REPO / rel).read_text())
        if "appd" in spec:              # App. D files: one run per width, read by analysis.appd.appd_sims
            continue
        model, sims, _ = check_file(rel, spec)
        assert sims and model.name in ("teacher-student", "modular"), rel


@pytest.mark.slow
def test_modular_figures_share_one_simulation(tmp_path, monkeypatch):
    """fig3 and phase-diagram-modular use the same runs: one simulation, then cache hits; the data
    are the simulation's own numbers placed on the theory."""
    import grokphase.experiments.models.modular as mm      # where the experiments layer calls the engine

    calls = _count_calls(monkeypatch, [(mm, "run_modular")])
    out = _run(["fig3", "phase-diagram-modular"], tmp_path)
    assert calls["grokphase.experiments.models.modular.run_modular"] == 1
    out2 = _run(["fig3", "phase-diagram-modular"], tmp_path)
    assert calls["grokphase.experiments.models.modular.run_modular"] == 1
    assert out2["fig3"]["gmfl1_s2"] == out["fig3"]["gmfl1_s2"]
    # fig3: the P -> infinity transitions of the paper's Fig. 3 configuration in closed form
    sa2, P, N, g = 0.002 / 1000, 401.0, 1000.0, 1e-4
    s1 = np.sqrt(2 * sa2 * P**2 / N / (2 * np.sqrt(g / 3)))
    assert out["fig3"]["gmfl1_s2"] == pytest.approx(s1, rel=1e-10)
    assert out["fig3"]["gmfl2_s2"] == pytest.approx(s1 - 3 * sa2 / g, rel=1e-10)
    pd = load_dataset(out["phase-diagram-modular"]["data"], "reproduce.phase_diagram_modular")
    sim = [s for s in (load_dataset(p) for p in (tmp_path / "cache").glob("sim_modular-*.nc"))]
    assert len(sim) == 1
    sd = sim[0]
    for b in ("cooling", "heating"):
        sel = pd["sim_branch"].values.astype(str) == b
        src = "droplet_fraction_mean" if "droplet_fraction_mean" in sd else "droplet_fraction"
        np.testing.assert_array_equal(pd["sim_droplet"].values[sel], sd[src].sel(branch=b).values)
    assert pd["P"].values.tolist() == [7.0, 11.0, 23.0]


@pytest.mark.slow
def test_fig2_and_cli_json(tmp_path):
    """The CLI end to end: fig2 at the tiny scale, JSON on stdout with the comparison's points, the
    figure written; a second call is answered from the cache."""
    cmd = [sys.executable, "-m", "grokphase.cli", "reproduce", "fig2", "--scale", "tiny", "--json", "--no-progress",
           "--out-dir", str(tmp_path / "fig"), "--cache-dir", str(tmp_path / "cache"), "--defs", str(REPO)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)["fig2"]
    assert len(out["points"]) == 2 and {round(p["s2"], 6) for p in out["points"]} == {0.1, 0.3}
    sim = load_dataset(next((tmp_path / "cache").glob("sim_ts-*.nc")), "sims.teacher_student")
    got = sorted(p["sim_cubic_learned"] for p in out["points"])
    assert got == pytest.approx(sorted(sim["cubic_learned"].values.tolist()), rel=1e-12)
    # both theories at the simulated sizes: the primary (exact) in theory_*, the paper's next to it
    from grokphase.theory import teacher_student as ts

    params = ts.TeacherStudentParams(N=float(sim.attrs["N"]), n=float(sim.attrs["n"]), d=float(sim.attrs["d"]),
                                     sa2=float(sim.attrs["sa2"]), s2=sim["s2"].values, sw2=0.5, eps=-0.3)
    by_s2 = {round(p["s2"], 6): p for p in out["points"]}
    for ap, key in (("exact", "theory_cubic_learned"), ("concentrated", "theory_concentrated_cubic_learned")):
        ref = np.asarray(ts.solve_finite_d(params, approximation=ap).cubic_learned)
        got = [by_s2[round(float(v), 6)][key] for v in sim["s2"].values]
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert out["approximation"] == "exact" and out["limit_s2_c_concentrated"] < out["limit_s2_c_exact"]
    assert (tmp_path / "fig" / "fig2_tiny.png").stat().st_size > 10_000
    res2 = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res2.returncode == 0 and "computed" not in res2.stderr and "cached" in res2.stderr
    bad = subprocess.run([sys.executable, "-m", "grokphase.cli", "reproduce", "figX"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.slow
def test_sample_complexity_gp_vs_network(tmp_path):
    """The GP needs n = s2/lambda3 (exact Rayleigh quotient) for half the cubic part; the finite
    network's GFL -> GMFL-I onset along n comes orders of magnitude earlier; the simulated points
    carry both theories at exactly their sizes."""
    from grokphase.theory import gp
    from grokphase.theory import teacher_student as ts

    out = _run(["sample-complexity"], tmp_path)["sample-complexity"]
    lam = gp.rayleigh_quotients(150.0, 8.0 / 700.0, 0.5)
    assert out["paper_gp_n_half_cubic"] == pytest.approx(0.1 / float(lam.lambda3), rel=1e-9)
    for ap in ("exact", "concentrated"):
        assert out[f"paper_limit_{ap}_n_onset"] < out["paper_gp_n_half_cubic"] / 100
    # the onset is where the scaling-limit phase changes along n
    n_c = out["paper_limit_concentrated_n_onset"]
    phases = ts.solve_limit(ts.TeacherStudentParams(n=np.array([n_c * (1 - 1e-4), n_c * (1 + 1e-4)]), s2=0.1),
                            approximation="concentrated").phase
    assert np.asarray(phases).tolist() == [0, 1]
    ds = load_dataset(out["data"], "reproduce.sample_complexity")
    sims = {float(s.attrs["n"]): s for s in (load_dataset(f) for f in (tmp_path / "cache").glob("sim_ts-*.nc"))}
    assert ds.sizes["sim_point"] == len(sims) == 2
    for j in range(ds.sizes["sim_point"]):
        sd = sims[float(ds["point_n"].values[j])]
        at = ts.TeacherStudentParams(N=float(sd.attrs["N"]), n=float(sd.attrs["n"]), d=float(sd.attrs["d"]), s2=0.1,
                                     sa2=float(sd.attrs["sa2"]))
        ref = float(ts.solve_finite_d(at, approximation="concentrated").cubic_learned)
        assert float(ds["point_theory_concentrated_cubic"].values[j]) == pytest.approx(ref, rel=1e-8)
        assert float(ds["point_cubic"].values[j]) == float(sd["cubic_learned"].values[0])
