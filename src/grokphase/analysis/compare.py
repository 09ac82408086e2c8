"""Analysis of saved simulation results: densities, sub-ensemble error bars, and the comparison of
teacher-student simulations with the finite-d theory at exactly the simulated sizes (paper Fig. 2).

These functions only read result Datasets (and solve the theory); plotting is in
:mod:`grokphase.plotting`.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import xarray as xr

from grokphase.analysis.diagnostics import diagnose, flagged_points
from grokphase.errors import ParameterError, ResultFileError
from grokphase.io import annotate, parameters_of
from grokphase.sims.modular import all_pairs
from grokphase.stats import sem
from grokphase.theory import modular as mt
from grokphase.theory.results import check_corrections
from grokphase.theory import single_index as si
from grokphase.theory import teacher_student as ts

N_SUBENSEMBLES = 5


# ---------------------------------------------------------------------------------------------------
# convergence diagnostics of the compared simulations (issue 20)


def diagnostics_extra(sims: Sequence[xr.Dataset]) -> dict:
    """The convergence diagnostics (:func:`grokphase.analysis.diagnostics.diagnose`, default thresholds)
    of every compared simulation file, as comparison attributes: ``diagnostics_flags_json`` (every
    flagged point: sim index, s2, observable, data set, reason and its other point coordinates) and
    ``diagnostics_notes_json`` (per file, why it could not be diagnosed, "" when it was)."""
    flags, notes = [], []
    for k, ds in enumerate(sims):
        try:
            found = flagged_points(diagnose(ds))
            notes.append("")
        except (ResultFileError, ParameterError) as exc:
            found = []
            notes.append(f"diagnostics unavailable: {exc}")
        for p in found:
            flags.append({"sim": k, "s2": p.s2, "observable": p.observable, "dataset": p.dataset,
                          "reason": p.reason, **{d: str(v) for d, v in p.where.items()}})
    return {"diagnostics_flags_json": json.dumps(flags), "diagnostics_notes_json": json.dumps(notes)}


def unreliable(cmp: xr.Dataset, sim: int, s2: float, observables: dict[str, tuple[str, ...]], **where) -> dict:
    """Which z-scores of one compared point (simulation ``sim`` at ``s2``; ``where``: other point
    coordinates such as the branch) rest on chains that fail the convergence diagnostics:
    {key: reason} for every key of ``observables`` (key -> the observable names it may have in the
    diagnostics, e.g. ``("cubic_learned", "learned_degree3")``) with a flagged point; {} when none."""
    flags = json.loads(cmp.attrs.get("diagnostics_flags_json", "[]"))
    out = {}
    for key, names in observables.items():
        hits = [f"data set {f['dataset']}: {f['reason']}" for f in flags
                if f["sim"] == sim and f["observable"] in names and math.isclose(f["s2"], s2, rel_tol=1e-9)
                and all(f.get(d, str(v)) == str(v) for d, v in where.items())]
        if hits:
            out[key] = "; ".join(hits)
    return out


def diagnostics_note(cmp: xr.Dataset, sim: int) -> str:
    """Why simulation ``sim`` of a comparison could not be diagnosed ("" when it was)."""
    notes = json.loads(cmp.attrs.get("diagnostics_notes_json", "[]"))
    return notes[sim] if sim < len(notes) else ""


def _mark(row: dict, cmp: xr.Dataset, sim: int, s2: float, observables: dict, **where) -> dict:
    row["unreliable"] = unreliable(cmp, sim, s2, observables, **where)
    note = diagnostics_note(cmp, sim)
    if "diagnostics_flags_json" not in cmp.attrs:
        note = "diagnostics not computed (a comparison saved before grokphase had them: recompute it)"
    if note:
        row["diagnostics"] = note
    return row


TS_OBSERVABLES = {"z_linear": ("linear_learned", "learned_degree1"), "z_cubic": ("cubic_learned", "learned_degree3")}
MODULAR_OBSERVABLES = {"target_component": ("target_component_mean", "target_component"),
                       "droplet_fraction": ("droplet_fraction",)}


def _networks_first(hist: np.ndarray) -> np.ndarray:
    """(dataset, init, bins) -> (networks, bins), data-set major (disjoint data sets per group)."""
    return hist.reshape(-1, hist.shape[-1])


def q_density(ds: xr.Dataset, s2_index: int, n_sub: int = N_SUBENSEMBLES):
    """-log p(q) of the simulated overlaps at one s2 (App. C recipe).

    p(q) is the histogram of q over all neurons, networks and record times after burn-in,
    normalised to a density (counts beyond the histogram range count in the normalisation).  The
    error bar of -log p is the standard error over ``n_sub`` disjoint sub-ensembles of networks
    (fewer when there are fewer networks).  Returns (q, minus_log_p, err); bins with no counts are
    dropped (their -log p is infinite)."""
    q = np.asarray(ds["q"].values)
    width = float(np.diff(np.asarray(ds["q_edges"].values)).mean())
    hist = _networks_first(np.asarray(ds["q_hist"].values[s2_index], np.float64))
    over = np.asarray(ds["q_overflow"].values[s2_index], np.float64).reshape(-1)
    total = hist.sum() + over.sum()
    p = hist.sum(axis=0) / (total * width)
    groups = np.array_split(np.arange(hist.shape[0]), min(n_sub, hist.shape[0]))
    sub = []
    for g in groups:
        tot = hist[g].sum() + over[g].sum()
        with np.errstate(divide="ignore"):
            sub.append(-np.log(hist[g].sum(axis=0) / (tot * width)))
    sub = np.asarray(sub)
    keep = (p > 0) & np.all(np.isfinite(sub), axis=0)
    err = sem(sub[:, keep], axis=0, single=0.0)
    return q[keep], -np.log(p[keep]), err


def network_densities(ds: xr.Dataset, s2_index: int, edges: np.ndarray) -> np.ndarray:
    """Per-network densities of q on coarser ``edges`` (a subset of the histogram's edges):
    shape (networks, len(edges) - 1).  Networks are independent replicas, so their spread gives an
    honest standard error of the ensemble density (neurons and record times within a network are
    correlated)."""
    fine = np.asarray(ds["q_edges"].values)
    idx = np.searchsorted(fine, edges)
    if not np.allclose(fine[np.clip(idx, 0, fine.size - 1)], edges):
        raise ValueError("coarse edges must be a subset of the histogram's edges")
    hist = _networks_first(np.asarray(ds["q_hist"].values[s2_index], np.float64))
    over = np.asarray(ds["q_overflow"].values[s2_index], np.float64).reshape(-1)
    cum = np.concatenate([np.zeros((hist.shape[0], 1)), np.cumsum(hist, axis=1)], axis=1)
    counts = cum[:, idx[1:]] - cum[:, idx[:-1]]
    total = hist.sum(axis=1) + over
    return counts / (total[:, None] * np.diff(edges)[None, :])


def _sim_beta(ds: xr.Dataset) -> tuple[float, float]:
    return float(ds.attrs.get("param_beta", 1.0)), float(ds.attrs.get("param_alpha", 1.0))


def theory_for_sim(ds: xr.Dataset, s2_line: np.ndarray | None = None, num_line: int = 61,
                   approximation: str = "exact", density: bool = True):
    """Finite-d theory (``approximation`` exact or concentrated) at exactly the simulated (integer)
    sizes: at the simulated s2 points (with p(q) on the quadrature grid unless ``density=False``) and
    on a line of ``num_line`` s2 values spanning them."""

    N, n, d, sa2 = (float(ds.attrs[k]) for k in ("N", "n", "d", "sa2"))
    sw2, eps = float(ds.attrs["param_sw2"]), float(ds.attrs["param_eps"])
    s2 = np.asarray(ds["s2"].values, np.float64)
    if s2_line is None:
        lo, hi = s2.min(), s2.max()
        pad = 0.1 * (hi - lo) if hi > lo else 0.1 * lo
        s2_line = np.linspace(max(lo - pad, 1e-3), hi + pad, num_line)
    base = dict(N=N, n=n, d=d, sa2=sa2, sw2=sw2, eps=eps)
    points = ts.solve_finite_d(ts.TeacherStudentParams(s2=s2, **base), approximation=approximation)
    line = ts.solve_finite_d(ts.TeacherStudentParams(s2=np.asarray(s2_line), **base), approximation=approximation)
    dens = (ts.solve_finite_d(ts.TeacherStudentParams(s2=s2, **base), density=True, approximation=approximation)
            if density else None)
    return points, line, np.asarray(s2_line), dens


RIDGE_COMPARE_VARS = ("ridge_linear_learned", "ridge_cubic_learned", "z_ridge_linear", "z_ridge_cubic")


def ridge_for_sim(ds: xr.Dataset, s2_line: np.ndarray, approximation: str = "exact"):
    """The renormalised-ridge theory (:func:`~grokphase.theory.teacher_student.solve_finite_d_ridge`) at
    exactly the simulated sizes: (solution at the simulated s2, solution on ``s2_line``)."""
    N, n, d, sa2 = (float(ds.attrs[k]) for k in ("N", "n", "d", "sa2"))
    base = dict(N=N, n=n, d=d, sa2=sa2, sw2=float(ds.attrs["param_sw2"]), eps=float(ds.attrs["param_eps"]))
    s2 = np.asarray(ds["s2"].values, np.float64)
    both = ts.solve_finite_d_ridge(ts.TeacherStudentParams(s2=np.concatenate([s2, np.asarray(s2_line, np.float64)]),
                                                           **base), approximation=approximation).solution
    split = lambda a: (a[:s2.size], a[s2.size:])       # noqa: E731
    fields = {k: split(np.asarray(getattr(both, k))) for k in ("linear_learned", "cubic_learned")}
    return (SimpleNamespace(**{k: v[0] for k, v in fields.items()}),
            SimpleNamespace(**{k: v[1] for k, v in fields.items()}))


def lr_bias_estimate(ds: xr.Dataset):
    """First-order estimate of the learning-rate bias of the simulated learned fractions.

    With the preconditioned parametrisation every prior curvature is s2, and the discrete chain
    inflates a Gaussian variance by 1/(1 - lr s2/2) (THEORY.md §1).  Treating the posterior's
    prior part that way, the chain samples approximately the theory with sw2 and sa2 multiplied
    by k = 1/(1 - lr s2/2); the bias estimate is theory(k sw2, k sa2) - theory(sw2, sa2).
    (The data term's curvature adds to s2 in the readout; it is small in these models.)"""

    N, n, d, sa2 = (float(ds.attrs[k]) for k in ("N", "n", "d", "sa2"))
    sw2, eps, lr = float(ds.attrs["param_sw2"]), float(ds.attrs["param_eps"]), float(ds.attrs["param_lr"])
    s2 = np.asarray(ds["s2"].values, np.float64)
    k = 1.0 / (1.0 - lr * s2 / 2.0)
    ref = ts.solve_finite_d(ts.TeacherStudentParams(N=N, n=n, d=d, s2=s2, sa2=sa2, sw2=sw2, eps=eps))
    inf = ts.solve_finite_d(ts.TeacherStudentParams(N=N, n=n, d=d, s2=s2, sa2=sa2 * k, sw2=sw2 * k, eps=eps))
    return (np.asarray(inf.linear_learned) - np.asarray(ref.linear_learned),
            np.asarray(inf.cubic_learned) - np.asarray(ref.cubic_learned))


def _theory_from_file(theory: xr.Dataset, beta: float, alpha: float, s2_sim: np.ndarray):
    """Theory lines and point values for one beta from a saved ``grokphase theory teacher-student``
    sweep (interpolated in s2)."""
    if theory.attrs.get("grokphase_kind") != "theory.teacher_student.sweep" or "beta" not in theory.coords \
            or "cubic_learned" not in theory:
        raise ResultFileError("--theory must be a finite-d sweep written by `grokphase theory teacher-student "
                              "--s2-sweep ... --betas ... --out FILE.nc`")
    betas = np.asarray(theory["beta"].values)
    j = np.flatnonzero(np.isclose(betas, beta, rtol=1e-6))
    if j.size == 0:
        raise ResultFileError(f"the theory file has no beta = {beta:g} (it has {', '.join(f'{b:g}' for b in betas)})")
    s2_line = np.asarray(theory["s2"].values) * alpha / beta
    lin = np.asarray(theory["linear_learned"].values[j[0]])
    cub = np.asarray(theory["cubic_learned"].values[j[0]])
    if s2_sim.min() < s2_line.min() - 1e-12 or s2_sim.max() > s2_line.max() + 1e-12:
        raise ResultFileError(f"the theory file's s2 range [{s2_line.min():g}, {s2_line.max():g}] does not cover "
                              f"the simulated s2 [{s2_sim.min():g}, {s2_sim.max():g}]")
    return s2_line, lin, cub, np.interp(s2_sim, s2_line, lin), np.interp(s2_sim, s2_line, cub)


# ---------------------------------------------------------------------------------------------------
# the finite-n mean-field theory as a third curve (issue 22)

#: the kind of a ``grokphase theory finite-n`` result
FINITE_N_KIND = "theory.teacher_student.finite_n"
#: the model parameters a finite-n file must share with a simulation to be compared with it
FINITE_N_MATCH = ("N", "n", "d", "sa2", "sw2", "eps")
#: the comparison's finite-n variables over (sim, point)
FINITE_N_VARS = ("finite_n_linear_learned", "finite_n_linear_learned_sem", "finite_n_cubic_learned",
                 "finite_n_cubic_learned_sem", "finite_n_datasets", "z_finite_n_linear", "z_finite_n_cubic")
#: with a ``theory finite-n --one-loop`` file: the finite-N prediction (finite n + one loop) and z against it
FINITE_N_LOOP_VARS = ("finite_n_linear_corrected", "finite_n_linear_corrected_sem", "finite_n_cubic_corrected",
                      "finite_n_cubic_corrected_sem", "z_finite_n_linear_corrected", "z_finite_n_cubic_corrected")
#: paired over the simulation's own data sets (same seed): mean and SE of sim - theory per data set, its z
FINITE_N_PAIRED_VARS = tuple(f"{pre}finite_n_{short}{what}{post}" for what in ("", "_corrected")
                             for short in ("linear", "cubic")
                             for pre, post in (("paired_", "_diff"), ("paired_", "_diff_sem"), ("z_paired_", "")))


def _sim_model(ds: xr.Dataset) -> dict:
    return {"N": float(ds.attrs["N"]), "n": float(ds.attrs["n"]), "d": float(ds.attrs["d"]),
            "sa2": float(ds.attrs["sa2"]), "sw2": float(ds.attrs["param_sw2"]), "eps": float(ds.attrs["param_eps"])}


def finite_n_mismatch(sim: xr.Dataset, fin: xr.Dataset) -> str | None:
    """The first of :data:`FINITE_N_MATCH` in which a finite-n result differs from a simulation (relative
    tolerance 1e-9), as ``"name = file value, simulation value"``; None when they describe the same model."""
    model = _sim_model(sim)
    for name in FINITE_N_MATCH:
        value = float(fin.attrs[f"param_{name}"])
        if not math.isclose(value, model[name], rel_tol=1e-9, abs_tol=0.0):
            return f"{name} = {value:.10g} in the finite-n file, {model[name]:.10g} in the simulation"
    return None


def match_finite_n(sims: Sequence[xr.Dataset], finite_n) -> list:
    """Per simulation its finite-n result (or None).  ``finite_n``: {label: Dataset} or a sequence of
    Datasets.  A file that matches no simulation, or a second file for one simulation, is a
    :class:`ResultFileError` naming the file and (for the first simulation) the mismatched parameter."""
    items = list(finite_n.items()) if isinstance(finite_n, dict) else [
        (f"finite-n file {k + 1}", f) for k, f in enumerate(finite_n)]
    found: list = [None] * len(sims)
    for label, fin in items:
        if fin.attrs.get("grokphase_kind") != FINITE_N_KIND:
            raise ResultFileError(f"{label}: expected a `grokphase theory finite-n` result, got "
                                  f"{fin.attrs.get('grokphase_kind')!r}")
        why = [finite_n_mismatch(ds, fin) for ds in sims]
        hits = [k for k, w in enumerate(why) if w is None]
        if not hits:
            raise ResultFileError(f"{label} does not describe the simulated model: {why[0]}"
                                  + (f" (and differs from the other {len(sims) - 1} simulation(s))" if len(sims) > 1 else ""))
        for k in hits:
            if found[k] is not None:
                raise ResultFileError(f"{label}: a second finite-n file for the simulation at beta = {_sim_beta(sims[k])[0]:g}")
            found[k] = fin
    return found


def finite_n_for_sim(sim: xr.Dataset, fin: xr.Dataset) -> dict:
    """The finite-n theory at a simulation's sigma^2 points: its mean learned fractions over converged data
    sets with their standard errors (NaN where the file has no such sigma^2), the number of converged data
    sets, and the z-scores of the simulation against it, z = (sim - finite n)/sqrt(SEM_sim^2 + SEM_fin^2)
    (both are means over independent data sets; NaN where either error is unknown).  A file written with
    ``--one-loop`` adds the finite-N prediction (finite n + one loop, ``finite_n_*_corrected``) and the
    z-scores against it (:data:`FINITE_N_LOOP_VARS`).  When the file solved the simulation's own training
    sets (same seed), the comparison is also made data set by data set (:data:`FINITE_N_PAIRED_VARS`): the
    mean over the common data sets (converged in the file) of sim - theory, the simulation's value of a
    data set being its mean over inits, with the standard error of those differences — the data-set
    spread, which dominates both unpaired errors, cancels."""
    s2 = np.asarray(sim["s2"].values, np.float64)
    s2_fin = np.asarray(fin["s2"].values, np.float64)
    idx = [np.flatnonzero(np.isclose(s2_fin, v, rtol=1e-9, atol=0.0)) for v in s2]
    if not any(i.size for i in idx):
        raise ResultFileError(f"the finite-n file has no sigma^2 of the simulation ({', '.join(f'{v:g}' for v in s2)}; "
                              f"it has {', '.join(f'{v:g}' for v in s2_fin)})")
    pick = lambda name: np.array([float(fin[name].values[i[0]]) if i.size else np.nan for i in idx])  # noqa: E731
    out = {}
    for short in ("linear", "cubic"):
        sim_mean = np.asarray(sim[f"{short}_learned"].values, np.float64)
        sim_err = np.asarray(sim[f"{short}_learned_sem"].values, np.float64)
        for field, suffix in (("learned", ""), ("corrected", "_corrected")):
            if f"{short}_{field}" not in fin:
                continue
            mean, err = pick(f"{short}_{field}"), pick(f"{short}_{field}_sem")
            out[f"finite_n_{short}_{field}"], out[f"finite_n_{short}_{field}_sem"] = mean, err
            total = np.sqrt(sim_err**2 + err**2)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"z_finite_n_{short}{suffix}"] = np.where(np.isfinite(total) & (total > 0),
                                                              (sim_mean - mean) / total, np.nan)
    out["finite_n_datasets"] = pick("n_converged")
    if str(fin.attrs.get("param_seed")) == str(sim.attrs.get("param_seed")) and "linear_learned_network" in sim:
        common = [int(i) for i in fin["dataset"].values if int(i) in set(int(v) for v in sim["dataset"].values)]
        for short in ("linear", "cubic"):
            per_sim = sim[f"{short}_learned_network"].mean("init")
            for what, cell in (("", fin[f"{short}_learned_dataset"]),
                               ("_corrected", fin[f"{short}_learned_dataset"] + fin[f"{short}_one_loop_dataset"]
                                if f"{short}_one_loop_dataset" in fin else None)):
                if cell is None:
                    continue
                diff, err = np.full(s2.size, np.nan), np.full(s2.size, np.nan)
                for j, i in enumerate(idx):
                    if not i.size:
                        continue
                    ok = [k for k in common if bool(fin["converged"].values[i[0], list(fin["dataset"].values).index(k)])]
                    if not ok:
                        continue
                    d = (per_sim.isel(s2=j).sel(dataset=ok).values
                         - cell.isel(s2=int(i[0])).sel(dataset=ok).values)
                    diff[j] = d.mean()
                    err[j] = d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else np.nan
                out[f"paired_finite_n_{short}{what}_diff"], out[f"paired_finite_n_{short}{what}_diff_sem"] = diff, err
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f"z_paired_finite_n_{short}{what}"] = np.where(np.isfinite(err) & (err > 0), diff / err, np.nan)
    return out


# ---------------------------------------------------------------------------------------------------
# the single-index family (THEORY.md §6, issue 18): any activation, any Hermite target

#: the theory the single-index comparison's z-scores are against
SINGLE_INDEX_THEORY = "exact finite-d theory (single-index)"
SINGLE_INDEX_KIND = "analysis.single_index.compare"


def sim_family(ds: xr.Dataset) -> tuple[str, si.HermiteTarget] | None:
    """(activation, target) of a teacher-student simulation result, or None for the paper's model (erf
    student, He1 + eps He3; results written before issue 18 are all the paper's model)."""
    activation = str(ds.attrs.get("param_activation", "erf"))
    spec = ds.attrs.get("param_target")
    if activation == "erf" and spec is None:
        return None
    target = si.HermiteTarget.paper(float(ds.attrs["param_eps"])) if spec is None else si.get_target(str(spec))
    return activation, target


def _single_index_params(ds: xr.Dataset, s2, scale=1.0) -> si.SingleIndexParams:
    """The single-index theory at the simulated (integer) sizes; ``scale`` multiplies sw2 and sa2 (the
    learning-rate bias estimate)."""
    N, n, d, sa2 = (float(ds.attrs[k]) for k in ("N", "n", "d", "sa2"))
    return si.SingleIndexParams(N=N, n=n, d=d, s2=np.asarray(s2, np.float64), sa2=sa2 * scale,
                                sw2=float(ds.attrs["param_sw2"]) * scale)


def compare_single_index(sims: Sequence[xr.Dataset], num_line: int = 41) -> xr.Dataset:
    """Simulations of one single-index model (the same activation and Hermite target in every file, one
    beta each) against the single-index exact (q, t) finite-d theory
    (:func:`grokphase.theory.single_index.solve_finite_d`, basis = the target's degrees) at exactly the
    simulated sizes: per simulated s2 and target degree k the simulated learned fraction
    <f, Hhat_k>/yhat_k with its standard error, the theory's 1 - v_k/yhat_k, the z-score (sim - theory)/SEM
    and the first-order learning-rate bias estimate of :func:`lr_bias_estimate` (theory at sw2, sa2 times
    1/(1 - lr s2/2) minus theory); the droplet fraction against the theory's mass beyond the same
    threshold (NaN where the theory has no barrier); and theory lines over s2 (``num_line`` points)."""
    if not sims:
        raise ResultFileError("no simulation files given")
    families = []
    for ds in sims:
        if ds.attrs.get("grokphase_kind") != "sims.teacher_student":
            raise ResultFileError(f"expected a teacher-student simulation result, got {ds.attrs.get('grokphase_kind')!r}")
        fam = sim_family(ds)
        if fam is None:
            raise ResultFileError("the paper's model (erf, He1 + eps He3) is compared by compare_teacher_student; "
                                  "do not mix it with other activations or targets in one comparison")
        families.append((fam[0], fam[1].spec))
    if len(set(families)) > 1:
        raise ResultFileError("compare one single-index model at a time: the files have "
                              + "; ".join(sorted({f"{a} with target {t}" for a, t in families})))
    activation, spec = families[0]
    target = si.get_target(spec)
    degrees = target.degrees
    K, S, L = len(sims), max(ds.sizes["s2"] for ds in sims), num_line
    G = len(degrees)
    per_deg = {k: np.full((K, S, G), np.nan) for k in ("learned", "learned_sem", "theory_learned", "z_learned",
                                                        "lr_bias_learned", "learned_test", "learned_test_sem")}
    per_pt = {k: np.full((K, S), np.nan) for k in ("s2", "s2_reference", "droplet_fraction", "droplet_fraction_sem",
                                                   "theory_droplet_fraction", "z_droplet", "test_mse",
                                                   "ensemble_test_mse", "theory_status")}
    line_s2 = np.full((K, L), np.nan)
    line = np.full((K, L, G), np.nan)
    betas, alphas, labels = [], [], []
    for k, ds in enumerate(sims):
        beta, alpha = _sim_beta(ds)
        betas.append(beta)
        alphas.append(alpha)
        s2 = np.asarray(ds["s2"].values, np.float64)
        m = s2.size
        if [int(x) for x in ds["degree"].values] != list(degrees):
            raise ResultFileError(f"the simulation's degrees {ds['degree'].values.tolist()} are not its target's {degrees}")
        lo, hi = s2.min(), s2.max()
        pad = 0.1 * (hi - lo) if hi > lo else 0.1 * lo
        s2_line = np.linspace(max(lo - pad, 1e-3), hi + pad, L)
        pts = si.solve_finite_d(_single_index_params(ds, s2), target, activation, check=False)
        lin = si.solve_finite_d(_single_index_params(ds, s2_line), target, activation, check=False)
        lr = float(ds.attrs["param_lr"])
        biased = si.solve_finite_d(_single_index_params(ds, s2, 1.0 / (1.0 - lr * s2 / 2.0)), target, activation,
                                   check=False)
        per_pt["s2"][k, :m] = s2
        per_pt["s2_reference"][k, :m] = s2 * beta / alpha
        per_pt["theory_status"][k, :m] = np.asarray(pts.status)
        for name in ("learned", "learned_sem", "learned_test", "learned_test_sem"):
            per_deg[name][k, :m] = ds[name].values
        per_deg["theory_learned"][k, :m] = np.asarray(pts.learned)
        per_deg["lr_bias_learned"][k, :m] = np.asarray(biased.learned) - np.asarray(pts.learned)
        line_s2[k], line[k] = s2_line, np.asarray(lin.learned)
        for name in ("droplet_fraction", "droplet_fraction_sem", "theory_droplet_fraction", "test_mse",
                     "ensemble_test_mse"):
            per_pt[name][k, :m] = ds[name].values
        labels.append(f"beta={beta:g}: N={ds.attrs['N']} d={ds.attrs['d']} n={ds.attrs['n']}")
    with np.errstate(invalid="ignore", divide="ignore"):
        def z(diff, err):
            return np.where(err > 0, diff / np.where(err > 0, err, 1.0), np.inf * np.sign(diff))
        per_deg["z_learned"] = z(per_deg["learned"] - per_deg["theory_learned"], per_deg["learned_sem"])
        per_pt["z_droplet"] = z(per_pt["droplet_fraction"] - per_pt["theory_droplet_fraction"],
                                per_pt["droplet_fraction_sem"])
    data = {name: (("sim", "point", "degree"), v) for name, v in per_deg.items()}
    data.update({name: (("sim", "point"), v) for name, v in per_pt.items()})
    data["theory_s2_line"] = (("sim", "s2_line"), line_s2)
    data["theory_s2_line_reference"] = (("sim", "s2_line"), line_s2 * (np.asarray(betas) / np.asarray(alphas))[:, None])
    data["theory_learned_line"] = (("sim", "s2_line", "degree"), line)
    cmp = xr.Dataset(data, coords={"beta": (("sim",), np.asarray(betas)), "alpha": (("sim",), np.asarray(alphas)),
                                   "degree": np.asarray(degrees, np.int64)})
    cmp["theory_learned"].attrs["long_name"] = f"{SINGLE_INDEX_THEORY}: 1 - v_k/yhat_k at the simulated sizes"
    return annotate(cmp, kind=SINGLE_INDEX_KIND,
                    parameters={"sims": labels, "activation": activation, "target": spec},
                    extra={"z_against": SINGLE_INDEX_THEORY, "activation": activation, "target": spec,
                           **diagnostics_extra(sims),
                           "sim_attrs_json": json.dumps([{k: str(v) for k, v in ds.attrs.items()
                                                          if k.startswith("param_") or k in ("N", "n", "d", "sa2",
                                                          "git_revision", "seconds")} for ds in sims])})


def compare_single_index_summary(cmp: xr.Dataset) -> dict:
    """JSON of :func:`compare_single_index`: per simulation (beta) and s2, per target degree
    ({"degree": value}) the simulated and theoretical learned fractions, z-scores and learning-rate bias."""
    degrees = [str(int(k)) for k in cmp["degree"].values]
    rows = []
    for k in range(cmp.sizes["sim"]):
        for i in range(cmp.sizes["point"]):
            s2 = float(cmp["s2"].values[k, i])
            if not np.isfinite(s2):
                continue
            row = {"beta": float(cmp["beta"].values[k]), "s2": s2, "s2_reference": float(cmp["s2_reference"].values[k, i])}
            for name, key in (("learned", "sim_learned"), ("learned_sem", "sim_learned_sem"),
                              ("theory_learned", "theory_learned"), ("z_learned", "z_learned"),
                              ("lr_bias_learned", "lr_bias_learned"), ("learned_test", "sim_learned_test"),
                              ("learned_test_sem", "sim_learned_test_sem")):
                row[key] = dict(zip(degrees, map(float, cmp[name].values[k, i])))
            for name in ("droplet_fraction", "droplet_fraction_sem"):
                row[f"sim_{name}"] = float(cmp[name].values[k, i])
            row["theory_droplet_fraction"] = float(cmp["theory_droplet_fraction"].values[k, i])
            row["z_droplet"] = float(cmp["z_droplet"].values[k, i])
            row["sim_test_mse"] = float(cmp["test_mse"].values[k, i])
            row["sim_ensemble_test_mse"] = float(cmp["ensemble_test_mse"].values[k, i])
            row["theory_status"] = int(cmp["theory_status"].values[k, i])
            rows.append(_mark(row, cmp, k, s2, {f"z_learned_{d}": (f"learned_degree{d}",) for d in degrees}))
    return {"points": rows, "z_against": SINGLE_INDEX_THEORY, "activation": cmp.attrs.get("activation"),
            "target": cmp.attrs.get("target"), "degrees": [int(d) for d in degrees]}


def compare_teacher_student(sims: Sequence[xr.Dataset], theory: xr.Dataset | None = None,
                            approximations: Sequence[str] = ("exact", "concentrated"), finite_n=(),
                            corrections: Sequence[str] = ()) -> xr.Dataset:
    """Simulations vs the finite-d theory (paper Fig. 2).

    Files of another activation or target than the paper's (issue 18) go to :func:`compare_single_index`
    (the single-index exact finite-d theory per target degree; ``theory`` and ``approximations`` do not
    apply to them).

    ``approximations[0]`` (default ``exact``, THEORY.md §3b) gives the theory values, z-scores and
    densities; every further one (default the paper's ``concentrated``) adds its own point values,
    lines and scaling-limit transition as ``theory_<approximation>_*`` variables and attributes.

    For each simulation file (one beta each): per simulated s2 the simulated learned fractions and
    droplet fraction with standard errors, the theory's values at the same (integer) sizes, their
    z-scores ((sim - theory)/sem), a first-order learning-rate bias estimate, -log p(q) from the
    simulation (with sub-ensemble error bars) and from the theory; and theory lines over s2.
    ``theory`` (optional) is a saved finite-d sweep used for the lines and point values instead of
    solving (the densities are always solved at the simulated sizes).

    ``finite_n`` (optional; {label: Dataset} or a sequence): ``grokphase theory finite-n`` results, each
    matched to the simulation with the same (N, n, d, sa2, sw2, eps) (:func:`match_finite_n`; one that
    matches none is refused naming the parameter): a third curve, the finite-n mean-field theory's mean
    learned fractions over data sets at the simulated sigma^2, with z-scores against it
    (:func:`finite_n_for_sim`; variables :data:`FINITE_N_VARS`).

    ``corrections`` (optional, ``("ridge",)``): the renormalised-ridge (finite-n) theory
    (:func:`~grokphase.theory.teacher_student.solve_finite_d_ridge`, the primary approximation) at the
    simulated sizes: ``ridge_{linear,cubic}_learned`` with z-scores ``z_ridge_{linear,cubic}`` at the
    points and ``ridge_*_learned_line`` over the theory line."""

    K = len(sims)
    corrections = check_corrections(corrections)
    if K == 0:
        raise ResultFileError("no simulation files given")
    if any(ds.attrs.get("grokphase_kind") == "sims.teacher_student" and sim_family(ds) is not None for ds in sims):
        if theory is not None:
            raise ResultFileError("--theory (a saved sweep of the paper's model) does not apply to other activations "
                                  "or targets: their theory is solved at the simulated sizes")
        if len(finite_n):
            raise ResultFileError("--finite-n (the finite-n theory of the paper's model) does not apply to other "
                                  "activations or targets")
        if corrections:
            raise ResultFileError("--corrections (the paper's model's finite-n corrections) does not apply to other "
                                  "activations or targets")
        return compare_single_index(sims)
    approximations = tuple(approximations)
    if not approximations or any(a not in ts.APPROXIMATIONS for a in approximations):
        raise ResultFileError(f"approximations must be among {', '.join(ts.APPROXIMATIONS)}, got {approximations}")
    primary, others = approximations[0], approximations[1:]
    extra_vals: dict[str, dict] = {a: {} for a in others}
    for ds in sims:
        if ds.attrs.get("grokphase_kind") != "sims.teacher_student":
            raise ResultFileError(f"expected a teacher-student simulation result, got {ds.attrs.get('grokphase_kind')!r}")
    S = max(ds.sizes["s2"] for ds in sims)
    fin_files = match_finite_n(sims, finite_n) if len(finite_n) else [None] * len(sims)
    loop = any(f is not None and "linear_corrected" in f for f in fin_files)
    fin_names = FINITE_N_VARS + (FINITE_N_LOOP_VARS if loop else ()) + tuple(
        name for name in FINITE_N_PAIRED_VARS if loop or "_corrected" not in name)
    fin_out = {name: np.full((len(sims), S), np.nan) for name in fin_names} if len(finite_n) else {}
    fin_same_data = []
    for k, (ds, fin) in enumerate(zip(sims, fin_files)):
        if fin is not None:
            for name, v in finite_n_for_sim(ds, fin).items():
                fin_out[name][k, :v.size] = v
            fin_same_data.append(int(str(fin.attrs.get("param_seed")) == str(ds.attrs.get("param_seed"))))
        else:
            fin_same_data.append(-1)
    L = 61
    q_grid = np.linspace(-1.4, 1.4, 281)
    out = {k: np.full((K, S), np.nan) for k in (
        "s2", "s2_reference", "linear_learned", "linear_learned_sem", "cubic_learned", "cubic_learned_sem",
        "droplet_fraction", "droplet_fraction_sem", "theory_linear_learned", "theory_cubic_learned",
        "theory_droplet_fraction", "z_linear", "z_cubic", "z_droplet", "lr_bias_linear", "lr_bias_cubic",
        "test_mse", "ensemble_test_mse", "theory_test_mse")}
    ridge_out = ({name: np.full((K, S), np.nan) for name in RIDGE_COMPARE_VARS}
                 | {f"ridge_{f}_learned_line": np.full((K, L), np.nan) for f in ("linear", "cubic")}
                 if "ridge" in corrections else {})
    line_s2 = np.full((K, L), np.nan)
    line_lin = np.full((K, L), np.nan)
    line_cub = np.full((K, L), np.nan)
    sim_mlp = np.full((K, S, q_grid.size - 1), np.nan)
    sim_mlp_err = np.full((K, S, q_grid.size - 1), np.nan)
    th_mlp = np.full((K, S, q_grid.size), np.nan)
    betas, alphas, labels = [], [], []
    for k, ds in enumerate(sims):
        beta, alpha = _sim_beta(ds)
        betas.append(beta)
        alphas.append(alpha)
        s2 = np.asarray(ds["s2"].values, np.float64)
        m = s2.size
        points, line, s2_line, dens = theory_for_sim(ds, num_line=L, approximation=primary)
        for a in others:
            p2, l2, _, _ = theory_for_sim(ds, s2_line=s2_line, approximation=a, density=False)
            ev = extra_vals[a]
            for name in ("linear_learned", "cubic_learned"):
                ev.setdefault(f"theory_{a}_{name}", np.full((K, S), np.nan))[k, :m] = np.asarray(getattr(p2, name))
                ev.setdefault(f"theory_{a}_{name}_line", np.full((K, L), np.nan))[k] = np.asarray(getattr(l2, name))
        th_lin, th_cub = np.asarray(points.linear_learned), np.asarray(points.cubic_learned)
        lines = (s2_line, np.asarray(line.linear_learned), np.asarray(line.cubic_learned))
        if theory is not None:
            s2_line, lin_l, cub_l, th_lin, th_cub = _theory_from_file(theory, beta, alpha, s2)
            idx = np.linspace(0, s2_line.size - 1, L).round().astype(int)
            lines = (s2_line[idx], lin_l[idx], cub_l[idx])
        line_s2[k], line_lin[k], line_cub[k] = lines
        if ridge_out:
            ridge_pts, ridge_line = ridge_for_sim(ds, lines[0], primary)
            for short in ("linear", "cubic"):
                val = np.asarray(getattr(ridge_pts, f"{short}_learned"))
                ridge_out[f"ridge_{short}_learned"][k, :m] = val
                sem = np.asarray(ds[f"{short}_learned_sem"].values, np.float64)
                diff = np.asarray(ds[f"{short}_learned"].values, np.float64) - val
                ridge_out[f"z_ridge_{short}"][k, :m] = np.where(sem > 0, diff / np.where(sem > 0, sem, 1.0),
                                                                np.inf * np.sign(diff))
                ridge_out[f"ridge_{short}_learned_line"][k] = np.asarray(getattr(ridge_line, f"{short}_learned"))
        out["s2"][k, :m] = s2
        out["s2_reference"][k, :m] = s2 * beta / alpha
        for name in ("linear_learned", "cubic_learned", "droplet_fraction"):
            out[name][k, :m] = ds[name].values
            out[f"{name}_sem"][k, :m] = ds[f"{name}_sem"].values
        out["theory_linear_learned"][k, :m] = th_lin
        out["theory_cubic_learned"][k, :m] = th_cub
        # the theory's mass of p(q) beyond the simulation's own threshold (stored with the simulation)
        out["theory_droplet_fraction"][k, :m] = ds["theory_droplet_fraction"].values
        b, c = np.asarray(points.b), np.asarray(points.c)
        out["theory_test_mse"][k, :m] = b**2 + 6.0 * c**2
        out["test_mse"][k, :m] = ds["test_mse"].values
        out["ensemble_test_mse"][k, :m] = ds["ensemble_test_mse"].values
        for short, name in (("linear", "linear_learned"), ("cubic", "cubic_learned"), ("droplet", "droplet_fraction")):
            sem = out[f"{name}_sem"][k, :m]
            diff = out[name][k, :m] - out[f"theory_{name}"][k, :m]
            out[f"z_{short}"][k, :m] = np.where(sem > 0, diff / np.where(sem > 0, sem, 1.0), np.inf * np.sign(diff))
        bl, bc = lr_bias_estimate(ds)
        out["lr_bias_linear"][k, :m], out["lr_bias_cubic"][k, :m] = bl, bc
        # densities on a common q grid
        centres = 0.5 * (q_grid[1:] + q_grid[:-1])
        for i in range(m):
            qq, mlp, err = q_density(ds, i)
            sim_mlp[k, i] = np.interp(centres, qq, mlp, left=np.nan, right=np.nan)
            sim_mlp_err[k, i] = np.interp(centres, qq, err, left=np.nan, right=np.nan)
            # keep only centres that coincide with a populated simulation bin
            width = float(np.diff(np.asarray(ds["q_edges"].values)).mean())
            near = np.min(np.abs(centres[:, None] - qq[None, :]), axis=1) < 0.5 * width
            sim_mlp[k, i, ~near] = np.nan
            sim_mlp_err[k, i, ~near] = np.nan
            qd, lpd = np.asarray(dens.q[i]), np.asarray(dens.log_p[i])
            th_mlp[k, i] = -np.interp(q_grid, qd, lpd)
        labels.append(f"beta={beta:g}: N={ds.attrs['N']} d={ds.attrs['d']} n={ds.attrs['n']}")
    # the scaling-limit transition of the beta = 1 configuration (the same for every beta)
    ds0 = sims[0]
    beta0, alpha0 = betas[0], alphas[0]
    ref = ts.TeacherStudentParams(s2=0.14, sw2=float(ds0.attrs["param_sw2"]), eps=float(ds0.attrs["param_eps"]),
                                  N=float(ds0.attrs["N"]) / beta0, n=float(ds0.attrs["n"]) / alpha0,
                                  d=float(ds0.attrs["d"]) / np.sqrt(beta0), sa2=float(ds0.attrs["sa2"]) * np.sqrt(beta0))
    tr = ts.solve_transition(ref, along="s2", approximation=primary)
    extra_attrs = {}
    for a in others:
        tr2 = ts.solve_transition(ref, along="s2", approximation=a)
        extra_attrs[f"limit_s2_c_{a}"] = float(tr2.value) if bool(np.asarray(tr2.found)) else float("nan")
    extra_attrs[f"limit_s2_c_{primary}"] = float(tr.value) if bool(np.asarray(tr.found)) else float("nan")
    data = {name: (("sim", "point"), v) for name, v in {**out, **fin_out}.items()}
    data.update({name: (("sim", "s2_line" if name.endswith("_line") else "point"), v) for name, v in ridge_out.items()})
    if fin_out:
        data["finite_n_same_seed"] = (("sim",), np.asarray(fin_same_data, np.int8))
    for a in others:
        for name, v in extra_vals[a].items():
            data[name] = (("sim", "s2_line" if name.endswith("_line") else "point"), v)
    data["theory_s2_line"] = (("sim", "s2_line"), line_s2)
    data["theory_s2_line_reference"] = (("sim", "s2_line"), line_s2 * (np.asarray(betas) / np.asarray(alphas))[:, None])
    data["theory_linear_learned_line"] = (("sim", "s2_line"), line_lin)
    data["theory_cubic_learned_line"] = (("sim", "s2_line"), line_cub)
    data["sim_minus_log_p"] = (("sim", "point", "q_bin"), sim_mlp)
    data["sim_minus_log_p_err"] = (("sim", "point", "q_bin"), sim_mlp_err)
    data["theory_minus_log_p"] = (("sim", "point", "q"), th_mlp)
    cmp = xr.Dataset(data, coords={"beta": (("sim",), np.asarray(betas)), "alpha": (("sim",), np.asarray(alphas)),
                                   "q": q_grid, "q_bin": 0.5 * (q_grid[1:] + q_grid[:-1])})

    return annotate(cmp, kind="analysis.teacher_student.compare",
                    parameters={"sims": labels, "theory_file": theory is not None,
                                "approximations": list(approximations), "finite_n_files": len(finite_n),
                                **({"corrections": list(corrections)} if corrections else {})},
                    extra={"limit_s2_c": float(tr.value) if bool(np.asarray(tr.found)) else float("nan"),
                           "approximation": primary, **diagnostics_extra(sims),
                           "z_against": (f"{primary} finite-d theory" if theory is None else
                                         f"the --theory file's {theory.attrs.get('approximation', '')} finite-d "
                                         f"sweep".replace("  ", " ")), "approximations": " ".join(approximations), **extra_attrs,
                           "sim_attrs_json": json.dumps([{k: str(v) for k, v in ds.attrs.items()
                                                          if k.startswith("param_") or k in ("N", "n", "d", "sa2",
                                                          "git_revision", "seconds")} for ds in sims])})


def z_against(cmp: xr.Dataset) -> str:
    """Which theory the z-scores of a teacher-student comparison are against (its theory values): the
    ``approximation`` finite-d theory at the simulated sizes, or the sweep of a ``--theory`` file."""
    if "z_against" in cmp.attrs:
        return str(cmp.attrs["z_against"])
    if parameters_of(cmp).get("theory_file"):
        return "the --theory file's finite-d sweep"
    return f"{cmp.attrs.get('approximation', 'concentrated')} finite-d theory"


def compare_summary(cmp: xr.Dataset) -> dict:
    """JSON: per simulation (beta) and s2, simulated and theoretical values and z-scores (against the
    theory ``z_against`` names); a single-index comparison: :func:`compare_single_index_summary`."""
    if cmp.attrs.get("grokphase_kind") == SINGLE_INDEX_KIND:
        return compare_single_index_summary(cmp)
    rows = []
    for k in range(cmp.sizes["sim"]):
        for i in range(cmp.sizes["point"]):
            s2 = float(cmp["s2"].values[k, i])
            if not np.isfinite(s2):
                continue
            row = {"beta": float(cmp["beta"].values[k]), "s2": s2, "s2_reference": float(cmp["s2_reference"].values[k, i])}
            for name in ("linear_learned", "cubic_learned", "droplet_fraction"):
                row[f"sim_{name}"] = float(cmp[name].values[k, i])
                row[f"sim_{name}_sem"] = float(cmp[f"{name}_sem"].values[k, i])
                row[f"theory_{name}"] = float(cmp[f"theory_{name}"].values[k, i])
            for short in ("linear", "cubic", "droplet"):
                row[f"z_{short}"] = float(cmp[f"z_{short}"].values[k, i])
            row["lr_bias_linear"] = float(cmp["lr_bias_linear"].values[k, i])
            row["lr_bias_cubic"] = float(cmp["lr_bias_cubic"].values[k, i])
            row["sim_test_mse"] = float(cmp["test_mse"].values[k, i])
            row["sim_ensemble_test_mse"] = float(cmp["ensemble_test_mse"].values[k, i])
            row["theory_test_mse_ek"] = float(cmp["theory_test_mse"].values[k, i])
            for name in cmp.data_vars:
                if name.startswith("theory_") and name.count("_") >= 3 and not name.endswith("_line") \
                        and name.split("_")[1] in ("exact", "concentrated"):
                    row[name] = float(cmp[name].values[k, i])
            if "finite_n_cubic_learned" in cmp:
                for name in FINITE_N_VARS + FINITE_N_LOOP_VARS + FINITE_N_PAIRED_VARS:
                    if name in cmp:
                        row[name] = float(cmp[name].values[k, i])
            for name in RIDGE_COMPARE_VARS:
                if name in cmp:
                    row[name] = float(cmp[name].values[k, i])
            rows.append(_mark(row, cmp, k, s2, TS_OBSERVABLES))
    out = {"points": rows, "limit_s2_c": cmp.attrs.get("limit_s2_c"),
           "approximation": cmp.attrs.get("approximation", "concentrated"), "z_against": z_against(cmp)}
    for a in ("exact", "concentrated"):
        if f"limit_s2_c_{a}" in cmp.attrs:
            out[f"limit_s2_c_{a}"] = float(cmp.attrs[f"limit_s2_c_{a}"])
    return out


# ---------------------------------------------------------------------------------------------------
# modular addition: Langevin branches against the theory


MODULAR_CONVENTIONS = ("paper", "network")


def _modular_params(ds: xr.Dataset):
    """(N, P, sa2, gamma) of a modular simulation, checked to be a Langevin run the theory describes."""
    if ds.attrs.get("grokphase_kind") != "sims.modular":
        raise ResultFileError("compare modular needs simulation files written by `grokphase sim modular`")
    if ds.attrs.get("param_optimizer") != "langevin" or ds.attrs.get("param_parametrisation") != "paper":
        raise ResultFileError("the modular theory describes Langevin runs of the paper parametrisation; this file is "
                              f"{ds.attrs.get('param_optimizer')} / {ds.attrs.get('param_parametrisation')}")
    if float(ds.attrs.get("param_alpha", 1.0)) != 1.0 or "alpha" in ds.dims:
        raise ResultFileError("the modular theory is for training on the whole table (alpha = 1)")
    if float(ds.attrs.get("param_gamma", 0.0)) <= 0.0:
        raise ResultFileError("the modular theory needs the sextic penalty: simulate with --gamma > 0")
    return (float(ds.attrs["param_N"]), float(ds.attrs["param_P"]), float(ds.attrs["sa2"]),
            float(ds.attrs["param_gamma"]))


def nngp_target_component(P: float, sa2: float, s2) -> np.ndarray:
    """Target component of the infinite-width GP (eq. 21: eigenvalue 4 sa2 on every target mode),
    4 sa2/(4 sa2 + s2), on the whole table."""
    return 4.0 * sa2 / (4.0 * sa2 + np.asarray(s2, np.float64))


def random_feature_target_component(P: int, N: int, sa2: float, s2, draws: int = 16, seed: int = 0):
    """The disordered branch at finite width: the posterior-mean target component of networks whose
    input weights are frozen at prior draws (w ~ N(0, 1)), i.e. Bayesian linear regression of the
    whole table on N random features h^2 with readout prior sa2/N — what a network that never leaves
    the Gaussian bulk learns.  Monte Carlo over ``draws`` prior draws (one eigendecomposition of
    F^T F each, then every s2 in closed form).  Returns (mean, standard error) arrays over s2.  It
    differs from the NNGP value by the O(fitted degrees of freedom / N) of a rank-N kernel (the
    (0, 0) and one-sided modes' large eigenvalues included)."""

    s2 = np.atleast_1d(np.asarray(s2, np.float64))
    P, N = int(P), int(N)
    pairs = all_pairs(P)
    ans = (pairs[:, 0] + pairs[:, 1]) % P
    y = np.eye(P)[ans] - 1.0 / P
    yy = float(np.sum(y * y))
    rng = np.random.default_rng(seed)
    vals = np.empty((draws, s2.size))
    for j in range(draws):
        w = rng.standard_normal((2 * P, N))
        F = (w[pairs[:, 0]] + w[P + pairs[:, 1]]) ** 2
        g, V = np.linalg.eigh(F.T @ F)
        B = V.T @ (F.T @ y)                                  # (N, P) projections of the targets
        energy = np.sum(B * B, axis=1)                        # per feature eigenvector
        g = np.maximum(g, 0.0)
        ridge = s2[:, None] * N / sa2
        # <F A, y> with A = (G + ridge)^-1 F^T y:  sum_j energy_j / (g_j + ridge)
        vals[j] = np.sum(energy[None, :] / (g[None, :] + ridge), axis=1) / yy
    return vals.mean(axis=0), sem(vals, axis=0, single=0.0)


def modular_theory_curves(N: float, P: float, sa2: float, gamma: float, s2: np.ndarray,
                          conventions: Sequence[str] = MODULAR_CONVENTIONS) -> dict:
    """The modular theory at one size along ``s2``, per convention: the finite-P equilibrium (exact
    quadrature) target component and droplet probability per mode, the fraction of neurons expected
    to carry a droplet in some mode, 1 - (1 - p)^K with K = (P - 1)//2 mode pairs (what the
    simulations' droplet rule counts, as one neuron holds at most one dominant frequency), and the
    P -> infinity equilibrium, superheated (ordered) and supercooled (disordered) branches."""

    s2 = np.asarray(s2, np.float64)
    K = max((int(round(P)) - 1) // 2, 1)
    params = mt.ModularParams(N=N, P=P, s2=s2, sa2=sa2, gamma=gamma)
    out = {}
    for conv in conventions:
        sol = mt.solve(params, "exact", convention=conv, check=False)
        lim = mt.solve_limit(params, convention=conv)
        p = np.clip(np.asarray(sol.droplet_fraction, np.float64), 0.0, 1.0)
        out[conv] = {
            "target_component": np.asarray(sol.target_component, np.float64),
            "droplet_probability": p,
            "droplet_neurons": 1.0 - (1.0 - p) ** K,
            "limit_target_component": np.asarray(lim.target_component, np.float64),
            "superheated_target_component": 1.0 + np.asarray(lim.a_superheated, np.float64),
            "supercooled_target_component": 1.0 + np.asarray(lim.a_supercooled, np.float64),
            "status": np.asarray(sol.status),
        }
    return out


def compare_modular(sims: Sequence[xr.Dataset], conventions: Sequence[str] = MODULAR_CONVENTIONS,
                    num_line: int = 121, rf_draws: int = 16) -> xr.Dataset:
    """Modular Langevin simulations (any number of files, e.g. one per P; plain, cooling and heating
    branches) against the modular theory at exactly the simulated (N, P, sa2, gamma).

    Returns a Dataset with one entry per simulated point (dims ``point``; coords run, P, branch, s2):
    the simulated time-averaged target component (Rao-Blackwellised: the readout's conditional mean,
    when recorded) and droplet fraction (neurons counted by the droplet rule) with their standard
    errors over networks, the mean IPR, the theory's finite-P equilibrium values for each convention,
    the disordered branch at the simulated width (:func:`random_feature_target_component`) and the
    NNGP value, and the z-scores (sim - reference)/SEM; and theory lines (dims run, convention,
    s2_line) of the equilibrium, both metastable branches and the expected droplet-neuron fraction."""

    if not sims:
        raise ResultFileError("compare modular needs at least one simulation file")
    for conv in conventions:
        if conv not in MODULAR_CONVENTIONS:
            raise ResultFileError(f"unknown convention {conv!r}; choose from {', '.join(MODULAR_CONVENTIONS)}")
    sizes = [_modular_params(ds) for ds in sims]
    lo = min(float(ds["s2"].min()) for ds in sims)
    hi = max(float(ds["s2"].max()) for ds in sims)
    pad = 0.1 * (hi - lo) if hi > lo else 0.1 * lo
    s2_line = np.linspace(max(lo - pad, 1e-3), hi + pad, num_line)
    rows: dict[str, list] = {k: [] for k in ("run", "P", "N", "branch", "s2", "sim_target_component",
                                             "sim_target_component_sem", "sim_droplet_fraction",
                                             "sim_droplet_fraction_sem", "sim_ipr", "networks")}
    theory_pts: dict[str, list] = {}
    lines: dict[str, list] = {}
    for r, (ds, (N, P, sa2, gamma)) in enumerate(zip(sims, sizes)):
        branches = [str(b) for b in ds["branch"].values] if "branch" in ds.dims else ["independent"]
        s2 = np.asarray(ds["s2"].values, np.float64)
        at_pts = modular_theory_curves(N, P, sa2, gamma, s2, conventions)
        at_line = modular_theory_curves(N, P, sa2, gamma, s2_line, conventions)
        rf_line, rf_line_se = random_feature_target_component(P, N, sa2, s2_line, draws=rf_draws)
        rf_pts, rf_pts_se = random_feature_target_component(P, N, sa2, s2, draws=rf_draws)
        lines.setdefault("rf_target_component", []).append(rf_line)
        lines.setdefault("nngp_target_component", []).append(nngp_target_component(P, sa2, s2_line))
        for conv in conventions:
            for name, v in at_line[conv].items():
                if name != "status":
                    lines.setdefault(name, []).append(v)
        for b in branches:
            part = ds.sel(branch=b) if "branch" in ds.dims else ds
            for i, v in enumerate(s2):
                rows["run"].append(r)
                rows["P"].append(P)
                rows["N"].append(N)
                rows["branch"].append(b)
                rows["s2"].append(v)
                for name in ("target_component", "droplet_fraction"):
                    src = f"{name}_mean" if f"{name}_mean" in part else name    # Rao-Blackwellised if recorded
                    rows[f"sim_{name}"].append(float(part[src].values[i]))
                    rows[f"sim_{name}_sem"].append(float(part[f"{src}_sem"].values[i]))
                rows["sim_ipr"].append(float(part["ipr"].values[i]))
                rows["networks"].append(int(part.sizes["seed"]))
                for conv in conventions:
                    for name in ("target_component", "droplet_neurons"):
                        theory_pts.setdefault(f"theory_{conv}_{name}", []).append(float(at_pts[conv][name][i]))
                theory_pts.setdefault("rf_target_component", []).append(float(rf_pts[i]))
                theory_pts.setdefault("rf_target_component_sem", []).append(float(rf_pts_se[i]))
                theory_pts.setdefault("nngp_target_component", []).append(float(nngp_target_component(P, sa2, v)))
    data = {k: (("point",), np.asarray(v)) for k, v in rows.items() if k not in ("run", "P", "N", "branch", "s2")}
    for k, v in theory_pts.items():
        data[k] = (("point",), np.asarray(v))
    for conv in conventions:
        sem = np.maximum(np.asarray(rows["sim_target_component_sem"]), 1e-12)
        data[f"z_{conv}_target_component"] = (("point",), (np.asarray(rows["sim_target_component"])
                                                           - np.asarray(theory_pts[f"theory_{conv}_target_component"])) / sem)
    sim_tc = np.asarray(rows["sim_target_component"])
    sem_tot = np.sqrt(np.asarray(rows["sim_target_component_sem"]) ** 2 + np.asarray(theory_pts["rf_target_component_sem"]) ** 2)
    data["z_rf_target_component"] = (("point",), (sim_tc - np.asarray(theory_pts["rf_target_component"]))
                                     / np.maximum(sem_tot, 1e-12))
    R, C = len(sims), len(conventions)
    for name, v in lines.items():
        if name in ("rf_target_component", "nngp_target_component"):
            data[f"line_{name}"] = (("run", "s2_line"), np.asarray(v))
        else:
            data[f"line_{name}"] = (("run", "convention", "s2_line"), np.asarray(v).reshape(R, C, -1))
    coords = {"point": np.arange(len(rows["s2"])), "run": np.arange(R), "convention": list(conventions),
              "s2_line": s2_line, "point_run": ("point", np.asarray(rows["run"])),
              "point_P": ("point", np.asarray(rows["P"])), "point_branch": ("point", np.asarray(rows["branch"])),
              "point_s2": ("point", np.asarray(rows["s2"])),
              "run_P": ("run", np.asarray([s[1] for s in sizes])), "run_N": ("run", np.asarray([s[0] for s in sizes]))}
    cmp = xr.Dataset(data, coords=coords)
    params = {"sims": [json.loads(ds.attrs.get("parameters_json", "{}")) for ds in sims],
              "conventions": list(conventions)}
    return annotate(cmp, kind="analysis.modular.compare", parameters=params,
                    extra={"sizes_json": json.dumps([dict(N=s[0], P=s[1], sa2=s[2], gamma=s[3]) for s in sizes]),
                           **diagnostics_extra(sims)})


def compare_modular_summary(cmp: xr.Dataset) -> dict:
    """JSON of :func:`compare_modular`: one row per simulated point with both theories and z-scores."""
    convs = [str(c) for c in cmp["convention"].values]
    pts = []
    for j in range(cmp.sizes["point"]):
        row = {"P": float(cmp["point_P"].values[j]), "branch": str(cmp["point_branch"].values[j]),
               "s2": float(cmp["point_s2"].values[j]), "networks": int(cmp["networks"].values[j])}
        for name in ("sim_target_component", "sim_target_component_sem", "sim_droplet_fraction",
                     "sim_droplet_fraction_sem", "sim_ipr"):
            row[name] = float(cmp[name].values[j])
        for conv in convs:
            row[f"theory_{conv}_target_component"] = float(cmp[f"theory_{conv}_target_component"].values[j])
            row[f"theory_{conv}_droplet_neurons"] = float(cmp[f"theory_{conv}_droplet_neurons"].values[j])
            row[f"z_{conv}"] = float(cmp[f"z_{conv}_target_component"].values[j])
        for name in ("rf_target_component", "rf_target_component_sem", "nngp_target_component"):
            row[name] = float(cmp[name].values[j])
        row["z_rf"] = float(cmp["z_rf_target_component"].values[j])
        branch = {} if row["branch"] == "independent" else {"branch": row["branch"]}
        pts.append(_mark(row, cmp, int(cmp["point_run"].values[j]), row["s2"], MODULAR_OBSERVABLES, **branch))
    return {"points": pts, "conventions": convs}
