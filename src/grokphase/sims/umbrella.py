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

**Several coordinates** (``umbrella_coordinates``: names the model declares, its primary first, e.g.
modular "target_component,ipr"): the bias is the sum of one harmonic term per coordinate, every option
is given per coordinate (:func:`check_options`) and the windows are the product grid of the
coordinates' windows (:func:`product_grid`, the first coordinate slowest); a plan plans each coordinate
from its own pilot variance.  Members then carry (C,) ``umbrella_kappa`` / ``umbrella_m0`` and the
task's ``order_parameter`` returns the (C,) coordinates (``Task.coordinate_names``).

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
model's usual attributes (param_*, parameters_json, seeds, provenance).  With C >= 2 coordinates
``order_parameter_trajectory`` and ``bias_stiffness_trajectory`` gain a ``coordinate`` dimension (before
``time``; labels: the names), ``window_m0`` and ``window_kappa`` are (window, coordinate) and the attribute
``umbrella_coordinates`` lists the names (space-separated); one coordinate keeps the layout above, bit
for bit.  A diagnostic beside them:
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
                     "umbrella_windows": None, "umbrella_coordinates": None}
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


def _names(sim, available: tuple[str, ...]) -> tuple[str, ...]:
    """The umbrella coordinates of ``sim`` (``umbrella_coordinates``: a comma-separated string or a
    sequence of names), validated against the model's ``available`` ones (the first is the primary, the
    default); normalised on ``sim`` to None when they are just the primary (its runs keep their hashes),
    else to a tuple of names."""
    value = getattr(sim, "umbrella_coordinates", None)
    if value is None:
        return available[:1]
    items = value.split(",") if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise ParameterError(f"umbrella_coordinates must be a list of names from {', '.join(available)}, got {value!r}")
    names = tuple(v.strip() for v in items)
    for name in names:
        if name not in available:
            raise ParameterError(f"unknown umbrella coordinate {name!r}; choose from {', '.join(available)}")
    if len(set(names)) != len(names):
        raise ParameterError(f"umbrella_coordinates names a coordinate twice: {list(names)}")
    object.__setattr__(sim, "umbrella_coordinates", None if names == available[:1] else names)
    return names


def several_coordinates(value) -> bool:
    """Whether a ``umbrella_coordinates`` option (a comma-separated string, or a sequence of names in
    Python) names two or more coordinates."""
    if isinstance(value, str):
        return len(value.split(",")) > 1
    return value is not None and len(value) > 1


def _counts(sim, C: int, lo: int) -> tuple[int, ...]:
    """``umbrella_windows`` as C integer counts >= ``lo`` (one per coordinate)."""
    w = np.atleast_1d(np.asarray(sim.umbrella_windows, dtype=np.float64))
    if w.ndim != 1 or w.size != C or not np.all(np.isfinite(w)) or not np.all(w == np.round(w)):
        raise ParameterError(f"umbrella_windows with {C} umbrella coordinates must be {C} integer counts (one per "
                             f"coordinate), got {sim.umbrella_windows!r}")
    if np.any(w < lo) or np.any(w > MAX_WINDOWS):
        raise ParameterError(f"umbrella_windows must be integers in [{lo}, {MAX_WINDOWS}], got "
                             f"{w.astype(int).tolist()}")
    return tuple(int(v) for v in w)


def check_options(sim, ordered_problem: str | None = None, coordinates: tuple[str, ...] | None = None) -> None:
    """Validate (and normalise to tuples) the umbrella options of a simulation config in its
    ``__post_init__``: one-line ParameterErrors for values out of range and for combinations that make
    no sense.  ``ordered_problem``: why the model has no ordered start for this config (None: it has
    one).  ``coordinates``: the names of the model's umbrella coordinates, its primary first (None: the
    model has one, and ``umbrella_coordinates`` is refused); the config's ``umbrella_coordinate_names``
    then says which a run biases.  With C >= 2 coordinates (``umbrella_coordinates``) every option is given
    per coordinate, one coordinate after another: ``umbrella_m0`` the centres of coordinate 1, then of
    coordinate 2, ... with ``umbrella_windows`` their C counts; ``umbrella_kappa`` one value per
    coordinate (or one per centre); ``umbrella_range`` C pairs lo, hi with optional C counts
    ``umbrella_windows`` and C stiffnesses ``umbrella_kappa``; the windows are the product grid."""
    if coordinates is None and getattr(sim, "umbrella_coordinates", None) is not None:
        raise ParameterError("umbrella_coordinates: this model declares one order parameter")
    available = tuple(coordinates) if coordinates is not None else ("m",)
    if getattr(sim, "umbrella_coordinates", None) is not None and not is_umbrella(sim):
        raise ParameterError("umbrella_coordinates applies only to umbrella windows: give umbrella_m0 (or "
                             "umbrella_range)")
    names = _names(sim, available)
    if len(names) > 1:
        _check_grid_options(sim, len(names))
        _check_protocol(sim, ordered_problem)
        return
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
        if isinstance(windows, (tuple, list, np.ndarray)):     # one count given as a list ("floats" option)
            if len(windows) != 1:
                raise ParameterError(f"umbrella_windows with one umbrella coordinate must be one count, got "
                                     f"{list(windows)}")
            windows = windows[0]
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
    _check_protocol(sim, ordered_problem)


def _check_grid_options(sim, C: int) -> None:
    """The per-coordinate options of C >= 2 coordinates (:func:`check_options`)."""
    m0, kappa, rng = (_floats(sim, name) for name in ("umbrella_m0", "umbrella_kappa", "umbrella_range"))
    if sim.umbrella_start not in UMBRELLA_STARTS:
        raise ParameterError(f"unknown umbrella_start {sim.umbrella_start!r}; choose from {', '.join(UMBRELLA_STARTS)}")
    if m0 is not None and rng is not None:
        raise ParameterError("give umbrella_m0 (explicit window centres) or umbrella_range (planned windows), not both")
    if kappa is not None and any(k < 0 for k in kappa):
        raise ParameterError(f"umbrella_kappa must be >= 0 (log-posterior units), got {list(kappa)}")
    if m0 is not None:
        if sim.umbrella_windows is None:
            raise ParameterError(f"umbrella_m0 with {C} umbrella coordinates needs umbrella_windows: {C} counts saying "
                                 "how many of the centres belong to each coordinate")
        counts = _counts(sim, C, 1)
        if sum(counts) != len(m0):
            raise ParameterError(f"umbrella_windows {list(counts)} add up to {sum(counts)} centres but umbrella_m0 has "
                                 f"{len(m0)}")
        if kappa is None:
            raise ParameterError("umbrella_m0 needs umbrella_kappa (one value per coordinate or one per centre, "
                                 "log-posterior units)")
        if len(kappa) not in (C, len(m0)):
            raise ParameterError(f"umbrella_kappa with {C} umbrella coordinates must be one value per coordinate ({C}) "
                                 f"or one per centre ({len(m0)}), got {len(kappa)}")
    else:
        if len(rng) != 2 * C:
            raise ParameterError(f"umbrella_range with {C} umbrella coordinates must be {C} pairs lo, hi ({2 * C} "
                                 f"numbers), got {len(rng)}")
        for c in range(C):
            if not rng[2 * c] < rng[2 * c + 1]:
                raise ParameterError(f"umbrella_range of coordinate {c + 1} must be lo < hi, got "
                                     f"{list(rng[2 * c:2 * c + 2])}")
        counts = _counts(sim, C, 2) if sim.umbrella_windows is not None else None
        if kappa is not None and len(kappa) != C:
            raise ParameterError(f"umbrella_kappa with umbrella_range and {C} umbrella coordinates must be one value "
                                 f"per coordinate, got {len(kappa)}")
    if counts is not None:
        if int(np.prod(counts)) > MAX_WINDOWS:
            raise ParameterError(f"the product grid of umbrella_windows {list(counts)} has {int(np.prod(counts))} "
                                 f"windows (> {MAX_WINDOWS})")
        object.__setattr__(sim, "umbrella_windows", counts)


def _check_protocol(sim, ordered_problem: str | None) -> None:
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
    for name in ("umbrella_m0", "umbrella_kappa", "umbrella_range", "umbrella_coordinates", "umbrella_windows"):
        if isinstance(out.get(name), (tuple, list)):
            out[name] = list(out[name])
    return out


def starts_of(sim) -> list[str]:
    """The starts of an umbrella run, in the order of the ``start`` dimension."""
    return ["prior", "ordered"] if sim.umbrella_start == "both" else [sim.umbrella_start]


def n_coordinates(sim) -> int:
    """How many coordinates an umbrella config biases (1: the model's primary, the 1-coordinate layout)."""
    value = getattr(sim, "umbrella_coordinates", None)
    return 1 if value is None else len(value)


def _split(values, counts) -> list[np.ndarray]:
    out, i = [], 0
    for n in counts:
        out.append(np.asarray(values[i:i + n], np.float64))
        i += n
    return out


def product_grid(axes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The product grid of per-coordinate windows [(m0_c, kappa_c)], the first coordinate slowest:
    (m0, kappa) of shape (J, C), J = prod_c J_c, window j = ((j_1 J_2 + j_2) J_3 + j_3) ..."""
    idx = np.stack([g.reshape(-1) for g in np.meshgrid(*[np.arange(len(a[0])) for a in axes], indexing="ij")],
                   axis=1)
    m0 = np.stack([axes[c][0][idx[:, c]] for c in range(len(axes))], axis=1)
    kappa = np.stack([axes[c][1][idx[:, c]] for c in range(len(axes))], axis=1)
    return m0, kappa


def explicit_windows(sim) -> tuple[np.ndarray, np.ndarray]:
    """(m0, kappa) per window of explicit options (kappa broadcast to every window): shape (J,) with one
    coordinate; (J, C) on the product grid of C >= 2 coordinates (:func:`product_grid`)."""
    C = n_coordinates(sim)
    if C == 1:
        m0 = np.asarray(sim.umbrella_m0, np.float64)
        kappa = np.broadcast_to(np.asarray(sim.umbrella_kappa, np.float64), m0.shape).copy()
        return m0, kappa
    counts = sim.umbrella_windows
    m0s = _split(sim.umbrella_m0, counts)
    if len(sim.umbrella_kappa) == C:
        kappas = [np.full(n, sim.umbrella_kappa[c]) for c, n in enumerate(counts)]
    else:
        kappas = _split(sim.umbrella_kappa, counts)
    return product_grid(list(zip(m0s, kappas)))


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
    m0, kappa = np.asarray(m0, np.float64), np.asarray(kappa, np.float64)

    def per_s2(v):          # (J[, C]) -> (M[, C]): (start, window, unit) per s2
        v = np.repeat(v, K, axis=0)
        return np.tile(v, (S * St,) + (1,) * (v.ndim - 1))

    hyper = hyper._replace(umbrella_kappa=per_s2(kappa), umbrella_m0=per_s2(m0))
    show = lambda v: ",".join(f"{x:g}" for x in np.atleast_1d(v))  # noqa: E731
    labels = [f"umbrella network (s2={sim.s2[s]:g}, {start} start, window {j} m0={show(m0[j])} kappa={show(kappa[j])}, "
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
                  "protocol": "umbrella", "umbrella_windows_m0": np.asarray(m0, np.float64).tolist(),
                  "umbrella_windows_kappa": np.asarray(kappa, np.float64).tolist()}
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
    names = task.coordinate_names             # None: one coordinate (no coordinate dimension)
    by_start = []
    for t in range(St):
        parts = []
        for j in range(J):
            part_out, part_members = _part(out, members, _member_index(S, St, J, K, t, j))
            part = model.build_dataset(sim, part_out, task, part_members)
            for record, name in (("order_parameter", "order_parameter_trajectory"),
                                 ("potential", "potential_trajectory"), ("bias_stiffness", "bias_stiffness_trajectory")):
                values = np.asarray(part_out.records[record], np.float64)
                if names is None or record == "potential":
                    part[name] = (dims, values.reshape(S, *unit.values(), T))
                else:                                   # (members, time, coordinate)
                    values = np.moveaxis(values.reshape(S, *unit.values(), T, len(names)), -1, -2)
                    part[name] = (("s2", *unit, "coordinate", "time"), values)
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
    wdims = ("window",) if names is None else ("window", "coordinate")
    ds = ds.assign_coords(window=np.arange(J), window_m0=(wdims, np.asarray(m0, np.float64)),
                          window_kappa=(wdims, np.asarray(kappa, np.float64)))
    if names is not None:
        ds = ds.assign_coords(coordinate=list(names))
    ds = ds.transpose("s2", *(("start",) if "start" in ds.dims else ()), "window", ...)
    ds["order_parameter_trajectory"].attrs["long_name"] = (
        f"order parameter m = {task.order_parameter_name} at every record" if names is None else
        f"umbrella coordinates ({', '.join(names)}) at every record")
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
    if names is not None:
        ds.attrs["umbrella_coordinates"] = " ".join(names)
    return ds


# ---------------------------------------------------------------------------------------------
# automatic windows


class WindowPlan(NamedTuple):
    """Windows chosen by :func:`plan_windows`: centres ``m0`` and stiffnesses ``kappa`` (J,), and what
    they were chosen from: Var(m) in the pilots from the prior (``var_prior``) and from the ordered start
    (``var_ordered``, NaN without one), the expected standard deviation of m in a window
    (``window_std``), the spacing, the pilot length and the rule's constants.  With C >= 2 coordinates
    ``m0`` and ``kappa`` are (J, C) (the product grid) and the per-coordinate numbers (C,) arrays."""

    m0: np.ndarray
    kappa: np.ndarray
    var_prior: Any
    var_ordered: Any
    window_std: Any
    spacing: Any
    pilot_steps: int
    kappa_factor: float
    overlap_sigmas: float
    kappa_given: bool

    def attrs(self) -> dict:
        num = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64)  # noqa: E731
        return {"umbrella_plan": "auto", "umbrella_plan_var_prior": num(self.var_prior),
                "umbrella_plan_var_ordered": num(self.var_ordered),
                "umbrella_plan_window_std": num(self.window_std), "umbrella_plan_spacing": num(self.spacing),
                "umbrella_plan_pilot_steps": int(self.pilot_steps),
                "umbrella_plan_kappa_factor": float(self.kappa_factor),
                "umbrella_plan_overlap_sigmas": float(self.overlap_sigmas),
                "umbrella_plan_kappa": "given" if self.kappa_given else "planned"}


def pilot_variances(model, sim, task: Task, *, pilot_steps: int | None = None, devices=None, ensemble_chunk=None,
                    progress: bool = False) -> tuple[Any, Any, int]:
    """Var(m) of unbiased pilot runs (one kappa = 0 window) from the prior and, where the model has one,
    from the ordered start: the within-chain variance of m over the records after the pilot's burn-in
    (half the pilot), averaged over units, the smallest over s2.  Returns (var_prior, var_ordered (NaN
    without an ordered start), pilot_steps); with C >= 2 coordinates the variances are (C,) arrays, one
    per coordinate.  Default pilot: a quarter of ``sim.steps``, at least 200."""
    steps = int(pilot_steps) if pilot_steps is not None else max(200, sim.steps // 4)
    C = n_coordinates(sim)
    base = dict(umbrella_m0=(0.0,) * C, umbrella_kappa=(0.0,) * C, umbrella_range=None,
                umbrella_windows=None if C == 1 else (1,) * C, steps=steps, burn_in=steps // 2,
                record_every=max(1, steps // 40), log_times=False)
    zeros = np.zeros(1) if C == 1 else np.zeros((1, C))
    try:
        pilot = dataclasses.replace(sim, umbrella_start="both", **base)
        out, _, _ = _run_members(model, pilot, task, zeros, zeros, starts_of(pilot), devices=devices,
                                 ensemble_chunk=ensemble_chunk, progress=progress, desc="umbrella pilot")
    except ParameterError:              # no ordered start for this model / at these s2: the prior alone
        pilot = dataclasses.replace(sim, umbrella_start="prior", **base)
        out, _, _ = _run_members(model, pilot, task, zeros, zeros, starts_of(pilot), devices=devices,
                                 ensemble_chunk=ensemble_chunk, progress=progress, desc="umbrella pilot")
    starts = starts_of(pilot)
    after = out.record_steps > pilot.burn_in
    m = np.asarray(out.records["order_parameter"], np.float64)[:, after]          # (M, T[, C])
    var = m.var(axis=1, ddof=1)
    var = var.reshape(len(sim.s2), len(starts), -1, *var.shape[1:]).mean(axis=2).min(axis=0)   # (starts[, C])
    var_ordered = var[1] if len(starts) == 2 else np.full(var.shape[1:], np.nan)
    if C == 1:
        return float(var[0]), float(var_ordered), steps
    return var[0], np.asarray(var_ordered, np.float64), steps


def _plan_axis(lo: float, hi: float, windows: int | None, given: float | None, var_prior: float, var_ordered: float,
               kappa_factor: float, overlap_sigmas: float, where: str = "") -> tuple[np.ndarray, float, float]:
    """The windows of one coordinate (:func:`plan_windows`): (m0 (J,), kappa, window_std)."""
    if not (math.isfinite(var_prior) and var_prior > 0):
        raise ParameterError(f"{where}the pilot's Var(m) from the prior is {var_prior!r}: cannot plan windows (give "
                             "umbrella_m0 and umbrella_kappa)")
    var_min = float(np.nanmin([var_prior, var_ordered])) if var_ordered > 0 else var_prior
    k = float(given) if given is not None else kappa_factor / var_prior
    std = 1.0 / math.sqrt(k + 1.0 / var_min)
    spacing_max = overlap_sigmas * std
    if windows is None:
        J = max(2, int(math.ceil((hi - lo) / spacing_max - 1e-9)) + 1)
        if J > MAX_WINDOWS:
            raise ParameterError(f"{where}overlapping windows over [{lo:g}, {hi:g}] at kappa {k:.4g} need {J} windows "
                                 f"(> {MAX_WINDOWS}): narrow umbrella_range or lower umbrella_kappa")
    else:
        J = int(windows)
        spacing = (hi - lo) / (J - 1)
        if spacing > spacing_max * (1 + 1e-9):
            k_max = (overlap_sigmas / spacing) ** 2 - 1.0 / var_min
            need = int(math.ceil((hi - lo) / spacing_max - 1e-9)) + 1
            if given is not None or k_max < kappa_factor / var_prior:
                raise ParameterError(f"{where}{J} windows over [{lo:g}, {hi:g}] are {spacing:.4g} apart, more than "
                                     f"{overlap_sigmas:g} window standard deviations ({std:.4g} at kappa {k:.4g}): "
                                     f"use umbrella_windows >= {need}")
            k = k_max
            std = 1.0 / math.sqrt(k + 1.0 / var_min)
    return np.linspace(lo, hi, J), k, std


def plan_windows(model, sim, task: Task, *, m_range=None, windows: int | None = None, kappa: float | None = None,
                 pilot_steps: int | None = None, kappa_factor: float = KAPPA_FACTOR,
                 overlap_sigmas: float = OVERLAP_SIGMAS, variances: tuple | None = None,
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

    With C >= 2 coordinates (``sim.umbrella_coordinates``) each coordinate is planned so from its own
    pilot variances (``m_range``: C pairs; ``windows``, ``kappa``: C values or None) and the windows are
    their product grid (:func:`product_grid`).

    Returns a :class:`WindowPlan` (its ``attrs()`` are written to the umbrella Dataset).  With
    ``variances`` given no pilot runs (``model``, ``sim`` and ``task`` are then only read for the
    defaults above and may be None when every argument is given)."""
    C = 1 if sim is None else n_coordinates(sim)
    rng = m_range if m_range is not None else sim.umbrella_range
    if windows is None and sim is not None:
        windows = sim.umbrella_windows
    given = kappa
    if given is None and sim is not None and sim.umbrella_kappa is not None:
        given = sim.umbrella_kappa[0] if C == 1 else sim.umbrella_kappa
    if variances is None:
        var_prior, var_ordered, steps = pilot_variances(model, sim, task, pilot_steps=pilot_steps, devices=devices,
                                                        ensemble_chunk=ensemble_chunk, progress=progress)
    else:
        (var_prior, var_ordered), steps = variances, 0
    if C == 1:
        lo, hi = rng
        m0, k, std = _plan_axis(lo, hi, windows, given, var_prior, var_ordered, kappa_factor, overlap_sigmas)
        return WindowPlan(m0, np.full(m0.size, k), var_prior, var_ordered, std, float(m0[1] - m0[0]), steps,
                          kappa_factor, overlap_sigmas, given is not None)
    names = sim.umbrella_coordinates
    rng = np.asarray(rng, np.float64).reshape(C, 2)
    windows = (None,) * C if windows is None else tuple(windows)
    givens = (None,) * C if given is None else tuple(np.broadcast_to(np.asarray(given, np.float64), (C,)))
    var_prior, var_ordered = (np.broadcast_to(np.asarray(v, np.float64), (C,)) for v in (var_prior, var_ordered))
    axes, stds = [], []
    for c in range(C):
        m0_c, k_c, std_c = _plan_axis(rng[c, 0], rng[c, 1], windows[c], givens[c], float(var_prior[c]),
                                      float(var_ordered[c]), kappa_factor, overlap_sigmas, f"coordinate {names[c]}: ")
        axes.append((m0_c, np.full(m0_c.size, k_c)))
        stds.append(std_c)
    J = int(np.prod([a[0].size for a in axes]))
    if J > MAX_WINDOWS:
        raise ParameterError(f"the planned product grid has {' x '.join(str(a[0].size) for a in axes)} = {J} windows "
                             f"(> {MAX_WINDOWS}): narrow umbrella_range, lower umbrella_kappa or give umbrella_windows")
    m0, kappa_grid = product_grid(axes)
    spacing = np.array([a[0][1] - a[0][0] for a in axes])
    return WindowPlan(m0, kappa_grid, var_prior, var_ordered, np.asarray(stds), spacing, steps, kappa_factor,
                      overlap_sigmas, given is not None)
