r"""Replica exchange (parallel tempering) across a sigma^2 ladder (issue 8).

**The family of densities.**  The engine samples unit-variance variables z with theta = prior_std * z
by Langevin dynamics whose update is ``langevin(lr, s2)`` on z (:mod:`grokphase.sims.langevin`):
drift -(grad U(z) + s2 z), noise variance 2 lr s2, with the potential U(z) = L(theta) + penalty(theta)
(``Task.loss`` + ``Task.penalty``).  Its stationary density at temperature s2 is

    pi_s2(z)  propto  exp(-U(z; s2)/s2 - |z|^2/2),

the posterior exp(-L/s2 - R) with R = prior + penalties: the tasks' penalties enter U as s2 * R
(THEORY.md §1), so R does not depend on s2, and prior_std does not depend on s2 either.  An optional
Gibbs update (``Task.gibbs``, e.g. the modular readout drawn from its conditional) leaves the same
joint density invariant.

**The swap.**  Replicas i and j (adjacent rungs) exchange their states with probability
min(1, r), r = pi_i(z_j) pi_j(z_i) / (pi_i(z_i) pi_j(z_j)).  The engine evaluates log r from the
density above with each rung's own hyperparameters (:func:`log_density`), so any task whose update
is the engine's Langevin at ``hyper.s2`` is handled, whatever its penalty.  For the two models
(s2-independent R and prior_std) it reduces to the textbook rule

    log r = (1/s2_i - 1/s2_j) (L_i - L_j)                                    (:func:`swap_log_ratio`)

with L the data loss 1/2 sum (f - y)^2 (tested against each other and against hand values).

**Scheme.**  Every ``swap_every`` steps one round of swaps is proposed, deterministically even-odd
(round r proposes the disjoint pairs (s, s+1) with s = r mod 2, r mod 2 + 2, ...), which moves
replicas along the ladder faster than random pair choice and makes round trips a clean diagnostic.
States are swapped, temperatures stay: the state of rung s (z and the optimiser state) moves, while
its accumulated statistics, noise keys and step count stay with the rung, so every rung's records are
that temperature's chain.  Which replica (label) sits at which rung is tracked
(``slot_replica``) for round trips: a round trip is the passage of one replica from the coldest rung to
the hottest and back (or the reverse), counted from the first end it visits.

**Layout.**  A replica-exchange ensemble is ``n_sets`` independent ladders of ``n_rungs`` rungs each;
member m = s * n_sets + c is rung s of ladder c (s2-major, as the models' ``build_members`` lay out
their ensembles).  All rungs of one ladder share a data set (their ``data_keys`` must be equal: a swap
between different data sets would be meaningless); the engine folds the rung index into the init and
noise keys, so rungs never share noise.  Swap uniforms come from fold_in(fold_in(ladder key, round),
rung), so results depend only on the seeds, not on chunking or on interruption and resumption (the
checkpoint keeps the state, the records, the ladder occupation history and the swap counts).
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.sims.checkpoint import Checkpointer, _arrays_to_tree
from grokphase.sims.driver import (Members, Schedule, SimulationError, Task, _agreed, _fetch, _Interrupt, _make_functions,
                                   advance_bar, checkpoint_arrays, checkpoint_records, checkpoint_timing,
                                   default_group, progress_bar)
from grokphase.sims.models import scale_params

#: fold_in tags: the swap stream (per ladder) and the rung index folded into init and noise keys
SWAP_STREAM = 0x5A7
RUNG_STREAM = 0x2E6
#: a neighbour pair whose acceptance is below this is reported as a sparse-ladder gap
SPARSE_ACCEPTANCE = 0.05


def swap_log_ratio(L_i, L_j, s2_i, s2_j):
    """log of the swap acceptance ratio for the family p_s2 propto exp(-L/s2 - R) (R independent of s2):
    (1/s2_i - 1/s2_j)(L_i - L_j), where L_i is the data loss of the state currently at temperature s2_i.
    Accept with probability min(1, exp(.))."""
    return (1.0 / s2_i - 1.0 / s2_j) * (L_i - L_j)


def swap_probability(L_i, L_j, s2_i, s2_j):
    """min(1, exp(swap_log_ratio)) (guarded: no overflow for large positive ratios)."""
    return jnp.exp(jnp.minimum(swap_log_ratio(L_i, L_j, s2_i, s2_j), 0.0))


def log_density(task: Task, z, data, hyper):
    """log pi_s2(z) up to a constant: -(loss + penalty)/hyper.s2 - |z|^2/2 (the module docstring's
    stationary density of the engine's Langevin at temperature hyper.s2; the readout of a Gibbs task
    included)."""
    theta = scale_params(z, task.prior_std(z, hyper))
    U = task.loss(theta, data)
    if task.penalty is not None:
        U = U + task.penalty(theta, hyper)
    prior = sum(jnp.sum(jnp.square(leaf.astype(jnp.float64))) for leaf in jax.tree_util.tree_leaves(z))
    return -U.astype(jnp.float64) / jnp.asarray(hyper.s2, jnp.float64) - 0.5 * prior


def partners(round_index: int, n_rungs: int) -> np.ndarray:
    """Rung partner of every rung in an even-odd round (itself when it sits out): round r pairs
    (s, s+1) for s = r mod 2, r mod 2 + 2, ... < n_rungs - 1."""
    out = np.arange(n_rungs)
    for s in range(round_index % 2, n_rungs - 1, 2):
        out[s], out[s + 1] = s + 1, s
    return out


@functools.lru_cache(maxsize=16)
def _swap_function(task: Task, n_rungs: int, n_sets: int, group: int | None):
    """jitted swap round over the flattened member axis M = n_rungs * n_sets."""

    def density(args):
        z, data, hyper = args
        return log_density(task, z, data, hyper)

    def densities(z, data, hyper):
        if group is None:
            return jax.vmap(lambda *a: density(a))(z, data, hyper)
        return jax.lax.map(density, (z, data, hyper), batch_size=group)

    def swap(state, data, hyper, labels, set_keys, partner, round_index):
        take = lambda tree, idx: jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), tree)  # noqa: E731
        own = densities(state.z, data, hyper)
        cross = densities(state.z, data, take(hyper, partner))      # state m at its partner's rung
        log_r = cross + cross[partner] - own - own[partner]
        m = jnp.arange(n_rungs * n_sets)
        rung, ladder = m // n_sets, m % n_sets
        lo = jnp.minimum(rung, partner // n_sets)
        keys = jax.vmap(lambda k, r: jax.random.fold_in(jax.random.fold_in(k, round_index), r))(set_keys[ladder], lo)
        uniform = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float64))(keys)
        active = partner != m
        accept = active & (jnp.log(uniform) < log_r)                # NaN log_r: rejected
        src = jnp.where(accept, partner, m)
        state = state._replace(z=take(state.z, src), opt_state=take(state.opt_state, src))
        return state, labels[src], accept, log_r

    return jax.jit(swap, donate_argnums=0)


class ReplicaOutput(NamedTuple):
    """A replica-exchange run.  Per-member arrays (records, accum, z) are per *rung* (member
    m = s * n_sets + c).  swap_steps: (R,) steps after which round r was proposed; slot_replica:
    (R + 1, n_rungs, n_sets) the replica label at each rung before the first round and after every
    round; attempts, accepts: (n_rungs - 1, n_sets) per neighbour pair (s, s+1)."""

    record_steps: np.ndarray
    records: dict
    accum: Any
    z: Any
    seconds: float
    network_steps: int
    swap_steps: np.ndarray
    slot_replica: np.ndarray
    attempts: np.ndarray
    accepts: np.ndarray
    segments: int = 1          # runs and resumes that produced the output (as RunOutput)
    resumed: bool = False


def _check_layout(members: Members, n_rungs: int):
    M = int(np.shape(members.data_keys)[0])
    if n_rungs < 2:
        raise ParameterError(f"replica exchange needs a ladder of at least two temperatures, got {n_rungs}")
    if M % n_rungs:
        raise ParameterError(f"{M} members do not split into ladders of {n_rungs} rungs")
    C = M // n_rungs
    try:
        s2 = np.asarray(members.hyper.s2, dtype=np.float64).reshape(n_rungs, C)
    except AttributeError:
        raise ParameterError("replica exchange needs the temperature as hyper.s2 (the engine's langevin(lr, s2))") \
            from None
    d = np.diff(s2, axis=0)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ParameterError(f"every ladder's s2 must be strictly monotone along the rungs, got {s2[:, 0].tolist()}")
    dk = np.asarray(members.data_keys).reshape(n_rungs, C, -1)
    if np.any(dk != dk[:1]):
        raise ParameterError("all rungs of a ladder must share one data set (equal data_keys along the rungs)")
    return M, C


def rung_members(members: Members, n_rungs: int) -> Members:
    """Fold the rung index into the init and noise keys (rungs never share a noise stream)."""
    M = int(np.shape(members.data_keys)[0])
    C = M // n_rungs
    rung = np.repeat(np.arange(n_rungs), C)
    fold = lambda keys: np.asarray(jax.vmap(  # noqa: E731
        lambda k, r: jax.random.fold_in(jax.random.fold_in(k, RUNG_STREAM), r))(jnp.asarray(keys), jnp.asarray(rung)))
    return members._replace(init_keys=fold(members.init_keys), noise_keys=fold(members.noise_keys))


def run_replica_exchange(
    task: Task,
    members: Members,
    schedule: Schedule,
    n_rungs: int,
    *,
    swap_every: int = 10,
    checkpoint: Checkpointer | None = None,
    member_labels: list[str] | None = None,
    progress: bool = False,
    progress_desc: str = "replicas",
    stop_after_records: int | None = None,
    initial_z: Any = None,
) -> ReplicaOutput:
    """Parallel tempering: every rung runs the task's Langevin at its own hyper (vmapped over all
    rungs of all ladders, one device); after every ``swap_every`` steps one even-odd round of swaps
    is proposed (module docstring).  Records and accumulated statistics are per rung, as in
    :func:`grokphase.sims.driver.run_ensemble` (the same ``schedule`` semantics).  ``initial_z``:
    starting unit variables per member (default the prior).  Re-running with the same ``checkpoint``
    resumes exactly."""
    M, C = _check_layout(members, n_rungs)
    if isinstance(swap_every, bool) or int(swap_every) != swap_every or swap_every < 1:
        raise ParameterError(f"swap_every must be a positive integer, got {swap_every!r}")
    swap_every = int(swap_every)
    members = rung_members(members, n_rungs)
    group = default_group(1, task)
    init_v, data_v, advance_v, observe_v = _make_functions(task, group)
    swap_v = _swap_function(task, n_rungs, C, group)
    labels_txt = list(member_labels) if member_labels is not None else [f"member {i}" for i in range(M)]
    record_steps = schedule.record_steps()
    swap_steps = np.arange(swap_every, schedule.steps + 1, swap_every, dtype=np.int64)
    events = np.union1d(record_steps, swap_steps)
    rec_set, swap_set = set(record_steps.tolist()), set(swap_steps.tolist())

    hyper = jax.tree_util.tree_map(jnp.asarray, members.hyper)
    data_keys, init_keys, noise_keys = (jnp.asarray(k) for k in (members.data_keys, members.init_keys,
                                                                 members.noise_keys))
    set_keys = jax.vmap(lambda k: jax.random.fold_in(k, SWAP_STREAM))(jnp.asarray(members.noise_keys[:C]))
    data = data_v(data_keys, hyper)
    state = init_v(data_keys, init_keys, hyper)
    if initial_z is not None:
        like = jax.tree_util.tree_structure(state.z)
        if jax.tree_util.tree_structure(initial_z) != like:
            raise ParameterError(f"initial_z has the structure {jax.tree_util.tree_structure(initial_z)}, "
                                 f"the task's parameters {like}")
        state = state._replace(z=jax.tree_util.tree_map(lambda a, b: jnp.asarray(np.asarray(a), b.dtype),
                                                        initial_z, state.z))
    labels = jnp.arange(M, dtype=jnp.int32) // C          # replica label = its starting rung
    history = [np.asarray(labels).reshape(n_rungs, C)]
    attempts = np.zeros((n_rungs - 1, C), np.int64)
    accepts = np.zeros((n_rungs - 1, C), np.int64)
    recs: list[dict] = []
    done_step = 0
    earlier_seconds, segment = 0.0, 1      # engine time and segments of earlier runs (from the checkpoint)
    saved = checkpoint.load(0) if checkpoint is not None else None
    if saved is not None:
        earlier_seconds, seen = checkpoint_timing(saved)
        segment = seen + 1
        state = jax.tree_util.tree_map(jnp.asarray, _arrays_to_tree("s", saved, state))
        recs = checkpoint_records(saved)
        history = list(np.asarray(saved["slot_replica"]))
        attempts, accepts = np.array(saved["attempts"]), np.array(saved["accepts"])
        labels = jnp.asarray(history[-1].reshape(-1), jnp.int32)
        done_step = int(saved["step"])

    bar = progress_bar(M * schedule.steps, progress_desc, initial=M * done_step) if progress else None
    ran: set[str] = set()                  # the jitted functions that have run (compiled) in this call
    t_start = time.perf_counter()
    last_ckpt = t_start
    records_done = 0
    for t in events[events > done_step]:
        t = int(t)
        state = advance_v(state, data, hyper, noise_keys, jnp.int32(t - done_step))
        dn = (t - done_step) * M
        new = {"advance", *(["observe"] if t in rec_set else []), *(["swap"] if t in swap_set else [])} - ran
        done_step = t
        if t in rec_set:
            weight = 1.0 if t > schedule.burn_in else 0.0
            record, state = observe_v(state, data, hyper, jnp.asarray(weight, jnp.float32))
            recs.append(_fetch(record))
            records_done += 1
        diverged = np.asarray(state.diverged_at)
        if np.any(diverged >= 0):
            j = int(np.argmax(diverged >= 0))
            raise SimulationError(f"{labels_txt[j]}: the loss became non-finite at step {int(diverged[j])} "
                                  f"(of {schedule.steps}); the dynamics diverged — use a smaller learning rate")
        if t in swap_set:
            r = len(history) - 1
            part = partners(r, n_rungs)
            partner = jnp.asarray((part[:, None] * C + np.arange(C)[None, :]).reshape(-1), jnp.int32)
            state, labels, acc, _ = swap_v(state, data, hyper, labels, set_keys, partner, jnp.int32(r))
            acc = np.asarray(acc).reshape(n_rungs, C)
            for s in range(r % 2, n_rungs - 1, 2):
                attempts[s] += 1
                accepts[s] += acc[s]
            history.append(np.asarray(labels).reshape(n_rungs, C))
        advance_bar(bar, dn, timed=not new)          # after the sync points above: a compile is left out
        ran |= new
        now = time.perf_counter()
        last = t == events[-1]
        interrupt = stop_after_records is not None and records_done >= stop_after_records and t in rec_set
        if checkpoint is not None and _agreed(now - last_ckpt >= checkpoint.every_seconds or last or interrupt):
            _save(checkpoint, state, recs, done_step, history, attempts, accepts,
                  (earlier_seconds + now - t_start, segment))
            last_ckpt = now
        if interrupt and not last:
            raise _Interrupt(f"stopped after {records_done} records")
    if bar is not None:
        bar.close()
    stacked = {name: np.stack([np.asarray(r[name]) for r in recs], axis=1) for name in recs[0]}
    seconds = earlier_seconds + time.perf_counter() - t_start
    return ReplicaOutput(record_steps, stacked, _fetch(state.accum), _fetch(state.z), seconds,
                         M * (schedule.steps - 0), swap_steps, np.stack(history), attempts, accepts, segment,
                         saved is not None)


def _save(checkpoint: Checkpointer, state, recs, step, history, attempts, accepts, timing):
    arrays = checkpoint_arrays(state, recs, step, timing)
    arrays["slot_replica"] = np.stack(history)
    arrays["attempts"], arrays["accepts"] = attempts, accepts
    checkpoint.save(0, arrays)


# ---------------------------------------------------------------------------------------------
# diagnostics


def replica_positions(slot_replica: np.ndarray) -> np.ndarray:
    """(T, n_rungs, n_sets) replica-at-rung -> (T, n_replicas, n_sets) rung-of-replica."""
    T, R, C = slot_replica.shape
    pos = np.empty_like(slot_replica)
    rung = np.broadcast_to(np.arange(R)[None, :, None], slot_replica.shape)
    t_idx = np.broadcast_to(np.arange(T)[:, None, None], slot_replica.shape)
    c_idx = np.broadcast_to(np.arange(C)[None, None, :], slot_replica.shape)
    pos[t_idx, slot_replica, c_idx] = rung
    return pos


def round_trips(slot_replica: np.ndarray) -> np.ndarray:
    """Completed round trips per (replica, ladder): end-to-end passages (rung 0 -> last rung or back),
    counted from the first end a replica visits, halved (a round trip is two passages).  Returns
    (n_replicas, n_sets) integers."""
    pos = replica_positions(np.asarray(slot_replica))
    T, R, C = pos.shape
    passages = np.zeros((R, C), np.int64)
    last_end = np.full((R, C), -1)
    for t in range(T):
        p = pos[t]
        at_end = (p == 0) | (p == R - 1)
        moved = at_end & (last_end >= 0) & (p != last_end)
        passages += moved
        last_end = np.where(at_end, p, last_end)
    return passages // 2


def ladder_report(attempts: np.ndarray, accepts: np.ndarray, trips: np.ndarray, s2: np.ndarray,
                  threshold: float = SPARSE_ACCEPTANCE) -> dict:
    """Acceptance per neighbour pair (pooled over ladders), round trips, and the pairs below
    ``threshold`` (a sparse ladder: the replicas cannot diffuse through that gap).  ``ok`` is False
    when some pair is below the threshold or no replica completed a round trip."""
    rate = accepts.sum(axis=1) / np.maximum(attempts.sum(axis=1), 1)
    gaps = [{"s2_low": float(min(s2[s], s2[s + 1])), "s2_high": float(max(s2[s], s2[s + 1])),
             "acceptance": float(rate[s])} for s in range(rate.size) if rate[s] < threshold]
    total = int(np.sum(trips))
    ok = not gaps and total > 0
    msg = []
    if gaps:
        msg.append("sparse ladder: swap acceptance below %g between " % threshold
                   + ", ".join(f"s2={g['s2_low']:g}-{g['s2_high']:g} ({g['acceptance']:.3f})" for g in gaps)
                   + "; insert temperatures there")
    if total == 0:
        msg.append("no replica completed a round trip of the ladder: the replica-exchange averages are not "
                   "equilibrated across the ladder (run longer or densify the ladder)")
    return {"acceptance": rate.tolist(), "min_acceptance": float(rate.min()) if rate.size else math.nan,
            "round_trips": total, "round_trips_per_ladder": np.sum(trips, axis=0).tolist(),
            "sparse_pairs": gaps, "ok": ok, "warning": "; ".join(msg)}


def replica_variables(out: ReplicaOutput, s2: np.ndarray, set_dim: str = "seed") -> dict:
    """xarray data variables (name -> (dims, values)) of the swap statistics: acceptance per pair
    and ladder, attempts, round trips per replica, and the replica trajectory (which replica sits at
    which rung after each swap round), plus the pair coordinates."""
    trips = round_trips(out.slot_replica)
    rate = out.accepts / np.maximum(out.attempts, 1)
    s2 = np.asarray(s2, dtype=np.float64)
    return {
        "swap_acceptance": (("pair", set_dim), rate),
        "swap_acceptance_pooled": (("pair",), out.accepts.sum(axis=1) / np.maximum(out.attempts.sum(axis=1), 1)),
        "swap_attempts": (("pair", set_dim), out.attempts),
        "swap_accepts": (("pair", set_dim), out.accepts),
        "round_trips": (("replica", set_dim), trips),
        "replica_at_s2": (("swap_round", "s2", set_dim), out.slot_replica.astype(np.int16)),
        "swap_step": (("swap_round",), np.concatenate([[0], out.swap_steps]).astype(np.int64)),
        "pair_s2_low": (("pair",), np.minimum(s2[:-1], s2[1:])),
        "pair_s2_high": (("pair",), np.maximum(s2[:-1], s2[1:])),
    }


def warn_if_sparse(report: dict, where: str = "replica exchange") -> None:
    if report["warning"]:
        warnings.warn(f"{where}: {report['warning']}", RuntimeWarning, stacklevel=2)
        print(f"[{where}] WARNING: {report['warning']}", file=sys.stderr)
