"""Running a modular simulation: the model's part of the shared run protocols (:data:`MODEL`, a
:class:`grokphase.sims.protocols.SimModel`), its members and :func:`run_modular`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from grokphase.sims import protocols
from grokphase.sims.driver import Members
from grokphase.sims.modular.config import ModHyper, ModularSim, _hyper
from grokphase.sims.modular.dataset import KIND, build_dataset
from grokphase.sims.modular.starts import ordered_start, theory_phi_plus
from grokphase.sims.modular.task import make_task
from grokphase.sims.precision import precision_context


def unit_keys(sim: ModularSim) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, init, noise) keys of every seed, (seeds, 2) each: fold_in(fold_in(key(seed), 0 | 1 | 2),
    network seed); they do not depend on s2."""
    root = jax.random.PRNGKey(sim.seed)
    idx = jnp.arange(sim.seeds)
    return tuple(np.asarray(jax.vmap(lambda i, t=t: jax.random.fold_in(jax.random.fold_in(root, t), i))(idx))
                 for t in range(3))


def stage_hyper(sim: ModularSim) -> Callable[[np.ndarray], ModHyper]:
    """s2 values (each one of ``sim.s2``) -> their :class:`ModHyper`, with the theory's droplet saddle
    Phi_+ at each (:func:`theory_phi_plus`, solved once for all of ``sim.s2``)."""
    phi_of = dict(zip(sim.s2, theory_phi_plus(sim)))

    def hyper(s2: np.ndarray) -> ModHyper:
        return _hyper(sim, s2, np.array([phi_of[float(v)] for v in s2]))

    return hyper


def _ordered_rungs(sim: ModularSim, members: Members) -> np.ndarray:
    """Replica-exchange rungs that start ordered: where the theory has a droplet saddle (every rung with
    ordered_droplets = "coldest", whose start is the coldest s2's saddle)."""
    phi = np.asarray(members.hyper.phi_plus)
    return np.arange(phi.size) if sim.ordered_droplets == "coldest" else np.flatnonzero(np.isfinite(phi))


def _checkpoint_config(sim: ModularSim, protocol: str, ensemble_chunk: int | None) -> dict:
    """The checkpoint hash's configuration: the parameters (s2 as given) and the kind, with "protocol"
    for replica exchange (the chunk size is not part of it); without the total steps where a longer
    run may extend the checkpoints (:func:`grokphase.sims.protocols.extendable_config`)."""
    config = {**sim.parameters(), "kind": KIND}
    if protocol == "replica exchange":
        config["protocol"] = protocol
    return protocols.extendable_config(config, sim, protocol)


MODEL = protocols.SimModel(
    kind=KIND,
    unit_keys=unit_keys,
    unit_label=lambda sim, j: f"seed {j}",
    hyper=stage_hyper,
    start_ordered=lambda sim, members, task: (ordered_start(sim, members, task), {}),
    build_dataset=lambda sim, out, task, members: build_dataset(sim, out, members),
    checkpoint_config=_checkpoint_config,
    describe=lambda sim: f"modular P={sim.P} N={sim.N}",
    replica_set_dim="seed",
    ladder_shared=("theory_phi_plus",),
    ordered_rungs=_ordered_rungs,
    unit_dims=lambda sim: {"seed": sim.seeds},
    # every seed draws its own training split when alpha < 1 (a posterior of its own); the whole table
    # is one posterior for every seed
    system_dims=lambda sim: "seed" if sim.alpha < 1.0 else "",
)


def build_members(sim: ModularSim) -> tuple[Members, list[str]]:
    """Networks: s2 major, then seed; keys fold_in(key(seed), tag, network seed) (not s2)
    (:func:`grokphase.sims.protocols.build_members`)."""
    return protocols.build_members(MODEL, sim)


def build_ladder_members(sim: ModularSim) -> tuple[Members, list[ModHyper], list[str]]:
    """Annealing chains: ``sim.seeds`` per branch (cooling first), the same data sets in every
    branch, branch-specific init and noise keys; one hyperparameter set per ladder stage
    (:func:`grokphase.sims.protocols.build_ladder_members`)."""
    return protocols.build_ladder_members(MODEL, sim)


def run_modular(sim: ModularSim, *, devices=None, ensemble_chunk: int | None = None,
                checkpoint_dir: str | None = None, checkpoint_every: float = 60.0, progress: bool = False,
                _stop_after_records: int | None = None) -> xr.Dataset:
    """Run the simulation by the protocol ``sim`` asks for (:func:`grokphase.sims.protocols.run`): with
    ``sim.anneal`` != "none" the s2 ladder is swept with the state carried from one s2 to the next and
    the Dataset gains a ``branch`` dimension (cooling, heating); with ``sim.replica_exchange`` the s2
    ladder is run as replica exchange; with umbrella windows (``sim.umbrella_m0`` or
    ``sim.umbrella_range``) every window is one more ensemble axis (:mod:`grokphase.sims.umbrella`).

    The whole run is traced and compiled under ``sim.matmul_precision``'s device precision
    (:func:`grokphase.sims.precision.precision_context`), which the result's attributes record."""
    with precision_context(sim.matmul_precision):
        ds = protocols.run(MODEL, sim, make_task(sim), devices=devices, ensemble_chunk=ensemble_chunk,
                           checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress,
                           stop_after_records=_stop_after_records)
    if ds is not None:
        ds.attrs["matmul_precision"] = sim.matmul_precision
    return ds
