"""The figures, checked on the matplotlib objects they are made of (issue 17's figure defects).

Every figure is drawn from a small result (the modular theory is solved at a few points; the
teacher-student results, whose finite-d solve is slow, and the simulations are synthetic Datasets of
the saved layout) with the writer replaced by one that keeps the Figure, and then inspected:

* no text uses the parameter name "s2" or a literal "σ²_c" / "w_k" outside mathtext;
* every image / pcolormesh has a colorbar, except categorical phase maps named by a legend;
* legend labels are unique;
* every finite point of every data line lies inside its axes' limits (nothing clipped);
* the P -> infinity boundaries of the modular phase diagram are smooth closed-form curves that
  separate the stored ``limit_phase`` exactly, and every phase region carries its name;
* Fig. 2 (a, b) titles say what the finite-d theory looks like (one minimum or droplet minima), and
  the q window fits the simulated bins.
A figure written twice has the same bytes and names no software version.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.image import AxesImage

from grokphase.axes import Axis
from grokphase.plotting import base, reproduce, sims, theory
from grokphase.plotting.base import PHASE_NAMES
from grokphase.theory import modular as md
from grokphase.theory.results import build_modular_phase_diagram, build_modular_sweep

BAD_TEXT = (re.compile(r"\bs2\b"), re.compile("σ²_c"), re.compile(r"(?<!\$)\bw_k\b"))


@pytest.fixture
def figures(monkeypatch):
    """Replace the writer of every plotting module by one that keeps the Figure (no file, no close)."""
    kept = []

    def keep(fig, path, also_pdf=False):
        kept.append(fig)
        return [path]

    for module in (base, theory, sims, reproduce):
        monkeypatch.setattr(module, "_save", keep)
    return kept


def _texts(fig):
    for ax in fig.axes:
        yield ax.get_xlabel()
        yield ax.get_ylabel()
        yield ax.get_title()
        leg = ax.get_legend()
        if leg is not None:
            yield from (t.get_text() for t in leg.get_texts())
        yield from (t.get_text() for t in ax.texts)
    if fig._suptitle is not None:
        yield fig._suptitle.get_text()


def _outside_mathtext(text: str) -> str:
    return re.sub(r"\$[^$]*\$", "", text)


def check_figure(fig, *, categorical_ok: bool = False) -> None:
    """The checks every figure must pass (see the module docstring)."""
    for text in _texts(fig):
        plain = _outside_mathtext(text)
        for bad in BAD_TEXT:
            assert not bad.search(plain), f"label {text!r} has {bad.pattern!r} outside mathtext"
    with_bar = [m for ax in fig.axes for m in ax.images + ax.collections if getattr(m, "colorbar", None) is not None]
    colorbar_axes = {m.colorbar.ax for m in with_bar}
    scales = {(m.get_cmap().name, m.norm.vmin, m.norm.vmax) for m in with_bar}     # a colorbar serves its scale
    for ax in fig.axes:
        if ax in colorbar_axes:
            continue
        mappables = [m for m in ax.images + ax.collections if isinstance(m, (AxesImage, QuadMesh))]
        for m in mappables:
            shared = (m.get_cmap().name, m.norm.vmin, m.norm.vmax) in scales
            assert m.colorbar is not None or shared or (categorical_ok and ax.get_legend() is not None), \
                f"an image of axes {ax.get_title()!r} has no colorbar"
        leg = ax.get_legend()
        if leg is not None:
            labels = [t.get_text() for t in leg.get_texts()]
            assert len(labels) == len(set(labels)), f"legend labels repeat: {labels}"
        x0, x1 = sorted(ax.get_xlim())
        y0, y1 = sorted(ax.get_ylim())
        for line in ax.get_lines():
            if line.get_transform() != ax.transData:      # axvline / axhline: axes coordinates
                continue
            x = np.asarray(line.get_xdata(), float)
            y = np.asarray(line.get_ydata(), float)
            ok = np.isfinite(x) & np.isfinite(y)
            tol_x, tol_y = 1e-9 * (x1 - x0), 1e-9 * (y1 - y0)
            assert np.all((x[ok] >= x0 - tol_x) & (x[ok] <= x1 + tol_x)
                          & (y[ok] >= y0 - tol_y) & (y[ok] <= y1 + tol_y)), \
                f"line {line.get_label()!r} of axes {ax.get_title()!r} is clipped"


def test_the_checks_fail_on_the_old_defects(figures):
    """The checker itself: a bare s2 label, an image without colorbar, a repeated legend label and a
    clipped curve are each caught."""
    import matplotlib.pyplot as plt

    for defect in ("s2", "colorbar", "legend", "clipped"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="a")
        ax.plot([0, 1], [1, 0], label="a" if defect == "legend" else "b")
        ax.legend()
        if defect == "s2":
            ax.set_xlabel("s2")
        if defect == "colorbar":
            ax.imshow(np.eye(3))
        if defect == "clipped":
            ax.set_ylim(0, 0.5)
        with pytest.raises(AssertionError):
            check_figure(fig)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- modular

PAPER = md.ModularParams(N=1000.0, P=401.0, s2=0.2, sa2=2e-6, gamma=1e-4)     # Fig. 3 configuration


@pytest.fixture(scope="module")
def modular_sweep():
    return build_modular_sweep(PAPER, np.linspace(0.1, 0.3, 9))


@pytest.fixture(scope="module")
def modular_diagram():
    return build_modular_phase_diagram(PAPER, Axis("s2", np.linspace(0.1, 0.3, 12), False),
                                       Axis("N", np.linspace(500.0, 2000.0, 10), False), sa2_times_N=0.002)


def test_modular_sweep_shows_every_curve_whole_minimum(figures, modular_sweep):
    """Fig. 3 (a): the GMFL-II curve's minimum (far below 0) lies inside the panel."""
    theory.plot_modular_sweep(modular_sweep, "x.png")
    (fig,) = figures
    check_figure(fig)
    ax_a = fig.axes[0]
    assert np.nanmin(modular_sweep["reduced_action"].values) < -10        # the GMFL-II dip exists
    assert ax_a.get_ylim()[0] <= np.nanmin(modular_sweep["reduced_action"].values)
    phases = [t.get_text() for t in ax_a.get_legend().get_texts()]
    assert any("GMFL-II" in p for p in phases) and any("(GFL)" in p for p in phases)


def test_reproduce_fig3_shows_every_curve_and_names_its_lines(figures, modular_sweep):
    reproduce.plot_fig3(modular_sweep, None, "x.png")
    (fig,) = figures
    check_figure(fig)
    assert fig.axes[0].get_ylim()[0] <= np.nanmin(modular_sweep["reduced_action"].values)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("GFL | GMFL-I" in s for s in labels) and any("GMFL-I | GMFL-II" in s for s in labels)


def test_modular_limit_boundaries_separate_the_stored_phases(modular_diagram):
    """The closed-form boundaries evaluated on the diagram's own grid reproduce ``limit_phase`` (the
    P -> infinity solver's label, from a_pin and the pinned droplet fraction) at every point: gap1 > 0
    exactly in GFL, gap2 < 0 exactly in GMFL-II."""
    ds = modular_diagram
    _, _, gap1, gap2 = theory.modular_limit_boundaries(ds, x=ds["s2"].values, y=ds["N"].values)
    lim = ds["limit_phase"].values
    assert {0, 1, 2} <= set(np.unique(lim))
    np.testing.assert_array_equal(gap1 > 0, lim == 0)
    np.testing.assert_array_equal(gap2 < 0, lim == 2)
    # and the fine grid spans the diagram
    x, y, fine1, _ = theory.modular_limit_boundaries(ds, num=50)
    assert (x[0], x[-1], y[0], y[-1]) == pytest.approx((0.1, 0.3, 500.0, 2000.0))
    assert fine1.shape == (50, 50) and fine1.min() < 0 < fine1.max()


def test_modular_phase_diagram_regions_named_boundaries_smooth(figures, modular_diagram):
    theory.plot_phase_diagram(modular_diagram, "x.png")
    (fig,) = figures
    check_figure(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == r"$\sigma^2$"
    assert sorted(t.get_text() for t in ax.texts) == sorted(PHASE_NAMES)
    # each region's name sits in a cell of that phase
    ph = modular_diagram["phase"].values
    for t in ax.texts:
        px, py = t.get_position()
        i = int(np.argmin(np.abs(modular_diagram["N"].values - py)))
        j = int(np.argmin(np.abs(modular_diagram["s2"].values - px)))
        assert PHASE_NAMES[ph[i, j]] == t.get_text()
    # the red P -> infinity boundaries: many more vertices than grid rows and no axis-parallel steps
    red = [c for c in ax.collections if not isinstance(c, QuadMesh)
           and np.allclose(np.asarray(c.get_edgecolor())[:1, :3], [0.863, 0.078, 0.235], atol=0.01)]
    assert len(red) == 2
    for c in red:
        (path,) = [p for p in c.get_paths() if len(p.vertices) > 1]
        v = path.vertices
        assert len(v) > 5 * modular_diagram.sizes["N"]
        steps = np.diff(v, axis=0)
        assert np.all(np.abs(steps[:, 0]) > 0) and np.all(np.abs(steps[:, 1]) > 0)   # no stair treads/risers
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("GFL | GMFL-I" in s and "∞" in s for s in labels)
    assert any("GMFL-I | GMFL-II" in s and "∞" in s for s in labels)


# -------------------------------------------------------------------------------------- teacher-student


def _ts_diagram() -> xr.Dataset:
    """A synthetic teacher-student finite-d phase diagram: GMFL-II in a corner, a GMFL-I band, GFL."""
    s2 = np.linspace(0.05, 0.4, 24)
    N = np.linspace(100.0, 3000.0, 20)
    X, Y = np.meshgrid(s2, N)
    h = X * Y / 100.0                                        # the boundaries are hyperbolae s2 N = const
    phase = np.where(h > 1.5, 0, np.where(h > 0.3, 1, 2))
    ds = xr.Dataset({"cubic_learned": (("N", "s2"), np.exp(-h)), "degeneracy": (("N", "s2"), 1.8 / h),
                     "phase": (("N", "s2"), phase), "limit_phase": (("N", "s2"), (h < 1.8).astype(int)),
                     "boundary_x_exact": (("N",), 180.0 / N), "boundary_x_concentrated": (("N",), 150.0 / N)},
                    coords={"s2": s2, "N": N})
    ds.attrs.update(grokphase_kind="theory.teacher_student.phase_diagram", x_axis="s2", y_axis="N", x_log=0, y_log=0,
                    solver="finite-d", approximation="exact")
    return ds


def test_teacher_student_phase_diagram_names_both_crossovers(figures):
    """The second white dashed line of the old figure was the finite-d GMFL-I | GMFL-II crossover:
    both crossovers now have their own style and legend entry, and each region its name."""
    theory.plot_phase_diagram(_ts_diagram(), "x.png")
    (fig,) = figures
    check_figure(fig)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "finite d crossover: GFL | GMFL-I" in labels and "finite d crossover: GMFL-I | GMFL-II" in labels
    white = [c for c in ax.collections if not isinstance(c, QuadMesh)
             and np.allclose(np.asarray(c.get_edgecolor())[:1, :3], 1.0)]
    assert len(white) == 2
    assert sorted(t.get_text() for t in ax.texts) == sorted(PHASE_NAMES)
    assert ax.get_xlabel() == r"$\sigma^2$"


def _ts_sweep() -> xr.Dataset:
    s2 = np.linspace(0.05, 0.35, 13)
    betas = np.array([0.125, 1.0, 8.0])
    q = np.linspace(-1.4, 1.4, 141)
    dens = np.array([0.163, 0.293])
    lp = -(np.asarray(betas)[:, None, None] * 40.0 * q**2 * (1 + q**2))[..., :] * np.ones((3, 2, 1))
    ds = xr.Dataset({
        "cubic_learned": (("beta", "s2"), np.exp(-10 * s2)[None, :] * np.ones((3, 1))),
        "linear_learned": (("beta", "s2"), 1 - s2[None, :] * np.ones((3, 1))),
        "limit_cubic_learned": (("s2",), np.exp(-11 * s2)), "limit_linear_learned": (("s2",), 1 - 1.1 * s2),
        "gp_cubic_learned": (("s2",), 0 * s2), "gp_linear_learned": (("s2",), 0.5 - s2),
        "log_p": (("beta", "density_s2", "q"), lp),
        "limit_action": (("density_s2", "q"), q[None, :] ** 2 * np.ones((2, 1)))},
        coords={"s2": s2, "beta": betas, "q": q, "density_s2": dens})
    ds.attrs.update(grokphase_kind="theory.teacher_student.sweep", s2_c=0.2171, s2_c_concentrated=0.1787,
                    approximation="exact", param_d=150.0)
    return ds


def test_teacher_student_sweep_labels_and_no_clipping(figures):
    theory.plot_teacher_student_sweep(_ts_sweep(), "x.png")
    (fig,) = figures
    check_figure(fig)
    ax_c = fig.axes[2]
    labels = [t.get_text() for t in ax_c.get_legend().get_texts()]
    assert r"$\sigma^2_c$ = 0.2171 (exact)" in labels and r"$\sigma^2_c$ = 0.1787 (concentrated)" in labels


def _ts_compare(double_well: bool) -> xr.Dataset:
    """Two simulations (beta = 1/8, 1/2) at s2 on both sides of s2_c, their -log p(q) within |q| < 0.7
    and the finite-d theory's -log p on |q| <= 1.4: a single well, or (``double_well``) droplet minima."""
    q = np.linspace(-1.4, 1.4, 281)
    q_bin = 0.5 * (q[1:] + q[:-1])
    s2 = np.array([0.1, 0.2, 0.25, 0.3])
    th = 12 * q**2 - (40 * q**4 - 30 * q**6 if double_well else -10 * q**4)   # droplet minima at |q| = 0.84
    th = np.broadcast_to(th, (2, 4, q.size)).copy()
    sim = np.where(np.abs(q_bin) < 0.7, 12 * q_bin**2, np.nan)
    sim = np.broadcast_to(sim, (2, 4, q_bin.size)).copy()
    line = np.linspace(0.08, 0.32, 11)
    ds = xr.Dataset({
        "s2_reference": (("sim", "point"), np.stack([s2, s2])),
        "theory_minus_log_p": (("sim", "point", "q"), th),
        "sim_minus_log_p": (("sim", "point", "q_bin"), sim),
        "sim_minus_log_p_err": (("sim", "point", "q_bin"), 0.1 * np.ones_like(sim)),
        "theory_s2_line_reference": (("sim", "s2_line"), np.stack([line, line])),
        "theory_cubic_learned_line": (("sim", "s2_line"), np.stack([np.exp(-10 * line)] * 2)),
        "theory_linear_learned_line": (("sim", "s2_line"), np.stack([1 - line] * 2)),
        **{f"{v}{sfx}": (("sim", "point"), np.full((2, 4), 0.01 if sfx else 0.2))
           for v in ("cubic_learned", "linear_learned") for sfx in ("", "_sem")}},
        coords={"beta": (("sim",), [0.125, 0.5]), "q": q, "q_bin": q_bin})
    ds.attrs.update(grokphase_kind="analysis.teacher_student.compare", limit_s2_c=0.2171, approximation="exact",
                    approximations="exact")
    return ds


@pytest.mark.parametrize("double_well", [False, True])
def test_fig2_titles_follow_the_theory_and_the_window_fits_the_data(figures, double_well):
    sims.plot_teacher_student_compare(_ts_compare(double_well), "x.png")
    (fig,) = figures
    check_figure(fig)
    for ax in fig.axes[:2]:
        title = ax.get_title()
        assert "droplet side" not in title
        assert ("droplet minima" in title) == double_well and ("one minimum" in title) == (not double_well)
        lo, hi = ax.get_xlim()
        assert -1.0 < lo < -0.7 and 0.7 < hi < 1.0                  # the data reach |q| = 0.7
    assert r"< $\sigma^2_c$" in fig.axes[0].get_title() and r"> $\sigma^2_c$" in fig.axes[1].get_title()


def test_count_minima():
    q = np.linspace(-1, 1, 201)
    assert sims.count_minima(q**2) == 1
    assert sims.count_minima((q**2 - 0.5) ** 2) == 2
    assert sims.count_minima(q**2 * (q**2 - 0.5) ** 2) == 3
    assert sims.count_minima(q) == 0


# ------------------------------------------------------------------------------------- modular simulation


def _modular_sim() -> xr.Dataset:
    T, N, F, B = 5, 12, 6, 16
    rng = np.random.default_rng(0)
    t = np.arange(1, T + 1) * 10.0
    acc = np.linspace(0.0, 1.0, T)[None, None, :]
    spec = rng.random((1, 1, T, N, F))
    ds = xr.Dataset({
        "train_acc_trajectory": (("s2", "seed", "time"), acc ** 0.3), "test_acc_trajectory": (("s2", "seed", "time"), acc),
        "ipr_trajectory": (("s2", "seed", "time"), 0.1 + acc), "spectrum_u": (("s2", "seed", "time", "neuron", "k"), spec),
        "frequency": (("s2", "seed", "time", "neuron"), rng.integers(1, F, (1, 1, T, N))),
        "phase_hist": (("s2", "seed", "phase_bin"), rng.random((1, 1, B)))},
        coords={"time": t, "s2": [0.0], "phase_bin": np.linspace(-np.pi, np.pi, B)})
    ds.attrs.update(grokphase_kind="sims.modular", param_P=11, param_N=N, param_alpha=0.3, param_optimizer="adamw",
                    param_parametrisation="gromov")
    return ds


def test_modular_sim_colorbars_and_unambiguous_legend(figures):
    sims.plot_modular_sim(_modular_sim(), "x.png")
    (fig,) = figures
    check_figure(fig)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 and all(im.colorbar is not None for im in images)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:2] == ["train accuracy", "test accuracy"]
    handles = fig.axes[0].get_legend().legend_handles
    assert [h.get_linestyle() for h in handles[:2]] == [":", "-"]


# ---------------------------------------------------------------------------------------------- files


def test_figures_are_byte_reproducible_and_name_no_version(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    out = []
    for name in ("a.png", "b.png"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        base._save(fig, tmp_path / name, also_pdf=True)
        out.append((tmp_path / name).read_bytes())
    assert out[0] == out[1]
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert matplotlib.__version__.encode() not in out[0]
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()


# ------------------------------------------------------------------------- reproduce and |w_perp|^2 figures


def _pd_ts() -> xr.Dataset:
    s2 = np.linspace(0.05, 0.4, 15)
    beta = np.geomspace(1 / 16, 8, 9)
    X, B = np.meshgrid(s2, beta)
    ds = xr.Dataset({"exact_cubic_learned": (("beta", "s2"), np.exp(-10 * X)),
                     "exact_phase": (("beta", "s2"), (X < 0.15 + 0.01 * np.log(B)).astype(int)),
                     "concentrated_phase": (("beta", "s2"), (X < 0.12 + 0.01 * np.log(B)).astype(int)),
                     "sim_s2": (("sim_point",), [0.1, 0.3]), "sim_beta": (("sim_point",), [0.125, 0.5]),
                     "sim_cubic": (("sim_point",), [0.2, 0.01])}, coords={"s2": s2, "beta": beta})
    ds.attrs.update(grokphase_kind="reproduce.phase_diagram_ts", limit_s2_c_exact=0.2171,
                    limit_s2_c_concentrated=0.1787)
    return ds


def _pd_modular() -> xr.Dataset:
    s2 = np.linspace(0.05, 0.35, 16)
    P = np.arange(5.0, 33.0, 2.0)
    X, _ = np.meshgrid(s2, P)
    ds = xr.Dataset({"target_component": (("P", "s2"), np.clip(0.8 - 3 * X, 0, 1)),
                     "droplet_fraction": (("P", "s2"), np.clip(0.3 - X, 0, 1)),
                     "sim_s2": (("sim_point",), [0.07, 0.25]), "sim_P": (("sim_point",), [23.0, 23.0]),
                     "sim_target": (("sim_point",), [0.6, 0.01]), "sim_droplet": (("sim_point",), [0.1, 0.0]),
                     "sim_branch": (("sim_point",), ["cooling", "heating"])}, coords={"s2": s2, "P": P})
    ds.attrs.update(grokphase_kind="reproduce.phase_diagram_modular", gmfl1_s2=0.239, gmfl2_s2=0.1, convention="network")
    return ds


def test_reproduce_phase_diagrams_name_their_regions(figures):
    reproduce.plot_pd_ts(_pd_ts(), "x.png")
    reproduce.plot_pd_modular(_pd_modular(), "x.png")
    fig_ts, fig_mod = figures
    for fig in figures:
        check_figure(fig)
    assert sorted(t.get_text() for t in fig_ts.axes[0].texts) == ["GFL", "GMFL-I"]
    for ax in fig_mod.axes[:2]:                                   # the two maps (then their colorbars)
        assert sorted(t.get_text() for t in ax.texts) == sorted(PHASE_NAMES)
        gmfl2 = [t for t in ax.texts if t.get_text() == "GMFL-II"][0]
        assert gmfl2.get_position()[0] < 0.1 < [t for t in ax.texts if t.get_text() == "GMFL-I"][0].get_position()[0]


def _perp_norm() -> xr.Dataset:
    q = np.linspace(-1.2, 1.2, 25)
    t = np.linspace(0.01, 1.2, 20)
    Q, T = np.meshgrid(q, t, indexing="ij")
    lp = -(Q**2 / 0.1 + (T - 0.5) ** 2 / 0.05)
    two = lambda v: np.stack([v, v])                                            # noqa: E731
    ds = xr.Dataset({"sw2": (("sim",), [0.5, 0.5]), "s2": (("sim", "point"), [[0.1, 0.2], [0.1, np.nan]]),
                     "sim_log_p_qt": (("sim", "point", "qt_q", "t"), two(two(lp + 3.0))),
                     "exact_log_p_qt": (("sim", "point", "qt_q", "t"), two(two(lp + 2.0))),
                     **{k: (("sim", "point"), np.full((2, 2), v)) for k, v in (
                         ("limit_exact_q_star", 0.7), ("limit_exact_t_star", 0.3), ("limit_concentrated_q_star", 0.8),
                         ("droplet_threshold", 0.4), ("sim_t_droplet", 0.3), ("sim_t_droplet_sem", 0.01),
                         ("exact_t_droplet", 0.31), ("sim_t_bulk", 0.5), ("sim_t_bulk_sem", 0.01), ("exact_t_bulk", 0.5))},
                     "beta": (("sim",), [0.125, 0.5]), "n": (("sim",), [375, 1500])},
                    coords={"qt_q": q, "t": t})
    return ds


def test_perp_norm_maps_share_one_scale_with_colorbars(figures, monkeypatch):
    from grokphase.plotting import perp_norm

    monkeypatch.setattr(perp_norm, "_save", lambda fig, path, also_pdf=False: figures.append(fig) or [path])
    perp_norm.plot_perp_norm(_perp_norm(), "x.png")
    (fig,) = figures
    check_figure(fig)
    meshes = [m for ax in fig.axes if ax.get_title() for m in ax.collections if isinstance(m, QuadMesh)]  # not colorbars
    assert len(meshes) == 3 and all(m.norm.vmin == -10.0 and m.norm.vmax == 0.0 for m in meshes)
    assert all(np.nanmax(m.get_array()) == 0.0 for m in meshes)
