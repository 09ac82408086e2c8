r"""Umbrella sampling along a model's order parameter (THEORY.md §7), for MBAR free-energy profiles.

A model's task declares an order parameter m(theta, data, hyper), linear in the readout for fixed
first-layer weights (:class:`grokphase.sims.driver.Task`: ``order_parameter``, ``order_parameter_name``;
modular: the target component m = (f, y)/(y, y) on the whole table; teacher-student: the learned
fraction of one target degree, ``learned_<k>``).  Window j adds U_j = (kappa_j/2)(m - m0_j)^2 to
-log posterior, i.e. s2 U_j to the engine's potential (:func:`grokphase.sims.driver.umbrella_bias`);
(kappa_j, m0_j) are per-member array leaves of the hyperparameters (``umbrella_kappa``,
``umbrella_m0``), so every window is one more ensemble axis of one vmapped ensemble with one compile,
and the engine's chunks, devices, checkpoints, resumption and progress work unchanged.

**Options** (fields of the model's simulation config, the ``[[sim]]`` tables and the CLI):
``umbrella_m0`` (window centres) with ``umbrella_kappa`` (one value, or one per window, in
log-posterior units; 0 is an unbiased window); or ``umbrella_range`` = (lo, hi) with an optional
``umbrella_windows`` count and optional ``umbrella_kappa`` (:func:`plan_windows` chooses the rest from
pilot runs); ``umbrella_start`` = "prior" | "ordered" | "both" ("both": every window from the prior and
from the model's ordered start, a ``start`` dimension, for hidden hysteresis).  Windows need Langevin
and the independent protocol (no anneal, no replica exchange); :func:`check_options` says so.

**Members** (the driver's member axis): s2-major, then start, then window, then unit (modular:
seed; teacher-student: dataset x init).  Every window of a unit uses the unit's data key (the same
posterior), and init and noise keys folded with (start tag, window index), so windows are independent
chains; the keys do not depend on s2 (common random numbers across s2, as in plain runs).

**The Dataset** (the contract MBAR reads; :func:`umbrella_dataset`): dims ``s2``, [``start``],
``window``, the unit dims, ``time`` (step numbers); ``order_parameter_trajectory`` (..., time) float64
= m at every record; ``potential_trajectory`` (..., time) float64 = L = 1/2 sum_mu (f(x_mu) - y_mu)^2
over the training data (the sampled likelihood term, without prior, penalty or bias); coords
``window_m0``, ``window_kappa`` (window); attrs ``umbrella`` = 1, ``umbrella_order_parameter``,
``umbrella_system_dims`` (the dims indexing different posteriors), ``umbrella_start``,
``umbrella_plan`` ("explicit" or "auto", with the plan's numbers), ``protocol`` = "umbrella", and the
model's usual attributes (param_*, parameters_json, seeds, provenance).  A diagnostic beside them:
``bias_stiffness_trajectory`` = eta s2 kappa |grad_z m|^2 over the Langevin-moved parameters (the
discrete chain's stability along grad m: keep it well below 1; its maximum is the attribute
``umbrella_max_bias_stiffness``, and a run above :data:`STIFFNESS_WARNING` warns).  Every other variable of the
model's plain Dataset is kept, built per (start, window) and stacked, so its summaries gain the
window (and start) dimensions.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.sims.driver import (Checkpointer, Members, RunOutput, Task, _chunk_key, prior_z, run_ensemble,
                                   write_timing)

#: where each window starts: the prior, the model's ordered start, or both (a ``start`` dimension)
UMBRELLA_STARTS = ("prior", "ordered", "both")
#: the umbrella options and their defaults (left out of a config's ``parameters()`` at these values, so
#: that plain runs keep their checkpoint and result hashes)
UMBRELLA_DEFAULTS = {"umbrella_m0": None, "umbrella_kappa": None, "umbrella_start": "prior", "umbrella_range": None,
                     "umbrella_windows": None}
#: fold_in tags of the init and noise keys per start (then the window index is folded in)
START_TAGS = {"prior": 3, "ordered": 4}
#: the plan's kappa: at least KAPPA_FACTOR / Var(m) of the disordered phase (the bias dominates the
#: unbiased curvature there, so a window holds m near m0 even on a concave stretch of F(m))
KAPPA_FACTOR = 4.0
#: the plan's spacing: neighbouring windows at most OVERLAP_SIGMAS window standard deviations apart
OVERLAP_SIGMAS = 2.0
#: the most windows a plan may ask for
MAX_WINDOWS = 256


def is_umbrella(sim) -> bool:
    """Whether ``sim`` asks for umbrella windows (explicit centres or a planned range)."""
    return getattr(sim, "umbrella_m0", None) is not None or getattr(sim, "umbrella_range", None) is not None


def _floats(sim, name: str) -> tuple | None:
    value = getattr(sim, name)
    if value is None:
        return None
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} must be a non-empty list of finite numbers, got {value!r}")
    out = tuple(float(v) for v in arr)
    object.__setattr__(sim, name, out)
    return out


def check_options(sim, ordered_problem: str | None = None) -> None:
    """Validate (and normalise to tuples) the umbrella options of a simulation config in its
    ``__post_init__``: one-line ParameterErrors for values out of range and for combinations that make
    no sense.  ``ordered_problem``: why the model has no ordered start for this config (None: it has
    one)."""
    m0, kappa, rng = (_floats(sim, name) for name in ("umbrella_m0", "umbrella_kappa", "umbrella_range"))
    windows = sim.umbrella_windows
    if sim.umbrella_start not in UMBRELLA_STARTS:
        raise ParameterError(f"unknown umbrella_start {sim.umbrella_start!r}; choose from {', '.join(UMBRELLA_STARTS)}")
    if m0 is None and rng is None:
        for name in ("umbrella_kappa", "umbrella_windows"):
            if getattr(sim, name) is not None:
                raise ParameterError(f"{name} applies only to umbrella windows: give umbrella_m0 (or umbrella_range)")
        if sim.umbrella_start != "prior":
            raise ParameterError("umbrella_start applies only to umbrella windows: give umbrella_m0 (or umbrella_range)")
        return
    if m0 is not None and rng is not None:
        raise ParameterError("give umbrella_m0 (explicit window centres) or umbrella_range (planned windows), not both")
    if windows is not None:
        if rng is None:
            raise ParameterError("umbrella_windows (a count of planned windows) needs umbrella_range")
        if isinstance(windows, bool) or not float(windows).is_integer() or not 2 <= windows <= MAX_WINDOWS:
            raise ParameterError(f"umbrella_windows must be an integer in [2, {MAX_WINDOWS}], got {windows!r}")
        object.__setattr__(sim, "umbrella_windows", int(windows))
    if rng is not None and (len(rng) != 2 or not rng[0] < rng[1]):
        raise ParameterError(f"umbrella_range must be two numbers lo < hi, got {list(rng)}")
    if m0 is not None and kappa is None:
        raise ParameterError("umbrella_m0 needs umbrella_kappa (the windows' stiffness in log-posterior units; or give "
                             "umbrella_range for planned windows)")
    if kappa is not None:
        if any(k < 0 for k in kappa):
            raise ParameterError(f"umbrella_kappa must be >= 0 (log-posterior units), got {list(kappa)}")
        allowed = (1,) if m0 is None else (1, len(m0))
        if len(kappa) not in allowed:
            raise ParameterError(f"umbrella_kappa must be one value or one per window ({len(m0)} windows), "
                                 f"got {len(kappa)}" if m0 is not None else
                                 f"umbrella_kappa with umbrella_range must be one value, got {len(kappa)}")
    if sim.optimizer != "langevin":
        raise ParameterError("umbrella windows bias the Langevin posterior: they need optimizer langevin")
    if sim.anneal != "none":
        raise ParameterError("umbrella windows and anneal are separate protocols; choose one")
    if sim.replica_exchange:
        raise ParameterError("umbrella windows and replica exchange are separate protocols; choose one")
    if sim.start != "auto":
        raise ParameterError("umbrella windows choose their start with umbrella_start (prior, ordered or both), "
                             "not start")
    if sim.umbrella_start != "prior" and ordered_problem is not None:
        raise ParameterError(f"umbrella_start {sim.umbrella_start}: {ordered_problem}")


def umbrella_parameters(out: dict) -> dict:
    """``parameters()`` without the umbrella options at their defaults (plain runs keep their hashes)."""
    for name, default in UMBRELLA_DEFAULTS.items():
        if name in out and out[name] == default:
            del out[name]
    for name in ("umbrella_m0", "umbrella_kappa", "umbrella_range"):
        if out.get(name) is not None:
            out[name] = list(out[name])
    return out


def starts_of(sim) -> list[str]:
    """The starts of an umbrella run, in the order of the ``start`` dimension."""
    return ["prior", "ordered"] if sim.umbrella_start == "both" else [sim.umbrella_start]


def explicit_windows(sim) -> tuple[np.ndarray, np.ndarray]:
    """(m0, kappa) per window of explicit options (kappa broadcast to every window)."""
    m0 = np.asarray(sim.umbrella_m0, np.float64)
    kappa = np.broadcast_to(np.asarray(sim.umbrella_kappa, np.float64), m0.shape).copy()
    return m0, kappa


# ---------------------------------------------------------------------------------------------
# members and the run


def _fold(keys, tag: int) -> np.ndarray:
    return np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, tag))(jnp.asarray(keys)))


def build_umbrella_members(model, sim, m0, kappa, starts: list[str]) -> tuple[Members, list[str]]:
    """Every (s2, start, window, unit) network (module docstring: member layout and keys), with the
    window's (kappa, m0) in ``hyper.umbrella_kappa`` / ``hyper.umbrella_m0``; and a label per member."""
    data_k, init_k, noise_k = model.unit_keys(sim)
    K, J, St, S = int(np.shape(data_k)[0]), len(m0), len(starts), len(sim.s2)
    inits, noises = [], []
    for start in starts:
        i_s, n_s = _fold(init_k, START_TAGS[start]), _fold(noise_k, START_TAGS[start])
        for j in range(J):
            inits.append(_fold(i_s, j))
            noises.append(_fold(n_s, j))
    block = lambda parts: np.tile(np.concatenate(parts), (S, 1))  # noqa: E731  (start, window, unit) per s2
    data = np.tile(np.asarray(data_k), (S * St * J, 1))
    s2 = np.repeat(np.asarray(sim.s2, np.float64), St * J * K)
    hyper = model.hyper(sim)(s2)
    per_s2 = lambda v: np.tile(np.repeat(np.asarray(v, np.float64), K), S * St)  # noqa: E731
    hyper = hyper._replace(umbrella_kappa=per_s2(kappa), umbrella_m0=per_s2(m0))
    labels = [f"umbrella network (s2={sim.s2[s]:g}, {start} start, window {j} m0={m0[j]:g} kappa={kappa[j]:g}, "
              f"{model.unit_label(sim, k)})" for s in range(S) for start in starts for j in range(J) for k in range(K)]
    return Members(data, block(inits), block(noises), hyper), labels


def _member_index(S: int, St: int, J: int, K: int, t: int, j: int) -> np.ndarray:
    """Members of start t and window j, s2-major then unit (the layout of a plain run)."""
    return np.asarray([((s * St + t) * J + j) * K + k for s in range(S) for k in range(K)])


def _initial_z(model, sim, task: Task, members: Members, starts: list[str], J: int, K: int) -> tuple[Any, dict]:
    """The ordered members' start (one call of the model's ordered start for all of them) and the prior
    for the rest; (None, {}) when every member starts from the prior."""
    if "ordered" not in starts:
        return None, {}
    M = len(members.data_keys)
    block = np.arange(M) // (J * K) % len(starts)
    ordered = np.flatnonzero(block == starts.index("ordered"))
    z0 = {k: np.asarray(v).copy() for k, v in prior_z(task, members).items()}
    part = jax.tree_util.tree_map(lambda a: np.asarray(a)[ordered], members)
    z_ord, info = model.start_ordered(sim, part, task)
    for k in z0:
        z0[k][ordered] = np.asarray(z_ord[k], z0[k].dtype)
    return z0, info


def _run_members(model, sim, task: Task, m0, kappa, starts, *, devices=None, ensemble_chunk=None,
                 checkpoint: Checkpointer | None = None, progress: bool = False, desc: str = "umbrella",
                 stop_after_records: int | None = None) -> tuple[RunOutput, Members, dict]:
    members, labels = build_umbrella_members(model, sim, m0, kappa, starts)
    K = int(np.shape(model.unit_keys(sim)[0])[0])
    z0, info = _initial_z(model, sim, task, members, starts, len(m0), K)
    out = run_ensemble(task, members, sim.schedule, ensemble_chunk=ensemble_chunk, devices=devices,
                       checkpoint=checkpoint, member_labels=labels, progress=progress,
                       progress_desc=f"{model.describe(sim)} {desc}", stop_after_records=stop_after_records,
                       initial_z=z0)
    return out, members, info


def run_umbrella(model, sim, task: Task, *, devices=None, ensemble_chunk: int | None = None,
                 checkpoint_dir: str | None = None, checkpoint_every: float = 60.0, progress: bool = False,
                 stop_after_records: int | None = None) -> xr.Dataset:
    """Run the umbrella windows of ``sim`` (explicit, or planned by :func:`plan_windows` from
    ``umbrella_range``) as one ensemble and return the umbrella Dataset (module docstring)."""
    if not task.umbrella or task.order_parameter is None:
        raise ParameterError(f"{model.kind}: the task was built without umbrella windows (make_task of the umbrella sim)")
    plan_attrs: dict = {"umbrella_plan": "explicit"}
    if sim.umbrella_m0 is not None:
        m0, kappa = explicit_windows(sim)
    else:
        plan = plan_windows(model, sim, task, devices=devices, ensemble_chunk=ensemble_chunk, progress=progress)
        m0, kappa = plan.m0, plan.kappa
        plan_attrs = plan.attrs()
    starts = starts_of(sim)
    ckpt = None
    if checkpoint_dir is not None:
        n_members = len(sim.s2) * len(starts) * len(m0) * int(np.shape(model.unit_keys(sim)[0])[0])
        config = {**model.checkpoint_config(sim, "umbrella", _chunk_key(ensemble_chunk, n_members, devices)),
                  "protocol": "umbrella", "umbrella_windows_m0": [float(v) for v in m0],
                  "umbrella_windows_kappa": [float(v) for v in kappa]}
        ckpt = Checkpointer(checkpoint_dir, config, every_seconds=checkpoint_every)
    out, members, info = _run_members(model, sim, task, m0, kappa, starts, devices=devices,
                                      ensemble_chunk=ensemble_chunk, checkpoint=ckpt, progress=progress,
                                      stop_after_records=stop_after_records)
    ds = umbrella_dataset(model, sim, task, out, members, m0, kappa, starts)
    ds.attrs.update(plan_attrs)
    for name, value in info.items():
        ds.attrs[f"ordered_{name}"] = value
    write_timing(ds, out.seconds, out.network_steps, out.segments, out.resumed)
    warn_if_stiff(ds, model.describe(sim))
    return ds


#: the largest bias stiffness eta s2 kappa |grad m|^2 accepted without a warning (variance error < 1/3)
STIFFNESS_WARNING = 0.5


def warn_if_stiff(ds: xr.Dataset, where: str) -> None:
    """Warn (RuntimeWarning and stderr) when some window's bias is too stiff for the learning rate."""
    worst = float(ds.attrs["umbrella_max_bias_stiffness"])
    if worst > STIFFNESS_WARNING:
        text = (f"{where} umbrella: the bias stiffness eta s2 kappa |grad m|^2 reached {worst:.3g} (> "
                f"{STIFFNESS_WARNING}): the discrete chain misrepresents the window (unstable above 2); lower lr or "
                "kappa")
        warnings.warn(text, RuntimeWarning, stacklevel=2)
        print(f"WARNING: {text}", file=sys.stderr)


def _part(out: RunOutput, members: Members, idx: np.ndarray) -> tuple[RunOutput, Members]:
    take = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], tree)  # noqa: E731
    part = out._replace(records=take(out.records), accum=take(out.accum), z=take(out.z))
    return part, Members(*(np.asarray(k)[idx] for k in members[:3]), take(members.hyper))


def umbrella_dataset(model, sim, task: Task, out: RunOutput, members: Members, m0, kappa, starts: list[str]
                     ) -> xr.Dataset:
    """The umbrella Dataset (module docstring): the model's plain Dataset of every (start, window),
    stacked along ``window`` (and ``start``), with the MBAR inputs and attributes."""
    unit = model.unit_dims(sim)
    S, J, St, K = len(sim.s2), len(m0), len(starts), int(np.prod(list(unit.values())))
    T = out.record_steps.size
    dims = ("s2", *unit, "time")
    by_start = []
    for t in range(St):
        parts = []
        for j in range(J):
            part_out, part_members = _part(out, members, _member_index(S, St, J, K, t, j))
            part = model.build_dataset(sim, part_out, task, part_members)
            for record, name in (("order_parameter", "order_parameter_trajectory"),
                                 ("potential", "potential_trajectory"), ("bias_stiffness", "bias_stiffness_trajectory")):
                values = np.asarray(part_out.records[record], np.float64).reshape(S, *unit.values(), T)
                part[name] = (dims, values)
            parts.append(part)
        ds = xr.concat(parts, dim="window", data_vars="all", coords="minimal", combine_attrs="override")
        for name in model.ladder_shared:
            ds[name] = parts[0][name]
        by_start.append(ds)
    ds = by_start[0]
    if St > 1:
        ds = xr.concat(by_start, dim="start", data_vars="all", coords="minimal", combine_attrs="override")
        for name in model.ladder_shared:
            ds[name] = by_start[0][name]
        ds = ds.assign_coords(start=list(starts))
    ds = ds.assign_coords(window=np.arange(J), window_m0=("window", np.asarray(m0, np.float64)),
                          window_kappa=("window", np.asarray(kappa, np.float64)))
    ds = ds.transpose("s2", *(("start",) if "start" in ds.dims else ()), "window", ...)
    ds["order_parameter_trajectory"].attrs["long_name"] = f"order parameter m = {task.order_parameter_name} at every record"
    ds["potential_trajectory"].attrs["long_name"] = ("L = 1/2 sum over the training data of (f - y)^2 at every record "
                                                     "(without prior, penalty or bias)")
    ds["bias_stiffness_trajectory"].attrs["long_name"] = (
        "eta s2 kappa |grad_z m|^2 over the Langevin-moved parameters: the discrete chain is stable along grad m "
        "below 2, with a variance error factor 1/(1 - x/2) there")
    ds["window_kappa"].attrs["long_name"] = "window stiffness kappa of U = (kappa/2)(m - m0)^2, log-posterior units"
    ds["window_m0"].attrs["long_name"] = "window centre m0"
    ds.attrs["umbrella_max_bias_stiffness"] = float(np.nanmax(ds["bias_stiffness_trajectory"].values))
    ds.attrs.update(umbrella=1, umbrella_order_parameter=str(task.order_parameter_name),
                    umbrella_system_dims=str(model.system_dims(sim)), umbrella_start=str(sim.umbrella_start),
                    protocol="umbrella")
    return ds


# ---------------------------------------------------------------------------------------------
# automatic windows


class WindowPlan(NamedTuple):
    """Windows chosen by :func:`plan_windows`: centres ``m0`` and stiffnesses ``kappa`` (J,), and what
    they were chosen from: Var(m) in the pilots from the prior (``var_prior``) and from the ordered start
    (``var_ordered``, NaN without one), the expected standard deviation of m in a window
    (``window_std``), the spacing, the pilot length and the rule's constants."""

    m0: np.ndarray
    kappa: np.ndarray
    var_prior: float
    var_ordered: float
    window_std: float
    spacing: float
    pilot_steps: int
    kappa_factor: float
    overlap_sigmas: float
    kappa_given: bool

    def attrs(self) -> dict:
        return {"umbrella_plan": "auto", "umbrella_plan_var_prior": float(self.var_prior),
                "umbrella_plan_var_ordered": float(self.var_ordered),
                "umbrella_plan_window_std": float(self.window_std), "umbrella_plan_spacing": float(self.spacing),
                "umbrella_plan_pilot_steps": int(self.pilot_steps),
                "umbrella_plan_kappa_factor": float(self.kappa_factor),
                "umbrella_plan_overlap_sigmas": float(self.overlap_sigmas),
                "umbrella_plan_kappa": "given" if self.kappa_given else "planned"}


def pilot_variances(model, sim, task: Task, *, pilot_steps: int | None = None, devices=None, ensemble_chunk=None,
                    progress: bool = False) -> tuple[float, float, int]:
    """Var(m) of unbiased pilot runs (one kappa = 0 window) from the prior and, where the model has one,
    from the ordered start: the within-chain variance of m over the records after the pilot's burn-in
    (half the pilot), averaged over units, the smallest over s2.  Returns (var_prior, var_ordered (NaN
    without an ordered start), pilot_steps).  Default pilot: a quarter of ``sim.steps``, at least 200."""
    steps = int(pilot_steps) if pilot_steps is not None else max(200, sim.steps // 4)
    base = dict(umbrella_m0=(0.0,), umbrella_kappa=(0.0,), umbrella_range=None, umbrella_windows=None, steps=steps,
                burn_in=steps // 2, record_every=max(1, steps // 40), log_times=False)
    try:
        pilot = dataclasses.replace(sim, umbrella_start="both", **base)
        out, _, _ = _run_members(model, pilot, task, np.zeros(1), np.zeros(1), starts_of(pilot), devices=devices,
                                 ensemble_chunk=ensemble_chunk, progress=progress, desc="umbrella pilot")
    except ParameterError:              # no ordered start for this model / at these s2: the prior alone
        pilot = dataclasses.replace(sim, umbrella_start="prior", **base)
        out, _, _ = _run_members(model, pilot, task, np.zeros(1), np.zeros(1), starts_of(pilot), devices=devices,
                                 ensemble_chunk=ensemble_chunk, progress=progress, desc="umbrella pilot")
    starts = starts_of(pilot)
    after = out.record_steps > pilot.burn_in
    m = np.asarray(out.records["order_parameter"], np.float64)[:, after]
    var = m.var(axis=1, ddof=1).reshape(len(sim.s2), len(starts), -1).mean(axis=2).min(axis=0)   # (starts,)
    var_ordered = float(var[1]) if len(starts) == 2 else float("nan")
    return float(var[0]), var_ordered, steps


def plan_windows(model, sim, task: Task, *, m_range=None, windows: int | None = None, kappa: float | None = None,
                 pilot_steps: int | None = None, kappa_factor: float = KAPPA_FACTOR,
                 overlap_sigmas: float = OVERLAP_SIGMAS, variances: tuple[float, float] | None = None,
                 devices=None, ensemble_chunk=None, progress: bool = False) -> WindowPlan:
    r"""Windows over ``m_range`` (default ``sim.umbrella_range``) from unbiased pilot runs
    (:func:`pilot_variances`; or the given ``variances`` = (Var_prior, Var_ordered)).

    * kappa = ``kappa`` (default ``sim.umbrella_kappa``) if given, else kappa_factor / Var_prior: the bias
      then outweighs the disordered basin's curvature 1/Var (log-posterior units) several times;
    * a window's m is then spread by about sigma_w = 1/sqrt(kappa + 1/Var_min) (Gaussian basins;
      Var_min the smaller of the two phases' variances, the stiffer basin) and neighbouring windows
      overlap when they are at most ``overlap_sigmas`` sigma_w apart (<= 2/sqrt(kappa) by default);
    * the count J = ``windows`` (default ``sim.umbrella_windows``) if given, else the fewest windows
      with that spacing, m0 evenly spaced over the range.  With a given count whose spacing is too wide
      a planned kappa is lowered to make the windows overlap, as long as it stays >= kappa_factor /
      Var_prior; otherwise a ParameterError names the count needed.

    Returns a :class:`WindowPlan` (its ``attrs()`` are written to the umbrella Dataset).  With
    ``variances`` given no pilot runs (``model``, ``sim`` and ``task`` are then only read for the
    defaults above and may be None when every argument is given)."""
    lo, hi = m_range if m_range is not None else sim.umbrella_range
    if windows is None and sim is not None:
        windows = sim.umbrella_windows
    given = kappa
    if given is None and sim is not None and sim.umbrella_kappa is not None:
        given = sim.umbrella_kappa[0]
    if variances is None:
        var_prior, var_ordered, steps = pilot_variances(model, sim, task, pilot_steps=pilot_steps, devices=devices,
                                                        ensemble_chunk=ensemble_chunk, progress=progress)
    else:
        (var_prior, var_ordered), steps = variances, 0
    if not (math.isfinite(var_prior) and var_prior > 0):
        raise ParameterError(f"the pilot's Var(m) from the prior is {var_prior!r}: cannot plan windows (give "
                             "umbrella_m0 and umbrella_kappa)")
    var_min = float(np.nanmin([var_prior, var_ordered])) if var_ordered > 0 else var_prior
    k = float(given) if given is not None else kappa_factor / var_prior
    std = 1.0 / math.sqrt(k + 1.0 / var_min)
    spacing_max = overlap_sigmas * std
    if windows is None:
        J = max(2, int(math.ceil((hi - lo) / spacing_max - 1e-9)) + 1)
        if J > MAX_WINDOWS:
            raise ParameterError(f"overlapping windows over [{lo:g}, {hi:g}] at kappa {k:.4g} need {J} windows "
                                 f"(> {MAX_WINDOWS}): narrow umbrella_range or lower umbrella_kappa")
    else:
        J = int(windows)
        spacing = (hi - lo) / (J - 1)
        if spacing > spacing_max * (1 + 1e-9):
            k_max = (overlap_sigmas / spacing) ** 2 - 1.0 / var_min
            need = int(math.ceil((hi - lo) / spacing_max - 1e-9)) + 1
            if given is not None or k_max < kappa_factor / var_prior:
                raise ParameterError(f"{J} windows over [{lo:g}, {hi:g}] are {spacing:.4g} apart, more than "
                                     f"{overlap_sigmas:g} window standard deviations ({std:.4g} at kappa {k:.4g}): "
                                     f"use umbrella_windows >= {need}")
            k = k_max
            std = 1.0 / math.sqrt(k + 1.0 / var_min)
    m0 = np.linspace(lo, hi, J)
    return WindowPlan(m0, np.full(J, k), var_prior, var_ordered, std, float(m0[1] - m0[0]), steps, kappa_factor,
                      overlap_sigmas, given is not None)
