r"""Run protocols shared by every simulated model, written once and parameterised by a :class:`SimModel`.

A simulation ensemble is ``units`` independent networks per s2 (teacher-student: data set x init;
modular: seed), each unit with its own data, init and noise keys that do not depend on s2 (common
random numbers across s2).  Three protocols run it (:func:`run`):

* **independent** (``sim.anneal == "none"``): every s2 from its own start (the prior, or the ordered
  droplet-saddle start with ``sim.start == "ordered"``), :func:`grokphase.sims.driver.run_ensemble`;
* **anneal** (``sim.anneal`` in down / up / both): the s2 ladder swept with the state carried from one
  s2 to the next (:func:`grokphase.sims.driver.run_ladder`), a cooling branch (s2 decreasing, from
  the prior unless ``start == "ordered"``) and / or a heating branch (s2 increasing, from the ordered
  start unless ``start == "prior"``; :func:`grokphase.sims.driver.ladder_branches`).  Every branch
  uses the same data sets with branch-specific init and noise keys (fold_in 1 = cooling,
  2 = heating); the Dataset gains a ``branch`` dimension, each branch with s2 ascending;
* **replica exchange** (``sim.replica_exchange``): one ladder per unit, one replica per s2 (sorted
  ascending), :func:`grokphase.sims.replica.run_replica_exchange`; the Dataset is the independent
  run's plus the swap statistics;
* **umbrella** (``sim.umbrella_m0`` or ``sim.umbrella_range``): harmonic windows on the model's order
  parameter, every s2 x start x window x unit one ensemble, :func:`grokphase.sims.umbrella.run_umbrella`
  (THEORY.md §7; the Dataset gains ``window`` and optionally ``start`` dimensions and the MBAR inputs).

**What a model supplies** (:class:`SimModel`): its result kind, the per-unit keys and labels, the
hyperparameters at given s2 values, its ordered start, its Dataset builder and its checkpoint
configuration.  The simulation config ``sim`` must be a frozen dataclass with the fields ``s2``
(tuple), ``anneal``, ``start``, ``replica_exchange``, ``swap_every``, a ``schedule`` property and a
``branches()`` method (``ladder_branches(sim.s2, sim.anneal, sim.start)``), and must accept
``dataclasses.replace`` of ``s2``, ``anneal`` and ``start``.  The task (:class:`grokphase.sims.driver.Task`)
is built by the model's run entry and passed in.

Member layout (what the model's Dataset builder receives): s2-major, then unit (member
m = s * units + j); a ladder's members are branch-major, then unit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from grokphase.errors import ParameterError
from grokphase.sims import replica as rx
from grokphase.sims.driver import (_chunk_key, write_timing,  # noqa: F401  (write_timing: re-exported)
                                   Checkpointer, Members, Task, ladder_branch_output, ladder_timing, prior_z,
                                   run_ensemble, run_ladder)

#: fold_in tags of the init and noise keys of each annealing branch (the data keys are shared)
BRANCH_TAGS = {"cooling": 1, "heating": 2}


class SimModel(NamedTuple):
    """How a model plugs into the shared run protocols (see the module docstring).

    kind: the result kind written by its Datasets (``"sims.teacher_student"``), used in checkpoint
        configurations.
    unit_keys(sim) -> (data_keys, init_keys, noise_keys): uint32 key data of every unit, (units, 2)
        each, independent of s2.
    unit_label(sim, j) -> str: how unit j is named in messages ("dataset 0, init 1").
    hyper(sim) -> (s2 -> hyper): the per-member hyperparameter pytree at the float64 s2 values given
        (one per member); the outer call may solve the theory once for every s2 of ``sim.s2``.
    start_ordered(sim, members, task) -> (z, attrs): unit-variance parameters of the ordered start of
        every member (leading member axis) and the attributes recording it (written as
        ``{branch}_{name}``; may be empty).
    build_dataset(sim, out, task, members) -> Dataset: the result Dataset of one run output with the
        members laid out s2-major (s2 as in ``sim.s2``); ``members`` carries the data keys and the
        hyperparameters (a ladder branch's part has no init or noise keys).
    checkpoint_config(sim, protocol, ensemble_chunk) -> dict: the configuration a checkpoint folder is
        hashed from; protocol is "independent", "anneal" or "replica exchange", ensemble_chunk the chunk
        size rounded to the device count (None when the caller gave none).  Keep it stable: a changed
        dict means interrupted runs no longer resume.  Pass it through :func:`extendable_config`, so that
        an independent run with linear record times leaves its total steps out (a longer run extends
        its checkpoints: ``grokphase sim ... --until-converged``).
    describe(sim) -> str: the progress bar's description ("teacher-student N=700 d=150 n=3000").
    replica_set_dim: the Dataset dimension of the independent ladders of a replica-exchange run.
    ladder_shared: variables that do not depend on the branch (kept without a ``branch`` dimension).
    annotate_ladder(ds, sim) -> Dataset (optional): the final annotation of an annealing Dataset (the
        branch parts are built and annotated at ``sim`` with s2 sorted).
    ordered_rungs(sim, members) -> indices (optional): the replica-exchange members that can start
        ordered (the others start at the prior); None: the model has no ordered replica-exchange
        start, and its Datasets carry no ``replica_start`` attribute.
    unit_dims(sim) -> {dim: size} (optional): the Dataset dimensions of one s2's units, in member order
        ({"seed": seeds}; {"dataset": D, "init": I}); needed by umbrella runs.
    system_dims(sim) -> str (optional): the space-separated unit dimensions that index different
        posteriors (different data), "" when every unit samples the same one; written as the umbrella
        Dataset's ``umbrella_system_dims``.

    The hyperparameter pytree must have the fields ``umbrella_kappa`` and ``umbrella_m0`` (None outside
    umbrella runs) and the task an ``order_parameter`` (:class:`grokphase.sims.driver.Task`) for umbrella
    runs.
    """

    kind: str
    unit_keys: Callable[[Any], tuple]
    unit_label: Callable[[Any, int], str]
    hyper: Callable[[Any], Callable[[np.ndarray], Any]]
    start_ordered: Callable[[Any, Members, Task], tuple[Any, dict]]
    build_dataset: Callable[[Any, Any, Task, Members], xr.Dataset]
    checkpoint_config: Callable[[Any, str, int | None], dict]
    describe: Callable[[Any], str]
    replica_set_dim: str
    ladder_shared: tuple[str, ...]
    annotate_ladder: Callable[[xr.Dataset, Any], xr.Dataset] | None = None
    ordered_rungs: Callable[[Any, Members], np.ndarray] | None = None
    unit_dims: Callable[[Any], dict] | None = None
    system_dims: Callable[[Any], str] | None = None


def extendable_config(config: dict, sim, protocol: str) -> dict:
    """``config`` (a checkpoint configuration) without ``steps`` where a longer run can extend the
    checkpoints (:mod:`grokphase.sims.checkpoint`): the independent protocol with linear record times,
    whose S-step state, records and after-burn-in statistics are a prefix of any longer run's (the noise
    of step t is fold_in(noise_key, t), the burn-in is part of the configuration).  The checkpoints then
    carry their own step, and a run shorter than a checkpoint refuses it.  Annealing ladders (every
    stage runs the whole schedule), replica exchange, umbrella runs and log-spaced record times keep
    ``steps`` in their configuration."""
    if protocol == "independent" and not sim.log_times:
        return {k: v for k, v in config.items() if k != "steps"}
    return config


# ---------------------------------------------------------------------------------------------
# members


def build_members(model: SimModel, sim) -> tuple[Members, list[str]]:
    """Every (s2, unit) network, s2-major: the unit's keys (tiled over s2) and the hyperparameters
    at its s2; with a label per member."""
    data_k, init_k, noise_k = model.unit_keys(sim)
    S, K = len(sim.s2), int(np.shape(data_k)[0])
    hyper = model.hyper(sim)(np.repeat(np.asarray(sim.s2, np.float64), K))
    tile = lambda k: np.tile(k, (S, 1))  # noqa: E731
    labels = [f"network (s2={sim.s2[i]:g}, {model.unit_label(sim, j)})" for i in range(S) for j in range(K)]
    return Members(tile(data_k), tile(init_k), tile(noise_k), hyper), labels


def _fold(keys, tag: int) -> np.ndarray:
    return np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, tag))(jnp.asarray(keys)))


def build_ladder_members(model: SimModel, sim) -> tuple[Members, list, list[str]]:
    """Annealing chains: the units per branch (cooling first), the same data sets in every branch,
    branch-specific init and noise keys (fold_in :data:`BRANCH_TAGS`); one hyperparameter set per
    ladder stage (stage s of a branch runs at its ladder's s-th s2)."""
    base, _ = build_members(model, dataclasses.replace(sim, s2=sim.s2[:1], anneal="none", start="auto"))
    K = int(np.shape(base.data_keys)[0])
    fams = sim.branches()
    members = Members(np.concatenate([base.data_keys] * len(fams)),
                      np.concatenate([_fold(base.init_keys, BRANCH_TAGS[b]) for b, _, _ in fams]),
                      np.concatenate([_fold(base.noise_keys, BRANCH_TAGS[b]) for b, _, _ in fams]), None)
    hyper = model.hyper(sim)
    stages = [hyper(np.concatenate([np.full(K, ladder[s]) for _, ladder, _ in fams])) for s in range(len(sim.s2))]
    labels = [f"{b} chain ({model.unit_label(sim, j)})" for b, _, _ in fams for j in range(K)]
    return members._replace(hyper=stages[0]), stages, labels


def initial_z(model: SimModel, sim, task: Task, members: Members, starts: list[str]) -> tuple[Any, dict]:
    """Stage-0 parameters per block of members (one block per entry of ``starts``: "prior" or
    "ordered") and the ordered starts' attributes {block index: attrs}; (None, {}) when every
    member starts from the prior."""
    if all(s == "prior" for s in starts):
        return None, {}
    K = len(members.data_keys) // len(starts)
    prior = prior_z(task, members)
    blocks, info = [], {}
    for b, start in enumerate(starts):
        sl = slice(b * K, (b + 1) * K)
        if start == "ordered":
            part = jax.tree_util.tree_map(lambda a, sl=sl: np.asarray(a)[sl], members)
            z, info[b] = model.start_ordered(sim, part, task)
            blocks.append(z)
        else:
            blocks.append(jax.tree_util.tree_map(lambda a, sl=sl: np.asarray(a)[sl], prior))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *blocks), info


# ---------------------------------------------------------------------------------------------
# the run


def run(model: SimModel, sim, task: Task, *, devices=None, ensemble_chunk: int | None = None,
        checkpoint_dir: str | None = None, checkpoint_every: float = 60.0, progress: bool = False,
        stop_after_records: int | None = None) -> xr.Dataset:
    """Run ``sim`` with the protocol it asks for (module docstring) and return its Dataset, with its
    timing in the attributes (:func:`write_timing`).  ``devices`` and ``ensemble_chunk`` go to the
    driver (replica exchange runs on one device); ``checkpoint_dir`` enables periodic atomic
    checkpoints and resumption."""
    if getattr(sim, "umbrella_m0", None) is not None or getattr(sim, "umbrella_range", None) is not None:
        from grokphase.sims.umbrella import run_umbrella

        return run_umbrella(model, sim, task, devices=devices, ensemble_chunk=ensemble_chunk,
                            checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress,
                            stop_after_records=stop_after_records)
    if sim.replica_exchange:
        return _run_replica(model, sim, task, checkpoint_dir, checkpoint_every, progress, stop_after_records)
    if sim.anneal != "none":
        return _run_ladder(model, sim, task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every, progress,
                           stop_after_records)
    return _run_independent(model, sim, task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every, progress,
                            stop_after_records)


def _write_start_attrs(ds: xr.Dataset, branch: str, attrs: dict) -> None:
    for name, value in attrs.items():
        ds.attrs[f"{branch}_{name}"] = value


def _run_independent(model: SimModel, sim, task: Task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every,
                     progress, stop_after_records) -> xr.Dataset:
    members, labels = build_members(model, sim)
    z0, info = initial_z(model, sim, task, members, [sim.branches()[0][2]])
    ckpt = None
    if checkpoint_dir is not None:
        config = model.checkpoint_config(sim, "independent", _chunk_key(ensemble_chunk, len(labels), devices))
        ckpt = Checkpointer(checkpoint_dir, config, every_seconds=checkpoint_every)
    out = run_ensemble(task, members, sim.schedule, ensemble_chunk=ensemble_chunk, devices=devices,
                       checkpoint=ckpt, member_labels=labels, progress=progress, progress_desc=model.describe(sim),
                       stop_after_records=stop_after_records, initial_z=z0)
    ds = model.build_dataset(sim, out, task, members)
    if info:
        _write_start_attrs(ds, "independent", info[0])
    write_timing(ds, out.seconds, out.network_steps, out.segments, out.resumed)
    return ds


def _run_ladder(model: SimModel, sim, task: Task, devices, ensemble_chunk, checkpoint_dir, checkpoint_every,
                progress, stop_after_records) -> xr.Dataset:
    """The s2 ladder with the state carried from one s2 to the next (each stage runs the whole
    schedule, burn-in included)."""
    members, stages, labels = build_ladder_members(model, sim)
    fams = sim.branches()
    z0, info = initial_z(model, sim, task, members, [start for _, _, start in fams])
    stage_labels = [" / ".join(f"{b} s2={ladder[s]:g}" for b, ladder, _ in fams) for s in range(len(sim.s2))]
    config = model.checkpoint_config(sim, "anneal", _chunk_key(ensemble_chunk, len(labels), devices))
    outs = run_ladder(task, members, stages, sim.schedule, initial_z=z0, checkpoint_dir=checkpoint_dir,
                      checkpoint_config=config, checkpoint_every=checkpoint_every, stage_labels=stage_labels,
                      ensemble_chunk=ensemble_chunk, devices=devices, member_labels=labels, progress=progress,
                      progress_desc=model.describe(sim), stop_after_records=stop_after_records)
    ds = ladder_dataset(model, sim, task, outs, members, stages)
    for b, attrs in info.items():
        _write_start_attrs(ds, fams[b][0], attrs)
    write_timing(ds, *ladder_timing(outs))
    return ds


def ladder_dataset(model: SimModel, sim, task: Task, outs: list, members: Members, stages: list) -> xr.Dataset:
    """Reorder the stages of each branch by s2 (ascending), build each branch's Dataset at the sorted
    s2 and stack the branches along ``branch``."""
    fams = sim.branches()
    K = len(members.data_keys) // len(fams)
    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)))
    parts, names = [], []
    for b, (name, ladder, _) in enumerate(fams):
        sl = slice(b * K, (b + 1) * K)
        out, order = ladder_branch_output(outs, ladder, ordered.s2, sl)
        hyper = jax.tree_util.tree_map(lambda *a: np.concatenate([x[sl] for x in a]), *[stages[s] for s in order])
        part_members = Members(np.concatenate([members.data_keys[sl]] * len(order)), None, None, hyper)
        parts.append(model.build_dataset(ordered, out, task, part_members))
        names.append(name)
    ds = xr.concat(parts, dim="branch", data_vars="all", coords="minimal", combine_attrs="override")
    ds = ds.assign_coords(branch=names)
    for name in model.ladder_shared:
        ds[name] = parts[0][name]
    return model.annotate_ladder(ds, sim) if model.annotate_ladder is not None else ds


def _run_replica(model: SimModel, sim, task: Task, checkpoint_dir, checkpoint_every, progress,
                 stop_after_records) -> xr.Dataset:
    """Replica exchange across the s2 ladder (sorted ascending): every unit is one ladder with one
    replica per s2, all rungs on that unit's data set.  With ``sim.start == "ordered"`` the rungs the
    model can start ordered (``model.ordered_rungs``) start there, the others at the prior.  The
    Dataset is the independent run's plus the swap statistics, with ``protocol`` = "replica
    exchange" and the ladder report in the attributes (a warning when it is too sparse)."""
    ordered = dataclasses.replace(sim, s2=tuple(sorted(sim.s2)))
    members, _ = build_members(model, ordered)
    start = "ordered" if sim.start == "ordered" else "prior"
    z0 = None
    if start == "ordered":
        if model.ordered_rungs is None:
            raise ParameterError(f"{model.kind} has no ordered replica-exchange start; use start = 'prior'")
        z0 = prior_z(task, members)
        has = np.asarray(model.ordered_rungs(ordered, members))
        if has.size == 0:
            raise ParameterError("an ordered replica-exchange start needs the theory's droplet saddle at some s2 "
                                 "of the ladder, and it has none")
        part = jax.tree_util.tree_map(lambda a: np.asarray(a)[has], members)
        z_ord, _ = model.start_ordered(ordered, part, task)
        z0 = {k: np.asarray(v).copy() for k, v in z0.items()}
        for k in z0:
            z0[k][has] = z_ord[k]
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Checkpointer(checkpoint_dir, model.checkpoint_config(sim, "replica exchange", None),
                            every_seconds=checkpoint_every)
    K = len(members.data_keys) // len(ordered.s2)
    labels = [f"replica-exchange rung s2={ordered.s2[i]:g} (ladder {j})" for i in range(len(ordered.s2))
              for j in range(K)]
    where = f"{model.describe(sim)} replica exchange"
    out = rx.run_replica_exchange(task, members, ordered.schedule, len(ordered.s2), swap_every=sim.swap_every,
                                  checkpoint=ckpt, member_labels=labels, progress=progress, progress_desc=where,
                                  stop_after_records=stop_after_records, initial_z=z0)
    ds = model.build_dataset(ordered, out, task, members)
    s2 = np.asarray(ordered.s2)
    for name, (dims, values) in rx.replica_variables(out, s2, model.replica_set_dim).items():
        ds[name] = (dims, values)
    report = rx.ladder_report(out.attempts, out.accepts, rx.round_trips(out.slot_replica), s2)
    rx.warn_if_sparse(report, where)
    ds.attrs["protocol"] = "replica exchange"
    if model.ordered_rungs is not None:
        ds.attrs["replica_start"] = start
    ds.attrs.update(swap_every=int(sim.swap_every), ladder_ok=int(report["ok"]),
                    ladder_warning=report["warning"] or "none", round_trips_total=int(report["round_trips"]),
                    min_swap_acceptance=float(report["min_acceptance"]))
    write_timing(ds, out.seconds, out.network_steps, out.segments, out.resumed)
    return ds


# ---------------------------------------------------------------------------------------------
# summaries


def summary_points(ds: xr.Dataset, point: Callable[[xr.Dataset, int], dict]) -> list[dict]:
    """The CLI's JSON points: ``point(ds, i)`` for every s2 index i (and per branch of an annealing
    run: the points gain "branch"; per start and window of an umbrella run: "start", "window",
    "window_m0", "window_kappa")."""
    if "branch" in ds.dims:
        return [{"branch": str(b), **pt} for b in ds["branch"].values
                for pt in summary_points(ds.sel(branch=b), point)]
    if "start" in ds.dims:
        return [{"start": str(b), **pt} for b in ds["start"].values
                for pt in summary_points(ds.sel(start=b), point)]
    if "window" in ds.dims:
        return [{"window": int(j), "window_m0": float(ds["window_m0"].values[j]),
                 "window_kappa": float(ds["window_kappa"].values[j]), **pt}
                for j in range(ds.sizes["window"]) for pt in summary_points(ds.isel(window=j), point)]
    return [point(ds, i) for i in range(ds.sizes["s2"])]
