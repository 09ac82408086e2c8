"""Figures drawn from saved result Datasets (never recomputing theory or simulations).

Every ``plot_*`` function takes a Dataset (as produced by :mod:`grokphase.theory.results` or loaded
with :func:`grokphase.io.load_dataset`) and a path; ``.png`` and ``.pdf`` are both supported, and a
PNG is also written as PDF when ``also_pdf=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from grokphase.errors import ResultFileError  # noqa: E402

_BETA_CMAP = plt.get_cmap("viridis")


def _beta_label(beta: float) -> str:
    if beta < 1 and abs(1 / beta - round(1 / beta)) < 1e-9:
        return f"β = 1/{int(round(1 / beta))}"
    return f"β = {beta:g}"


def _save(fig, path, also_pdf=False) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path]
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    os.replace(tmp, path)
    if also_pdf and path.suffix.lower() != ".pdf":
        pdf = path.with_suffix(".pdf")
        fig.savefig(pdf, bbox_inches="tight")
        out.append(pdf)
    plt.close(fig)
    return out


def _colors(n):
    return [_BETA_CMAP(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


def plot_teacher_student_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Theory half of the paper's Fig. 2: (a, b) -log p(q) at a sigma^2 before and after the
    transition, one line per beta; (c) cubic learned fraction vs sigma^2 per beta, the scaling limit
    and the GP; (d) the same for the linear part."""
    if ds.attrs.get("grokphase_kind") != "theory.teacher_student.sweep":
        raise ResultFileError("plot_teacher_student_sweep needs a theory.teacher_student.sweep dataset")
    has_density = "log_p" in ds
    ncols = 4 if has_density else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6))
    betas = ds["beta"].values if "beta" in ds.dims else np.array([])
    colors = _colors(len(betas))
    s2 = ds["s2"].values
    s2_c = float(ds.attrs.get("s2_c", np.nan))
    if has_density:
        for j, ds2 in enumerate(ds["density_s2"].values):
            ax = axes[j]
            q = ds["q"].values
            for i, beta in enumerate(betas):
                lp = ds["log_p"].sel(beta=beta, density_s2=ds2).values
                ax.plot(q, -(lp - lp.max()), color=colors[i], lw=1.4, label=_beta_label(beta))
            if "limit_action" in ds:
                # scaling limit: -log p / d -> Shat, shown rescaled to the beta = 1 dimension
                d1 = float(np.asarray(ds.attrs.get("param_d", 150.0)))
                sh = ds["limit_action"].sel(density_s2=ds2).values
                ax.plot(q, d1 * (sh - sh.min()), color="k", lw=1.0, ls="--", label="limit (d·Ŝ, β = 1 d)")
            side = "GMFL-I" if np.isfinite(s2_c) and ds2 < s2_c else "GFL"
            ax.set_title(f"({'ab'[j]}) σ² = {ds2:g} ({side} in the limit)")
            ax.set_xlabel("q = w·w*")
            ax.set_ylabel("−log p(q) + const")
            ax.set_ylim(-1, 60)
            if j == 0:
                ax.legend(fontsize=7)
    ax_c = axes[-2]
    ax_l = axes[-1]
    for i, beta in enumerate(betas):
        if "cubic_learned" in ds:
            ax_c.plot(s2, ds["cubic_learned"].sel(beta=beta), color=colors[i], lw=1.4, label=_beta_label(beta))
            ax_l.plot(s2, ds["linear_learned"].sel(beta=beta), color=colors[i], lw=1.4)
    if "limit_cubic_learned" in ds:
        ax_c.plot(s2, ds["limit_cubic_learned"], color="k", lw=1.8, label="scaling limit")
        ax_l.plot(s2, ds["limit_linear_learned"], color="k", lw=1.8)
    if "gp_cubic_learned" in ds:
        ax_c.plot(s2, ds["gp_cubic_learned"], color="gray", ls=":", lw=1.6, label="GP (EK)")
        ax_l.plot(s2, ds["gp_linear_learned"], color="gray", ls=":", lw=1.6)
    approx = ds.attrs.get("approximation")
    other = {"exact": "concentrated", "concentrated": "exact"}.get(approx)
    s2_other = float(ds.attrs.get(f"s2_c_{other}", np.nan)) if other else np.nan
    for ax in (ax_c, ax_l):
        if np.isfinite(s2_c):
            ax.axvline(s2_c, color="crimson", lw=0.8, ls="--")
        if np.isfinite(s2_other):
            ax.axvline(s2_other, color="0.45", lw=0.8, ls=":")
        ax.set_xlabel("σ²  (β = 1 units)")
    ax_c.set_ylabel("cubic learned fraction 1 − c/ε")
    ax_l.set_ylabel("linear learned fraction 1 − b")
    ax_c.set_title(f"({'c' if has_density else 'a'}) cubic; σ²_c = {s2_c:.4f}"
                   + (f" ({approx}; dotted: {other} {s2_other:.4f})" if np.isfinite(s2_other) else ""),
                   fontsize=8 if np.isfinite(s2_other) else None)
    ax_l.set_title(f"({'d' if has_density else 'b'}) linear")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_phase_diagram(ds: xr.Dataset, path, also_pdf: bool = False, field: str | None = None) -> list[Path]:
    """Colour: ``field`` (default: cubic learned fraction, or the target component 1 + a for the
    modular model); red: the limit transition(s) (teacher-student: Lambda = 1; modular: the
    GMFL-I and GMFL-II boundaries); dashed white: the finite-size crossover of the phase label."""
    field = field or ("cubic_learned" if "cubic_learned" in ds else "target_component")
    if not str(ds.attrs.get("grokphase_kind", "")).endswith("phase_diagram"):
        raise ResultFileError("plot_phase_diagram needs a phase_diagram dataset")
    xname, yname = ds.attrs["x_axis"], ds.attrs["y_axis"]
    x, y = ds[xname].values, ds[yname].values
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    mesh = ax.pcolormesh(x, y, ds[field].values, shading="auto", cmap="viridis", vmin=0.0,
                         vmax=max(1e-12, float(np.nanmax(ds[field].values))))
    fig.colorbar(mesh, ax=ax, label=field.replace("_", " "))
    if "degeneracy" not in ds and "limit_phase" in ds:
        lp = ds["limit_phase"].values.astype(float)
        levels = [lv for lv in (0.5, 1.5) if lp.min() < lv < lp.max()]
        if levels:
            ax.contour(x, y, lp, levels=levels, colors="crimson", linewidths=1.8)
            ax.plot([], [], color="crimson", lw=1.8, label="P → ∞ boundaries (GFL | GMFL-I | GMFL-II)")
    approx = ds.attrs.get("approximation")  # teacher-student files written before the option: concentrated
    if "degeneracy" in ds and np.nanmin(ds["degeneracy"].values) < 1 < np.nanmax(ds["degeneracy"].values):
        ax.contour(x, y, ds["degeneracy"].values, levels=[1.0], colors="crimson", linewidths=1.8)
        ax.plot([], [], color="crimson", lw=1.8,
                label="scaling-limit transition (Λ = 1" + (f", {approx})" if approx else ")"))
    both = [ap for ap in ("exact", "concentrated") if f"boundary_x_{ap}" in ds]
    if both:
        style = {"exact": ("o", "orange"), "concentrated": ("s", "deepskyblue")}
        for ap in both:
            marker, color = style[ap]
            label = f"limit boundary, {ap}" + (" (paper's reduction)" if ap == "concentrated" else " (|w⊥|² integrated)")
            ax.plot(ds[f"boundary_x_{ap}"].values, y, marker, ms=2.2, color=color, label=label)
    elif "boundary_x" in ds:
        ax.plot(ds["boundary_x"].values, y, "o", ms=2.2, color="orange", label="same, root finding per row")
    if ds.attrs.get("solver", "").startswith("finite") and "phase" in ds:
        ph = ds["phase"].values.astype(float)
        levels = [lv for lv in (0.5, 1.5) if ph.min() < lv < ph.max()]
        if levels:
            ax.contour(x, y, ph, levels=levels, colors="w", linewidths=1.2, linestyles="--")
            ax.plot([], [], color="w", ls="--", label="finite-size crossover (phase label)")
    if int(ds.attrs.get("x_log", 0)):
        ax.set_xscale("log")
    if int(ds.attrs.get("y_log", 0)):
        ax.set_yscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    model = ds.attrs.get("model", "teacher-student")
    conv = ds.attrs.get("convention")
    ax.set_title(f"{model} phase diagram ({ds.attrs.get('solver', '')}"
                 + (f", {conv} convention)" if conv else (f", {approx})" if approx else ")")))
    leg = ax.legend(fontsize=7, loc="upper right", facecolor="0.35", labelcolor="w")
    leg.get_frame().set_alpha(0.8)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_gp_learning_curve(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """GP (EK) learned fractions of the linear and cubic parts vs n, with the half-learning n."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    n = ds["n"].values
    for i, s2 in enumerate(ds["s2"].values):
        c = _colors(ds.sizes["s2"])[i]
        ax.plot(n, ds["linear_learned"].sel(s2=s2), color=c, ls="-", label=f"linear, σ² = {s2:g}")
        ax.plot(n, ds["cubic_learned"].sel(s2=s2), color=c, ls="--", label=f"cubic, σ² = {s2:g}")
        ax.axvline(float(ds["n_half_cubic"].sel(s2=s2)), color=c, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("learned fraction (EK)")
    ax.set_title(f"GP baseline, d = {float(np.asarray(ds.attrs.get('param_d'))):g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_sweep(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """The paper's Fig. 3: (a) -log p along Phi = Psi scaled by 1/P (= Shat(Phi; a)) for sigma^2 in
    each phase, with an inset on the mixed phase; (b) the target component 1 + a vs sigma^2 at
    finite P, the P -> infinity equilibrium, the metastable ordered branch, and both transitions."""
    if ds.attrs.get("grokphase_kind") != "theory.modular.sweep":
        raise ResultFileError("plot_modular_sweep needs a theory.modular.sweep dataset")
    conv = ds.attrs.get("convention")       # absent in files written before the option existed
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    phi = ds["phi"].values
    colors = _colors(ds.sizes["density_s2"])
    s1, s2_ = float(ds.attrs["gmfl1_s2"]), float(ds.attrs["gmfl2_s2"])

    def phase_of(v):
        return "GFL" if v > s1 else ("GMFL-I" if v > s2_ else "GMFL-II")

    inset = ax_a.inset_axes([0.52, 0.52, 0.45, 0.43])
    for i, v in enumerate(ds["density_s2"].values):
        sh = ds["reduced_action"].isel(density_s2=i).values
        ax_a.plot(phi, sh, color=colors[i], lw=1.5, label=f"σ² = {v:g} ({phase_of(v)})")
        if phase_of(v) == "GMFL-I":
            inset.plot(phi, sh, color=colors[i], lw=1.2)
    ax_a.axhline(0.0, color="0.6", lw=0.6)
    lim = max(1.0, float(np.nanmax(np.abs(ds["reduced_action"].values[:, : len(phi) // 2]))))
    ax_a.set_ylim(-0.5 * lim, lim)
    hi = np.nanmax(np.abs(ds["reduced_action"].values))
    inset.set_ylim(-0.02 * hi, 0.05 * hi)
    inset.axhline(0.0, color="0.6", lw=0.6)
    inset.set_title("mixed phase: degenerate minima", fontsize=7)
    inset.tick_params(labelsize=6)
    ax_a.set_xlabel("Φ = Ψ = |w_k|²")
    ax_a.set_ylabel("−log p / P + const  (= Ŝ(Φ))" if conv != "network" else "−log p / 2P + const  (= Ŝ(Φ))")
    ax_a.set_title("(a) per-mode action along Φ = Ψ")
    ax_a.legend(fontsize=7, loc="lower left")
    s2 = ds["s2"].values
    ax_b.plot(s2, ds["target_component"], color="tab:blue", lw=2.0,
              label=f"finite P ({ds.attrs.get('method', '')}" + (f", {conv} convention)" if conv else ")"))
    ax_b.plot(s2, ds["limit_target_component"], color="k", lw=1.0, ls="--", label="P → ∞ equilibrium")
    ax_b.plot(s2, 1.0 + ds["a_superheated"], color="tab:orange", lw=1.0, ls=":", label="ordered branch (metastable)")
    for v, name in ((s1, "GMFL-I onset"), (s2_, "GMFL-II onset")):
        if v > 0:
            ax_b.axvline(v, color="crimson", lw=0.8, ls="--")
            ax_b.text(v, 0.95, name, rotation=90, fontsize=7, ha="right", va="top",
                      transform=ax_b.get_xaxis_transform())
    ax_b.set_xlabel("σ²")
    ax_b.set_ylabel("target component 1 + a")
    ax_b.set_title("(b) learned target component")
    ax_b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_gp(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """EK learned fraction of the modular target vs training pairs for each P (a GP needs O(P^2))."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    n = ds["n"].values
    for i, P in enumerate(ds["P"].values):
        c = _colors(ds.sizes["P"])[i]
        ax.plot(n, ds["learned"].sel(P=P), color=c, label=f"P = {P:g}")
        ax.axvline(P**2, color=c, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs n (dotted: the whole table, P²)")
    ax.set_ylabel("target learned fraction (EK)")
    ax.set_title("NNGP baseline, modular addition")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_teacher_student_sim(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """A simulation on its own: trajectories of the learned fractions and losses (ensemble mean
    per s2) and the time-averaged learned fractions vs s2 with standard errors.  An annealing run
    (``branch`` dimension) gives one figure per branch, ``<stem>_<branch><suffix>``."""
    if "branch" in ds.dims:
        out = []
        for b in ds["branch"].values:
            p = Path(path)
            out.extend(plot_teacher_student_sim(ds.sel(branch=b), p.with_name(f"{p.stem}_{b}{p.suffix}"), also_pdf))
        return out
    s2 = ds["s2"].values
    t = ds["time"].values
    cols = _colors(s2.size)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, v in enumerate(s2):
        for name, ls in (("linear_learned", "-"), ("cubic_learned", "--")):
            axes[0].plot(t, ds[f"{name}_trajectory"].values[i].mean(axis=(0, 1)), ls, color=cols[i],
                         label=f"σ² = {v:g}" if ls == "-" else None)
        axes[1].plot(t, ds["train_mse_trajectory"].values[i].mean(axis=(0, 1)), "-", color=cols[i])
        axes[1].plot(t, ds["test_mse_trajectory"].values[i].mean(axis=(0, 1)), ":", color=cols[i])
    burn = float(ds.attrs.get("param_burn_in", 0))
    for ax in axes[:2]:
        ax.axvline(burn, color="0.6", lw=0.8)
        ax.set_xlabel("step")
        if ds.attrs.get("record_times") == "log":
            ax.set_xscale("log")
    axes[0].set_ylabel("learned fraction (— linear, -- cubic)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("MSE (— train, ··· test)")
    axes[1].set_yscale("log")
    for name, mk in (("linear_learned", "o"), ("cubic_learned", "s"), ("droplet_fraction", "^")):
        axes[2].errorbar(s2, ds[name].values, yerr=np.where(np.isfinite(ds[f"{name}_sem"].values),
                                                            ds[f"{name}_sem"].values, 0.0),
                         fmt=mk + "-", ms=4, capsize=2, label=name.replace("_", " "))
    axes[2].set_xlabel("σ²")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"teacher-student Langevin ensemble: N={ds.attrs['N']}, d={ds.attrs['d']}, n={ds.attrs['n']}, "
                 f"{ds.sizes['dataset']}×{ds.sizes['init']} networks per σ²", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_teacher_student_compare(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """The paper's Fig. 2 from a comparison Dataset: (a, b) -log p(q) from simulations (markers,
    sub-ensemble error bars) over the finite-d theory (lines), one colour per beta, at a simulated
    s2 on each side of the scaling-limit transition; (c) the cubic learned fraction vs s2 (inset: the
    linear one)."""
    K = cmp.sizes["sim"]
    betas = cmp["beta"].values
    order = np.argsort(betas)
    cols = dict(zip(order, _colors(K)))
    s2_c = float(cmp.attrs.get("limit_s2_c", np.nan))
    ref = cmp["s2_reference"].values
    pts = np.unique(np.round(ref[np.isfinite(ref)], 12))
    below = pts[pts < s2_c] if np.isfinite(s2_c) else pts[:1]
    above = pts[pts > s2_c] if np.isfinite(s2_c) else pts[-1:]
    panels = [("a", below.max() if below.size else pts.min()), ("b", above.min() if above.size else pts.max())]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (tag, s2_ref) in zip(axes[:2], panels):
        for k in order:
            i = np.flatnonzero(np.isclose(ref[k], s2_ref))
            if i.size == 0:
                continue
            i = int(i[0])
            th = cmp["theory_minus_log_p"].values[k, i]
            ax.plot(cmp["q"].values, th - np.nanmin(th), "-", color=cols[k], lw=1.2)
            sim = cmp["sim_minus_log_p"].values[k, i]
            err = cmp["sim_minus_log_p_err"].values[k, i]
            ok = np.isfinite(sim)
            shift = np.nanmin(th)
            ax.errorbar(cmp["q_bin"].values[ok][::3], (sim[ok] - shift)[::3], yerr=np.nan_to_num(err[ok])[::3],
                        fmt="o", ms=2.5, color=cols[k], capsize=1.5, label=_beta_label(float(betas[k])))
        ax.set_title(f"({tag}) σ² = {s2_ref:g} ({'droplet side' if s2_ref < s2_c else 'GFL side'})", fontsize=9)
        ax.set_xlabel("q = w·w*")
        ax.set_ylabel("−log p(q) (theory min. at 0)")
        ax.set_ylim(-0.5, 12)
        ax.legend(fontsize=7)
    ax = axes[2]
    inset = ax.inset_axes([0.55, 0.5, 0.42, 0.42])
    for k in order:
        ax.plot(cmp["theory_s2_line_reference"].values[k], cmp["theory_cubic_learned_line"].values[k], "-",
                color=cols[k], lw=1.2)
        ok = np.isfinite(ref[k])
        ax.errorbar(ref[k][ok], cmp["cubic_learned"].values[k][ok],
                    yerr=np.nan_to_num(cmp["cubic_learned_sem"].values[k][ok], posinf=0.0), fmt="o", ms=4,
                    color=cols[k], capsize=2, label=_beta_label(float(betas[k])))
        inset.plot(cmp["theory_s2_line_reference"].values[k], cmp["theory_linear_learned_line"].values[k], "-",
                   color=cols[k], lw=1)
        inset.errorbar(ref[k][ok], cmp["linear_learned"].values[k][ok],
                       yerr=np.nan_to_num(cmp["linear_learned_sem"].values[k][ok], posinf=0.0), fmt="o", ms=2.5,
                       color=cols[k], capsize=1)
    primary = cmp.attrs.get("approximation", "concentrated")
    others = [a for a in str(cmp.attrs.get("approximations", primary)).split() if a != primary]
    for a in others:
        if f"theory_{a}_cubic_learned_line" not in cmp:
            continue
        for k in order:
            ax.plot(cmp["theory_s2_line_reference"].values[k], cmp[f"theory_{a}_cubic_learned_line"].values[k], ":",
                    color=cols[k], lw=1.2)
        c_other = float(cmp.attrs.get(f"limit_s2_c_{a}", np.nan))
        if np.isfinite(c_other):
            ax.axvline(c_other, color="tab:red", lw=0.8, ls=":")
    if np.isfinite(s2_c):
        ax.axvline(s2_c, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel("σ² (β = 1 units)")
    ax.set_ylabel("cubic learned fraction 1 − c/ε")
    ax.set_title(f"(c) markers: Langevin; lines: finite-d theory, — {primary}"
                 + "".join(f", ··· {a}" for a in others), fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    inset.set_title("linear 1 − b", fontsize=7)
    inset.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_modular_sim(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Grokking diagnostics of a modular-addition simulation: (a) train and test accuracy vs step for
    every network (one colour per training fraction / s2), (b) mean IPR vs step, (c, d) the first
    network's neurons x frequency power of its first input half at the first and last record
    (neurons sorted by dominant frequency), (e) the phase-constraint histogram after burn-in."""
    if "alpha" in ds.dims:
        groups = [(f"α = {float(a):g}", ds.isel(alpha=j)) for j, a in enumerate(ds["alpha"].values)]
    elif "branch" in ds.dims:       # an annealing run: one group per branch (cooling, heating)
        groups = [(str(b), ds.isel(branch=j)) for j, b in enumerate(ds["branch"].values)]
    else:
        groups = [(f"α = {float(ds.attrs.get('param_alpha', 1)):g}", ds)]
    t = ds["time"].values
    sweep = "alpha" in ds.dims
    fig, axes = plt.subplots(1, 6 if sweep else 5, figsize=(24 if sweep else 20, 3.8))
    cols = _colors(len(groups) * ds.sizes["s2"])
    c = 0
    for label, g in groups:
        for i, s2 in enumerate(g["s2"].values):
            tag = label if g.sizes["s2"] == 1 else f"{label}, σ² = {s2:g}"
            tr = g["train_acc_trajectory"].values[i]
            te = g["test_acc_trajectory"].values[i]
            for k in range(tr.shape[0]):
                axes[0].plot(t, tr[k], ":", color=cols[c], lw=1)
                axes[0].plot(t, te[k], "-", color=cols[c], lw=1.2, label=tag if k == 0 else None)
            axes[1].plot(t, g["ipr_trajectory"].values[i].mean(axis=0), "-", color=cols[c], label=tag)
            c += 1
    log = ds.attrs.get("param_log_times") in (1, True, "1")
    for ax in axes[:2]:
        ax.set_xlabel("step")
        if log:
            ax.set_xscale("log")
    axes[0].set_ylabel("accuracy (··· train, — test)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("mean IPR of the neurons' Fourier spectra")
    first = groups[0][1]
    spec = first["spectrum_u"].values[0, 0]                                    # (time, neuron, freq)
    order = np.argsort(first["frequency"].values[0, 0, -1], kind="stable")
    for ax, ti, name in ((axes[2], 0, "first record"), (axes[3], -1, "last record")):
        sp = spec[ti][order][:, 1:]
        sp = sp / np.maximum(sp.sum(axis=1, keepdims=True), 1e-30)
        ax.imshow(sp, aspect="auto", cmap="magma", interpolation="nearest",
                  extent=(0.5, sp.shape[1] + 0.5, sp.shape[0], 0))
        ax.set_xlabel("frequency k")
        ax.set_ylabel("neuron (sorted by final frequency)")
        ax.set_title(f"normalised |u_k|² power, {name} (step {int(t[ti])})", fontsize=8)
    ph = first["phase_hist"].values.sum(axis=tuple(range(first["phase_hist"].ndim - 1)))
    axes[4].bar(first["phase_bin"].values, ph / max(ph.sum(), 1), width=2 * np.pi / ph.size, color="tab:blue")
    axes[4].set_xlabel("φ_u + φ_v − φ_a at each neuron's frequency")
    axes[4].set_ylabel("fraction of neurons (after burn-in)")
    if sweep:
        alphas = ds["alpha"].values
        for name, mk, col in (("t_memorise", "s", "tab:gray"), ("t_grok", "o", "tab:red")):
            v = ds[name].values[:, 0, :].astype(float)                     # (alpha, seed), first s2
            for j, a in enumerate(alphas):
                ok = v[j] >= 0
                axes[5].plot(np.full(ok.sum(), a), v[j][ok], mk, color=col, ms=4, alpha=0.6)
                if (~ok).any():
                    axes[5].plot([a], [t[-1]], "^", color=col, ms=7, mfc="none")
            med = [np.median(v[j][v[j] >= 0]) if np.all(v[j] >= 0) else np.nan for j in range(alphas.size)]
            axes[5].plot(alphas, med, "-", color=col, label=name.replace("_", " ") + " (median)")
        axes[5].set_yscale("log")
        axes[5].set_xlabel("training fraction α")
        axes[5].set_ylabel("step (△: not reached by the last step)")
        axes[5].legend(fontsize=7)
    fig.suptitle(f"modular addition P = {ds.attrs.get('param_P')}, N = {ds.attrs.get('param_N')}, "
                 f"{ds.attrs.get('param_optimizer')} ({ds.attrs.get('param_parametrisation')} parametrisation)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


_BRANCH_MARKERS = {"cooling": ("v", "cooling (from the prior)"), "heating": ("^", "heating (from the ordered start)"),
                   "independent": ("o", "independent runs")}
_CONVENTION_STYLES = {"paper": ("-", "theory, paper's λ = σ_a²⟨ΦΨ⟩"),
                      "network": ("-.", "theory, network-consistent λ = 4P²σ_a²⟨ΦΨ⟩")}


def plot_modular_compare(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Modular Langevin simulations over the theory vs sigma^2: (a) the time-averaged target component
    per branch (markers, standard errors over networks) over the finite-P equilibrium of each
    convention (line styles), the P -> infinity equilibrium and its metastable ordered branch; (b) the
    same on a log scale, where the disordered (GP-like) values are visible; (c) the fraction of droplet
    neurons over the theory's expected fraction 1 - (1 - p)^((P-1)/2).  Colours: one per simulated size."""
    from matplotlib.lines import Line2D

    if cmp.attrs.get("grokphase_kind") != "analysis.modular.compare":
        raise ResultFileError("plot_modular_compare needs an analysis.modular.compare dataset")
    fig, (ax_a, ax_l, ax_b) = plt.subplots(1, 3, figsize=(16.0, 4.6))
    s2l = cmp["s2_line"].values
    cols = _colors(cmp.sizes["run"])
    convs = [str(c) for c in cmp["convention"].values]
    branches_seen: list[str] = []
    for r in range(cmp.sizes["run"]):
        for c, conv in enumerate(convs):
            ls = _CONVENTION_STYLES.get(conv, ("-", conv))[0]
            for ax in (ax_a, ax_l):
                ax.plot(s2l, cmp["line_target_component"].values[r, c], ls, color=cols[r], lw=1.4)
            ax_b.plot(s2l, cmp["line_droplet_neurons"].values[r, c], ls, color=cols[r], lw=1.4)
        if "line_rf_target_component" in cmp:
            ax_l.plot(s2l, cmp["line_rf_target_component"].values[r], "-", color=cols[r], lw=3.0, alpha=0.35)
            ax_l.plot(s2l, cmp["line_nngp_target_component"].values[r], "--", color=cols[r], lw=0.8)
        ax_a.plot(s2l, cmp["line_limit_target_component"].values[r, 0], "--", color=cols[r], lw=0.8)
        ax_a.plot(s2l, cmp["line_superheated_target_component"].values[r, 0], ":", color=cols[r], lw=1.0)
        pts = np.flatnonzero(cmp["point_run"].values == r)
        for b in np.unique(cmp["point_branch"].values[pts]):
            sel = pts[cmp["point_branch"].values[pts] == b]
            mk = _BRANCH_MARKERS.get(str(b), ("s", str(b)))[0]
            if str(b) not in branches_seen:
                branches_seen.append(str(b))
            x = cmp["point_s2"].values[sel]
            for ax, name in ((ax_a, "sim_target_component"), (ax_l, "sim_target_component"),
                             (ax_b, "sim_droplet_fraction")):
                ax.errorbar(x, cmp[name].values[sel], yerr=cmp[f"{name}_sem"].values[sel], fmt=mk, color=cols[r],
                            ms=6, mfc="white" if str(b) == "cooling" else cols[r], capsize=2, lw=0.8)
    handles = [Line2D([], [], color=cols[r], lw=3,
                      label=f"P = {float(cmp['run_P'].values[r]):g}, N = {float(cmp['run_N'].values[r]):g}")
               for r in range(cmp.sizes["run"])]
    handles += [Line2D([], [], color="0.3", ls=_CONVENTION_STYLES.get(c, ("-", c))[0],
                       label=_CONVENTION_STYLES.get(c, ("-", c))[1] + " (finite P)") for c in convs]
    handles += [Line2D([], [], color="0.3", ls="--", lw=0.8, label="P → ∞ equilibrium (paper)"),
                Line2D([], [], color="0.3", ls=":", label="P → ∞ ordered branch, metastable (paper)")]
    handles += [Line2D([], [], color="0.3", ls="", marker=_BRANCH_MARKERS.get(b, ("s", b))[0],
                       mfc="white" if b == "cooling" else "0.3", label="sim: " + _BRANCH_MARKERS.get(b, ("s", b))[1])
                for b in branches_seen]
    ax_a.legend(handles=handles, fontsize=6.5, loc="upper right")
    ax_l.legend(handles=[Line2D([], [], color="0.3", lw=3.0, alpha=0.35,
                                label="disordered branch at width N (prior weights, Monte Carlo)"),
                         Line2D([], [], color="0.3", ls="--", lw=0.8, label="infinite-width GP (NNGP, eq. 21)")],
                fontsize=6.5, loc="lower left")
    ax_a.set_xlabel("σ²")
    ax_a.set_ylabel("target component ⟨f, y⟩/⟨y, y⟩ = 1 + a")
    ax_a.set_title("(a) learned target component: simulations vs theory", fontsize=9)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("σ²")
    ax_l.set_title("(b) the same, log scale (the disordered, GP-like values)", fontsize=9)
    ax_b.set_xlabel("σ²")
    ax_b.set_ylabel("fraction of droplet neurons")
    ax_b.set_title("(c) droplet neurons (theory: 1 − (1 − p)^((P−1)/2))", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)

PLOTTERS = {
    "sims.modular": plot_modular_sim,
    "sims.teacher_student": plot_teacher_student_sim,
    "analysis.teacher_student.compare": plot_teacher_student_compare,
    "analysis.modular.compare": plot_modular_compare,
    "theory.modular.sweep": plot_modular_sweep,
    "theory.modular.phase_diagram": plot_phase_diagram,
    "theory.modular.gp": plot_modular_gp,
    "theory.teacher_student.sweep": plot_teacher_student_sweep,
    "theory.teacher_student.phase_diagram": plot_phase_diagram,
    "theory.teacher_student.gp": plot_gp_learning_curve,
}


def plot_result(ds: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Dispatch on the dataset's ``grokphase_kind``."""
    kind = ds.attrs.get("grokphase_kind")
    if kind not in PLOTTERS:
        raise ResultFileError(f"no plot is defined for results of kind {kind!r}")
    return PLOTTERS[kind](ds, path, also_pdf)
