"""Figures of simulation results and of their comparisons with the theory, from saved Datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.lines import Line2D

from grokphase.errors import ResultFileError
from grokphase.plotting.base import S2, S2_C, _below, _beta_label, _colors, _save, plt


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
    paper = "linear_learned" in ds
    styles = ("-", "--", ":", "-.")
    if paper:
        curves = [(f"{name}_trajectory", None, ls, name.split("_")[0])
                  for name, ls in (("linear_learned", "-"), ("cubic_learned", "--"))]
        points = [(name, None, mk, name.replace("_", " ")) for name, mk in (("linear_learned", "o"), ("cubic_learned", "s"))]
    else:                       # a general Hermite target: the per-degree learned fractions
        degrees = [int(k) for k in ds["degree"].values]
        curves = [("learned_trajectory", j, styles[j % 4], f"He{k}") for j, k in enumerate(degrees)]
        points = [("learned", j, "os^vD<>p"[j % 8], f"learned He{k}") for j, k in enumerate(degrees)]
    for i, v in enumerate(s2):
        for c, (var, j, ls, _) in enumerate(curves):
            traj = ds[var].values[i] if j is None else ds[var].isel(degree=j).values[i]
            axes[0].plot(t, traj.mean(axis=(0, 1)), ls, color=cols[i], label=f"$\\sigma^2$ = {v:g}" if c == 0 else None)
        axes[1].plot(t, ds["train_mse_trajectory"].values[i].mean(axis=(0, 1)), "-", color=cols[i])
        axes[1].plot(t, ds["test_mse_trajectory"].values[i].mean(axis=(0, 1)), ":", color=cols[i])
    burn = float(ds.attrs.get("param_burn_in", 0))
    for ax in axes[:2]:
        ax.axvline(burn, color="0.6", lw=0.8)
        ax.set_xlabel("step")
        if ds.attrs.get("record_times") == "log":
            ax.set_xscale("log")
    axes[0].set_ylabel("learned fraction (" + ", ".join(f"{ls} {lab}" for _, _, ls, lab in curves) + ")")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("MSE (— train, ··· test)")
    axes[1].set_yscale("log")
    for name, j, mk, label in points + [("droplet_fraction", None, "^", "droplet fraction")]:
        val, err = ds[name].values, ds[f"{name}_sem"].values
        if j is not None:
            val, err = val[:, j], err[:, j]
        axes[2].errorbar(s2, val, yerr=np.where(np.isfinite(err), err, 0.0), fmt=mk + "-", ms=4, capsize=2, label=label)
    axes[2].set_xlabel("$\\sigma^2$")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"teacher-student Langevin ensemble: N={ds.attrs['N']}, d={ds.attrs['d']}, n={ds.attrs['n']}, "
                 f"{ds.sizes['dataset']}×{ds.sizes['init']} networks per $\\sigma^2$", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def count_minima(values) -> int:
    """Number of local minima of a sampled curve (NaNs dropped; a flat bottom counts once)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return int(v.size > 0)
    d = np.sign(np.diff(v))
    d = d[d != 0]
    return int(np.sum((d[:-1] < 0) & (d[1:] > 0)))


def plot_teacher_student_compare(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """The paper's Fig. 2 from a comparison Dataset: (a, b) -log p(q) from simulations (markers,
    sub-ensemble error bars) over the finite-d theory (lines), one colour per beta, at a simulated
    s2 on each side of the scaling-limit transition; (c) the cubic learned fraction vs s2 (inset: the
    linear one), with the finite-n mean-field theory as open squares when the comparison has it."""
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
    q, q_bin = cmp["q"].values, cmp["q_bin"].values
    rows: dict[str, list[tuple[int, int]]] = {}
    for tag, s2_ref in panels:
        for k in order:
            i = np.flatnonzero(np.isclose(ref[k], s2_ref))
            if i.size:
                rows.setdefault(tag, []).append((int(k), int(i[0])))
    pairs = [ki for tag, _ in panels for ki in rows.get(tag, [])]
    # a window that fits the simulated bins (the theory is solved much further out) and their error bars
    populated = [q_bin[np.isfinite(cmp["sim_minus_log_p"].values[k, i])] for k, i in pairs]
    q_max = max([float(np.max(np.abs(v))) for v in populated if v.size] + [0.1])
    q_lim = min(1.25 * q_max + 0.05, float(np.max(np.abs(q))))
    tops = [np.nanmax(cmp["sim_minus_log_p"].values[k, i] + np.nan_to_num(cmp["sim_minus_log_p_err"].values[k, i])
                      - np.nanmin(cmp["theory_minus_log_p"].values[k, i]))
            for k, i in pairs if np.isfinite(cmp["sim_minus_log_p"].values[k, i]).any()]
    top = 1.2 * max([float(t) for t in tops if np.isfinite(t)] + [2.0])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    for ax, (tag, s2_ref) in zip(axes[:2], panels):
        minima = 0
        for k, i in rows.get(tag, []):
            th = cmp["theory_minus_log_p"].values[k, i]
            shift = np.nanmin(th)
            minima = max(minima, count_minima(th))
            inside = np.abs(q) <= q_lim
            ax.plot(q[inside], _below(th[inside] - shift, top), "-", color=cols[k], lw=1.2)
            sim = cmp["sim_minus_log_p"].values[k, i]
            err = cmp["sim_minus_log_p_err"].values[k, i]
            ok = np.isfinite(sim)
            ax.errorbar(q_bin[ok][::3], (sim[ok] - shift)[::3], yerr=np.nan_to_num(err[ok])[::3],
                        fmt="o", ms=2.5, color=cols[k], capsize=1.5, label=_beta_label(float(betas[k])))
        side = ("" if not np.isfinite(s2_c) else
                f" {'<' if s2_ref < s2_c else '>'} {S2_C} (limit: {'GMFL-I' if s2_ref < s2_c else 'GFL'})")
        shape = {1: "one minimum (no droplet basin)", 2: "droplet minima"}.get(min(minima, 2), "")
        ax.set_title(f"({tag}) {S2} = {s2_ref:g}{side}" + (f"\nfinite-d theory at these sizes: {shape}" if shape else ""),
                     fontsize=9)
        ax.set_xlabel(r"$q = w\cdot w^*$")
        ax.set_ylabel(r"$-\log p(q)$ (theory min. at 0)")
        ax.set_xlim(-q_lim, q_lim)
        ax.set_ylim(-0.5, top)
        ax.legend(fontsize=7)
    ax = axes[2]
    inset = ax.inset_axes([0.7, 0.55, 0.28, 0.37])
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
        if "finite_n_cubic_learned" in cmp:     # the finite-n mean-field theory (issue 22): open squares
            fin = ok & np.isfinite(cmp["finite_n_cubic_learned"].values[k])
            for a, name, ms in ((ax, "cubic", 5), (inset, "linear", 3)):
                a.errorbar(ref[k][fin], cmp[f"finite_n_{name}_learned"].values[k][fin],
                           yerr=np.nan_to_num(cmp[f"finite_n_{name}_learned_sem"].values[k][fin], nan=0.0),
                           fmt="s", ms=ms, mfc="none", color=cols[k], capsize=2,
                           label=f"finite-n theory, {_beta_label(float(betas[k]))}" if a is ax else None)
                if f"finite_n_{name}_corrected" in cmp:     # + the one-loop 1/N correction: open diamonds
                    a.errorbar(ref[k][fin], cmp[f"finite_n_{name}_corrected"].values[k][fin],
                               yerr=np.nan_to_num(cmp[f"finite_n_{name}_corrected_sem"].values[k][fin], nan=0.0),
                               fmt="D", ms=ms - 1, mfc="none", color=cols[k], capsize=2,
                               label=f"finite n + 1/N, {_beta_label(float(betas[k]))}" if a is ax else None)
    if "ridge_cubic_learned_line" in cmp:      # the renormalised-ridge (finite-n) theory: dash-dotted lines
        for k in order:
            ax.plot(cmp["theory_s2_line_reference"].values[k], cmp["ridge_cubic_learned_line"].values[k], "-.",
                    color=cols[k], lw=1.0, label=f"renormalised ridge, {_beta_label(float(betas[k]))}")
            inset.plot(cmp["theory_s2_line_reference"].values[k], cmp["ridge_linear_learned_line"].values[k], "-.",
                       color=cols[k], lw=0.8)
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
            ax.axvline(c_other, color="tab:red", lw=0.8, ls=":", label=f"{S2_C} = {c_other:.4f} (limit, {a})")
    if np.isfinite(s2_c):
        ax.axvline(s2_c, color="tab:red", lw=0.8, ls="--", label=f"{S2_C} = {s2_c:.4f} (limit, {primary})")
    ax.set_xlabel("$\\sigma^2$ (β = 1 units)")
    ax.set_ylabel("cubic learned fraction 1 − c/ε")
    ax.set_title(f"(c) markers: Langevin; lines: finite-d theory, — {primary}"
                 + "".join(f", ··· {a}" for a in others)
                 + ("\n□: finite-n mean-field theory (mean ± SE over data sets)" if "finite_n_cubic_learned" in cmp
                    else ""), fontsize=9)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0.12, 1.0))
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
    fig, axes = plt.subplots(1, 6 if sweep else 5, figsize=(25 if sweep else 21, 3.8))
    cols = _colors(len(groups) * ds.sizes["s2"])
    c = 0
    group_handles = []
    for label, g in groups:
        for i, s2 in enumerate(g["s2"].values):
            tag = label if g.sizes["s2"] == 1 else f"{label}, {S2} = {s2:g}"
            tr = g["train_acc_trajectory"].values[i]
            te = g["test_acc_trajectory"].values[i]
            for k in range(tr.shape[0]):
                axes[0].plot(t, tr[k], ":", color=cols[c], lw=1)
                axes[0].plot(t, te[k], "-", color=cols[c], lw=1.2)
            axes[1].plot(t, g["ipr_trajectory"].values[i].mean(axis=0), "-", color=cols[c], label=tag)
            group_handles.append(Line2D([], [], color=cols[c], lw=3, label=tag))
            c += 1
    log = ds.attrs.get("param_log_times") in (1, True, "1")
    for ax in axes[:2]:
        ax.set_xlabel("step")
        if log:
            ax.set_xscale("log")
    axes[0].set_ylabel("accuracy")
    style = [Line2D([], [], color="0.3", ls=":", lw=1, label="train accuracy"),
             Line2D([], [], color="0.3", ls="-", lw=1.2, label="test accuracy")]
    n_nets = tr.shape[0]
    axes[0].legend(handles=style + (group_handles if len(group_handles) > 1 else []), fontsize=7)
    axes[0].set_title(f"(a) accuracies ({n_nets} network{'s' if n_nets > 1 else ''} per line style"
                      + (f", {group_handles[0].get_label()})" if len(group_handles) == 1 else ")"), fontsize=8)
    axes[1].set_ylabel("mean IPR of the neurons' Fourier spectra")
    axes[1].set_title("(b) Fourier localisation (IPR)", fontsize=8)
    if len(group_handles) > 1:
        axes[1].legend(fontsize=7)
    first = groups[0][1]
    spec = first["spectrum_u"].values[0, 0]                                    # (time, neuron, freq)
    order = np.argsort(first["frequency"].values[0, 0, -1], kind="stable")
    for ax, ti, tag, name in ((axes[2], 0, "c", "first record"), (axes[3], -1, "d", "last record")):
        sp = spec[ti][order][:, 1:]
        sp = sp / np.maximum(sp.sum(axis=1, keepdims=True), 1e-30)
        im = ax.imshow(sp, aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0,
                       extent=(0.5, sp.shape[1] + 0.5, sp.shape[0], 0))
        fig.colorbar(im, ax=ax, label="fraction of the neuron's power", pad=0.02)
        ax.set_xlabel("frequency k")
        ax.set_ylabel("neuron (sorted by final frequency)")
        ax.set_title(f"({tag}) normalised power $|u_k|^2$, {name} (step {int(t[ti])})", fontsize=8)
    ph = first["phase_hist"].values.sum(axis=tuple(range(first["phase_hist"].ndim - 1)))
    axes[4].bar(first["phase_bin"].values, ph / max(ph.sum(), 1), width=2 * np.pi / ph.size, color="tab:blue")
    axes[4].set_xlabel(r"$\varphi_u + \varphi_v - \varphi_a$ at each neuron's frequency")
    axes[4].set_ylabel("fraction of neurons (after burn-in)")
    axes[4].set_title("(e) phase constraint", fontsize=8)
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
        axes[5].set_xlabel(r"training fraction $\alpha$")
        axes[5].set_ylabel("step (△: not reached by the last step)")
        axes[5].legend(fontsize=7)
    fig.suptitle(f"modular addition P = {ds.attrs.get('param_P')}, N = {ds.attrs.get('param_N')}, "
                 f"{ds.attrs.get('param_optimizer')} ({ds.attrs.get('param_parametrisation')} parametrisation)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


_BRANCH_MARKERS = {"cooling": ("v", "cooling (from the prior)"), "heating": ("^", "heating (from the ordered start)"),
                   "independent": ("o", "independent runs")}
_CONVENTION_STYLES = {"paper": ("-", "theory, paper's λ = $\\sigma_a^2\\langle\\Phi\\Psi\\rangle$"),
                      "network": ("-.", "theory, network-consistent λ = $4P^2\\sigma_a^2\\langle\\Phi\\Psi\\rangle$")}


def plot_modular_compare(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """Modular Langevin simulations over the theory vs sigma^2: (a) the time-averaged target component
    per branch (markers, standard errors over networks) over the finite-P equilibrium of each
    convention (line styles), the P -> infinity equilibrium and its metastable ordered branch; (b) the
    same on a log scale, where the disordered (GP-like) values are visible; (c) the fraction of droplet
    neurons over the theory's expected fraction 1 - (1 - p)^((P-1)/2).  Colours: one per simulated size."""
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
    ax_a.set_xlabel("$\\sigma^2$")
    ax_a.set_ylabel("target component ⟨f, y⟩/⟨y, y⟩ = 1 + a")
    ax_a.set_title("(a) learned target component: simulations vs theory", fontsize=9)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("$\\sigma^2$")
    ax_l.set_title("(b) the same, log scale (the disordered, GP-like values)", fontsize=9)
    ax_b.set_xlabel("$\\sigma^2$")
    ax_b.set_ylabel("fraction of droplet neurons")
    ax_b.set_title("(c) droplet neurons (theory: 1 − (1 − p)^((P−1)/2))", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)


def plot_single_index_compare(cmp: xr.Dataset, path, also_pdf: bool = False) -> list[Path]:
    """A single-index comparison (issue 18): one panel per target degree, the simulated learned fraction
    (markers with standard errors) over the single-index exact finite-d theory (lines), one colour per beta,
    against the beta = 1 reference s2."""
    degrees = [int(k) for k in cmp["degree"].values]
    K = cmp.sizes["sim"]
    cols = _colors(K)
    fig, axes = plt.subplots(1, len(degrees), figsize=(4.2 * len(degrees), 3.6), squeeze=False)
    for j, (ax, deg) in enumerate(zip(axes[0], degrees)):
        for k in range(K):
            beta = float(cmp["beta"].values[k])
            ax.plot(cmp["theory_s2_line_reference"].values[k], cmp["theory_learned_line"].values[k, :, j], "-",
                    color=cols[k], lw=1.3, label=_beta_label(beta))
            ref = cmp["s2_reference"].values[k]
            ok = np.isfinite(ref)
            err = np.nan_to_num(cmp["learned_sem"].values[k, :, j][ok], posinf=0.0)
            ax.errorbar(ref[ok], cmp["learned"].values[k, :, j][ok], yerr=err, fmt="o", ms=4, capsize=2,
                        color=cols[k])
        ax.set_xlabel(f"{S2} (β = 1 reference)")
        ax.set_title(f"He{deg}", fontsize=9)
    axes[0, 0].set_ylabel("learned fraction 1 − δ_k/ŷ_k")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{cmp.attrs.get('activation')} network, target {cmp.attrs.get('target')}: simulations (markers) "
                 f"vs the {cmp.attrs.get('z_against')} (lines)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, also_pdf)
