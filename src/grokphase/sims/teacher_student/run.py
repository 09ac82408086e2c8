"""Running a teacher-student simulation: the model's part of the shared run protocols
(:data:`MODEL`, a :class:`grokphase.sims.protocols.SimModel`), its members and :func:`run_teacher_student`."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from grokphase.sims import protocols
from grokphase.sims.driver import Members, Task
from grokphase.sims.budget import chunk_size
from grokphase.sims.precision import precision_context
from grokphase.sims.teacher_student.config import TeacherStudentSim, TSHyper
from grokphase.sims.teacher_student.dataset import KIND, annotate_result, build_dataset
from grokphase.sims.teacher_student.starts import ordered_start
from grokphase.sims.teacher_student.task import make_task


def member_keys(seed: int, datasets: int, inits: int):
    """(data, init, noise) keys of every (data set, init) pair, shape (datasets * inits, 2) each:
    data = fold_in(fold_in(key(seed), 0), dataset), init/noise = fold_in(fold_in(fold_in(key(seed),
    1 | 2), dataset), init).  They do not depend on s2 (common random numbers across s2)."""
    root = jax.random.PRNGKey(seed)
    ds, it = np.meshgrid(np.arange(datasets), np.arange(inits), indexing="ij")
    ds, it = ds.ravel(), it.ravel()

    def keys(tag, with_init):
        base = jax.random.fold_in(root, tag)
        per_ds = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ds))
        if not with_init:
            return np.asarray(per_ds)
        return np.asarray(jax.vmap(jax.random.fold_in)(per_ds, jnp.asarray(it)))

    return keys(0, False), keys(1, True), keys(2, True)


def stage_hyper(sim: TeacherStudentSim) -> Callable[[np.ndarray], TSHyper]:
    """s2 values (one per network) -> their :class:`TSHyper`, the other hyperparameters the sim's."""
    def hyper(s2: np.ndarray) -> TSHyper:
        const = lambda v: np.full(s2.size, v, dtype=np.float64)  # noqa: E731
        # readout_lr_scale 1: no leaf, the plain step's program (bit for bit)
        scale = None if sim.readout_lr_scale == 1.0 else const(sim.readout_lr_scale)
        return TSHyper(s2=s2, sa2=const(sim.sa2_value), sw2=const(sim.sw2), eps=const(sim.eps), lr=const(sim.lr),
                       weight_decay=const(sim.weight_decay), readout_lr_scale=scale)

    return hyper


def _unit_label(sim: TeacherStudentSim, j: int) -> str:
    return f"dataset {j // sim.inits}, init {j % sim.inits}"


def _start_ordered(sim: TeacherStudentSim, members: Members, task: Task) -> tuple[dict, dict]:
    """:func:`ordered_start` and its record: droplet neurons per network (mean) and q*, t* per member."""
    z, n_drop, sad, idx = ordered_start(sim, members, task)
    return z, {"start": "ordered", "start_droplet_neurons": float(np.mean(n_drop)),
               "start_droplet_fraction": float(np.mean(n_drop)) / sim.N,
               "start_q_star": np.asarray(sad.q_star[idx], np.float64),
               "start_t_star": np.asarray(sad.t_star[idx], np.float64)}


def _checkpoint_config(sim: TeacherStudentSim, protocol: str, ensemble_chunk: int | None) -> dict:
    """The checkpoint hash's configuration: the parameters, the kind, the chunk size (independent and
    anneal; the chunk layout is part of the checkpoint), "protocol" for anneal and replica exchange
    (whose parameters have s2 sorted); without the total steps where a longer run may extend the
    checkpoints (:func:`grokphase.sims.protocols.extendable_config`)."""
    if protocol == "replica exchange":
        return {**dataclasses.replace(sim, s2=tuple(sorted(sim.s2))).parameters(), "kind": KIND, "protocol": protocol}
    config = {**sim.parameters(), "kind": KIND}
    if protocol == "anneal":
        config["protocol"] = protocol
    if ensemble_chunk is not None:
        config["ensemble_chunk"] = ensemble_chunk
    return protocols.extendable_config(config, sim, protocol)


def _annotate_ladder(ds: xr.Dataset, sim: TeacherStudentSim) -> xr.Dataset:
    """An annealing Dataset carries the run's own parameters (s2 in the order given) and protocol "anneal"."""
    ds = annotate_result(ds, sim)
    ds.attrs["protocol"] = "anneal"
    return ds


MODEL = protocols.SimModel(
    kind=KIND,
    unit_keys=lambda sim: member_keys(sim.seed, sim.datasets, sim.inits),
    unit_label=_unit_label,
    hyper=stage_hyper,
    start_ordered=_start_ordered,
    build_dataset=build_dataset,
    checkpoint_config=_checkpoint_config,
    describe=lambda sim: f"teacher-student N={sim.N} d={sim.d} n={sim.n}",
    replica_set_dim="chain",
    ladder_shared=("droplet_threshold", "theory_droplet_fraction", "q_edges", "qt_q_edges", "t_edges"),
    annotate_ladder=_annotate_ladder,
    unit_dims=lambda sim: {"dataset": sim.datasets, "init": sim.inits},
    system_dims=lambda sim: "dataset",          # every data set its own posterior; inits sample the same one
)


def build_members(sim: TeacherStudentSim) -> tuple[Members, list[str]]:
    """Every (s2, data set, init) network, s2-major (:func:`grokphase.sims.protocols.build_members`)."""
    return protocols.build_members(MODEL, sim)


def build_ladder_members(sim: TeacherStudentSim) -> tuple[Members, list[TSHyper], list[str]]:
    """Annealing chains: datasets x inits per branch (cooling first), the same data sets in every
    branch, branch-specific init and noise keys; one hyperparameter set per ladder stage
    (:func:`grokphase.sims.protocols.build_ladder_members`)."""
    return protocols.build_ladder_members(MODEL, sim)


def run_teacher_student(sim: TeacherStudentSim, *, devices=None, ensemble_chunk: int | None = None,
                        memory_budget: float | None = None, checkpoint_dir: str | None = None,
                        checkpoint_every: float = 60.0, progress: bool = False, model=None,
                        _stop_after_records: int | None = None) -> xr.Dataset:
    """Run the simulation and return its result Dataset (see :func:`build_dataset`), by the protocol
    ``sim`` asks for (:func:`grokphase.sims.protocols.run`: independent s2 values, an annealing
    ladder, or replica exchange).

    ``ensemble_chunk`` (default: as many networks as fit in ``memory_budget`` bytes, or without one in
    each device's reported memory, else 2 GB: :func:`grokphase.sims.memory.chunk_size`; rounded to
    the device count) bounds memory; ``devices`` (default all JAX devices) share each chunk.
    ``checkpoint_dir`` enables periodic atomic checkpoints and resumption.  ``model``: a Flax module
    replacing :class:`~grokphase.sims.models.TwoLayerNet` (:func:`make_task`).

    The whole run is traced and compiled under ``sim.matmul_precision``'s device precision
    (:func:`grokphase.sims.precision.precision_context`), which the result's attributes record."""
    task = make_task(sim, model)
    if ensemble_chunk is None:
        ensemble_chunk = chunk_size(sim.bytes_per_network(), devices,
                                    None if memory_budget is None else memory_budget / 1e9)
    with precision_context(sim.matmul_precision):
        ds = protocols.run(MODEL, sim, task, devices=devices, ensemble_chunk=ensemble_chunk,
                           checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress,
                           stop_after_records=_stop_after_records)
    if ds is not None:
        ds.attrs["matmul_precision"] = sim.matmul_precision
    return ds
