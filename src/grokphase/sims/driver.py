"""Ensemble driver: JIT-compiled, vmapped Langevin (or Optax) training of many networks at once.

The driver knows nothing about a particular model.  A *task* supplies pure per-member functions
(one network, one data set, one set of hyperparameters) and the driver lifts them with ``vmap``:

* ``make_data(data_key, hyper) -> data``: the member's training (and test) data;
* ``init(init_key, data, hyper) -> z``: unit-variance parameters (theta = prior_std * z);
* ``prior_std(z, hyper) -> std``: per-leaf prior standard deviations;
* ``loss(theta, data) -> L``: L = 1/2 sum_mu (f(x_mu) - y_mu)^2 (the potential, eq. 6);
* ``make_tx(hyper)``: the update rule, an Optax transformation (``langevin`` or any optimizer);
* ``init_accum(theta, data, hyper)`` and ``observe(theta, data, hyper, accum, weight) ->
  (record, accum)``: what is recorded at each record time (``record``, a dict of small arrays) and
  the statistics accumulated after burn-in (``weight`` is 1.0 after burn-in and 0.0 before, so the
  accumulation is branch-free).

Keys: every member has a data key, an init key and a noise key; the noise of step t is
``fold_in(noise_key, t)``, so results do not depend on how steps are chunked, how members are
batched, how many devices share the ensemble, or where a run was interrupted and resumed.

Ensembles larger than ``ensemble_chunk`` are run one chunk of members after the other (memory stays
bounded); within a chunk the member axis is sharded over ``devices`` with ``jax.sharding``.
Between record times the state advances inside one jitted ``lax.fori_loop`` with the state donated.

**Time and provenance.**  ``RunOutput.seconds`` is the engine time of the whole run: with
checkpoints, every chunk's checkpoint carries the engine time spent on it so far (``seconds``) and
the number of segments (runs and resumes) that worked on the run (``segments``), so a resumed run
reports the time of all its segments (up to each one's last checkpoint), how many there were, and
that it was resumed.  The progress bar (stderr, only with ``progress``) shows "compiling" until
every jitted function has run once and restarts its clock then: its rate and ETA count compiled
steps only (the first call's compilation can take longer than the run).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import math
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from grokphase.errors import GrokphaseError, ParameterError
from grokphase.sims.checkpoint import Checkpointer, _arrays_to_tree, _tree_to_arrays, check_resumable, collective
from grokphase.sims.models import scale_params


class SimulationError(GrokphaseError):
    """A simulation that cannot continue (diverging or non-finite dynamics)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When to step, record and accumulate.

    steps: total number of updates per network.  burn_in: records at steps <= burn_in are kept in
    the trajectories but not in the time-averaged statistics.  record_every: record every K steps
    (linear times); with ``log_times`` the record times are log-spaced from K to ``steps`` with
    ``per_decade`` points per decade (unique integers).  The last step is always recorded.
    """

    steps: int
    burn_in: int = 0
    record_every: int = 100
    log_times: bool = False
    per_decade: int = 20

    def __post_init__(self):
        def integer(value):
            return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                    and float(value).is_integer())

        for name in ("steps", "record_every", "per_decade"):
            value = getattr(self, name)
            if not integer(value) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not integer(self.burn_in) or not 0 <= self.burn_in < self.steps:
            raise ParameterError(f"burn_in must be an integer in [0, steps) = [0, {self.steps}), got {self.burn_in!r}")
        object.__setattr__(self, "burn_in", int(self.burn_in))

    def record_steps(self) -> np.ndarray:
        if self.log_times:
            start = min(self.record_every, self.steps)
            num = max(2, int(math.ceil(self.per_decade * math.log10(max(self.steps / start, 1.0)))) + 1)
            times = np.unique(np.round(np.geomspace(start, self.steps, num)).astype(np.int64))
        else:
            times = np.arange(self.record_every, self.steps + 1, self.record_every, dtype=np.int64)
        if times.size == 0 or times[-1] != self.steps:
            times = np.append(times, self.steps)
        return times


class Task(NamedTuple):
    """The per-member functions of a simulation (see the module docstring).  ``penalty(theta,
    hyper)`` (optional) is an extra term of the potential, added to the loss as is (a penalty R of
    the posterior exp(-L/s2 - R) enters as s2 * R, THEORY.md §1).  ``gibbs(z, data, hyper, key) -> z``
    (optional) is an exact conditional update of some parameters (e.g. a Gaussian readout drawn
    from its conditional posterior), applied before every gradient step; the update rule must then
    leave those parameters alone (``optax.multi_transform`` with ``optax.set_to_zero``).  ``cpu_group``
    (optional): networks per ``lax.map`` group on each CPU device (:func:`default_group`); the
    observation then runs in the same groups.

    **Order parameter and umbrella sampling** (THEORY.md §7).  ``order_parameter(theta, data, hyper)
    -> m`` (optional; a float64 scalar) is the model's declared order parameter, linear in the readout
    for fixed first-layer weights, named ``order_parameter_name`` (e.g. "target_component",
    "learned_3").  With ``umbrella`` (a static choice of the task) the sampled potential gains the
    harmonic bias of the member's window, :func:`umbrella_bias`: s2 (kappa/2)(m - m0)^2 with
    ``hyper.umbrella_kappa``, ``hyper.umbrella_m0`` per member (array leaves: one compile for every
    window), i.e. (kappa/2)(m - m0)^2 added to -log posterior; a ``gibbs`` update must then draw from the
    biased conditional.  Every record then also holds ``order_parameter`` (m) and ``potential``
    (``loss`` in float64: L over the training data, without prior, penalty or bias), the inputs of
    MBAR, and the diagnostic ``bias_stiffness`` (:func:`umbrella_records`).  Without ``umbrella`` nothing of this is computed (runs are bit-identical to a task without
    an order parameter); a kappa = 0 window runs the plain chain up to rounding (XLA compiles the two
    programs differently: ~1e-16 relative in float64).

    **Several coordinates.**  With ``coordinate_names`` (a tuple of C >= 2 names; None: one coordinate)
    ``order_parameter`` returns the (C,) vector of those coordinates (``order_parameter_name`` is the
    first), ``hyper.umbrella_kappa`` and ``hyper.umbrella_m0`` are (C,) per member, the bias is the sum
    over coordinates, and the records ``order_parameter`` and ``bias_stiffness`` gain a trailing
    coordinate axis.  A coordinate need not be linear in the readout (e.g. a function of the first-layer
    weights): its bias then reaches the parameters only through the gradient step, and a ``gibbs``
    update draws the readout's conditional given the other parameters, in which it is a constant.

    **Metropolis adjustment** (``metropolis``, static): the update rule's step (a :func:`langevin` step of
    temperature ``hyper.s2`` and rate ``hyper.lr`` on the unit variables, wrapped in
    :func:`grokphase.sims.langevin.metropolis_adjusted`) becomes the proposal of a MALA chain, accepted
    with the Metropolis-Hastings probability (:func:`metropolis_step`), which removes the O(lr) bias of
    the discretisation; ``fixed_leaves`` names the top-level parameters the update rule holds fixed (a
    readout drawn by ``gibbs``, a frozen layer), which are constants of the proposal and its density.  Every record then also holds
    ``metropolis_acceptance``, the chain's acceptance rate since step 0.

    **Proposal of the Metropolis adjustment.**  ``step_scales(hyper) -> {top-level leaf: s_k}`` (optional;
    missing leaves 1): the update rule moves leaf k with rate s_k * ``hyper.lr`` (a constant diagonal
    preconditioner, one step size per layer); ``prior_exact`` (static): its noise variance is
    2 eta_k s2 (1 - eta_k s2/2) (``langevin(..., prior_exact=True)``: the step is exact on the unit Gaussian
    prior).  Both must describe the update rule, whose Gaussian proposal density :func:`metropolis_step` uses.

    **Periodic Gibbs refresh** (``gibbs_per_call``, static): ``gibbs`` is applied once at the start of every
    jitted advance call (every record interval, or every swap interval of a ladder) instead of before every
    step, and the update rule moves every parameter (``fixed_leaves`` empty): a cycle of posterior-preserving
    kernels (one exact conditional draw, then Langevin / MALA steps on the joint posterior), so the posterior
    stays the stationary law, at one conditional draw per interval.  The chain then depends on the record
    interval (the calls' boundaries), not on chunking, devices or resumes (which restart at record steps)."""

    make_data: Callable
    init: Callable
    prior_std: Callable
    loss: Callable
    make_tx: Callable
    init_accum: Callable
    observe: Callable
    penalty: Callable | None = None
    gibbs: Callable | None = None
    cpu_group: int | None = None
    order_parameter: Callable | None = None
    order_parameter_name: str | None = None
    umbrella: bool = False
    coordinate_names: tuple | None = None
    metropolis: bool = False
    fixed_leaves: tuple = ()
    step_scales: Callable | None = None
    prior_exact: bool = False
    gibbs_per_call: bool = False


def umbrella_bias(m, hyper):
    """The harmonic umbrella bias of one member in the units of the potential (L):
    s2 (kappa/2)(m - m0)^2, i.e. U = (kappa/2)(m - m0)^2 added to -log posterior = L/s2 + ... (THEORY.md
    §1: a penalty R of the posterior enters the potential as s2 R).  ``hyper`` has ``s2``,
    ``umbrella_kappa`` and ``umbrella_m0``; with several coordinates (m, kappa, m0 of shape (C,)) the sum
    of the coordinates' biases."""
    u = hyper.s2 * (0.5 * hyper.umbrella_kappa) * (m - hyper.umbrella_m0) ** 2
    return u if jnp.ndim(u) == 0 else jnp.sum(u, axis=-1)


def umbrella_records(task: Task, z, opt_state, data, hyper) -> dict:
    """The records an umbrella task adds at every record time: ``order_parameter`` (m, float64),
    ``potential`` (the loss L over the training data in float64: the sampled likelihood term, without
    prior, penalty or bias) and ``bias_stiffness``: eta s2 kappa |grad_z m|^2 over the parameters the
    update rule moves (a Gibbs-drawn readout excluded), the bias's curvature times the step along grad m.
    The discrete Langevin chain is stable in that direction only below 2, and its O(eta) variance error
    there is a factor 1/(1 - x/2) (THEORY.md §1); keep it well below 1.  It is read off the update rule
    itself: tx(grad m) - tx(0) with one key is -eta grad m on the moved parameters and 0 elsewhere."""
    std = task.prior_std(z, hyper)
    theta = scale_params(z, std)
    theta64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), theta)
    tx = _as_tx(task.make_tx(hyper))
    key = jax.random.PRNGKey(0)

    def stiffness(m_of, kappa):
        grad_m = jax.grad(lambda zz: m_of(task.order_parameter(scale_params(zz, std), data, hyper)))(z)
        moved = tx.update(grad_m, opt_state, z, key=key)[0]
        still = tx.update(jax.tree_util.tree_map(jnp.zeros_like, grad_m), opt_state, z, key=key)[0]
        step = sum(jnp.sum((a.astype(jnp.float64) - b.astype(jnp.float64)) * g.astype(jnp.float64))
                   for a, b, g in zip(*(jax.tree_util.tree_leaves(t) for t in (moved, still, grad_m))))
        return -jnp.asarray(hyper.s2 * kappa, jnp.float64) * step

    if task.coordinate_names is None:
        bias_stiffness = stiffness(lambda m: m, hyper.umbrella_kappa)
    else:                       # one coordinate at a time: eta s2 kappa_c |grad m_c|^2 per coordinate
        bias_stiffness = jnp.stack([stiffness(lambda m, c=c: m[c], hyper.umbrella_kappa[c])
                                    for c in range(len(task.coordinate_names))])
    return {"order_parameter": jnp.asarray(task.order_parameter(theta, data, hyper), jnp.float64),
            "potential": jnp.asarray(task.loss(theta64, data), jnp.float64),
            "bias_stiffness": bias_stiffness}


class ChainState(NamedTuple):
    """Carried state of one ensemble member (vmapped: every leaf gains a leading member axis)."""

    z: Any
    opt_state: Any
    step: jax.Array          # int: number of updates done
    diverged_at: jax.Array   # int: first step whose loss was not finite, -1 if none
    accum: Any


class Members(NamedTuple):
    """Per-member inputs: keys (uint32 key data, shape (M, 2)) and hyperparameters (leading axis M)."""

    data_keys: np.ndarray
    init_keys: np.ndarray
    noise_keys: np.ndarray
    hyper: Any


class RunOutput(NamedTuple):
    record_steps: np.ndarray   # (T,)
    records: dict              # name -> (M, T, ...)
    accum: Any                 # pytree with leading axis M
    z: Any                     # final unit-variance parameters, leading axis M
    seconds: float             # engine time of every segment (the checkpointed part of an interrupted one)
    network_steps: int
    segments: int = 1          # runs and resumes that produced the output (1: one uninterrupted run)
    resumed: bool = False      # whether some checkpoint was loaded


def _as_tx(tx):
    return optax.with_extra_args_support(tx)


#: fold_in tag of the Gibbs stream (the update rule's per-leaf streams fold in crc32 of the leaf path)
GIBBS_STREAM = 0x61B85


def _potential(task: Task, z, data, hyper):
    """The sampled potential of the unit variables: loss + penalty + umbrella bias (prior excluded)."""
    std = task.prior_std(z, hyper)

    def potential(zz):
        theta = scale_params(zz, std)
        value = task.loss(theta, data)
        if task.penalty is not None:
            value = value + task.penalty(theta, hyper)
        if task.umbrella:
            value = value + umbrella_bias(task.order_parameter(theta, data, hyper), hyper).astype(value.dtype)
        return value

    return potential


def _carries_gradient(task: Task) -> bool:
    """MALA without a Gibbs update evaluates the potential's gradient at its proposal anyway: the step
    loop carries it to the next step (one gradient per step instead of two).  A Gibbs update changes z
    before every step, so the gradient is computed afresh there; a once-per-call refresh
    (``gibbs_per_call``) only at the call's start, where the carried gradient starts afresh anyway."""
    return task.metropolis and (task.gibbs is None or task.gibbs_per_call)


def _member_step(task: Task, z, opt_state, data, hyper, noise_key, step, current=None):
    """One update of one member.  ``current``: the (potential, gradient) at ``z`` carried from the previous
    step (:func:`_carries_gradient`), else None (computed here).  Returns (z, opt_state, potential at the
    step's start, (potential, gradient) at the returned z or None)."""
    key = jax.random.fold_in(noise_key, step)
    if task.gibbs is not None and not task.gibbs_per_call:
        z = task.gibbs(z, data, hyper, jax.random.fold_in(key, GIBBS_STREAM))
    potential = _potential(task, z, data, hyper)
    loss, grads = jax.value_and_grad(potential)(z) if current is None else current
    tx = _as_tx(task.make_tx(hyper))
    updates, opt_state = tx.update(grads, opt_state, z, key=key)
    proposal = optax.apply_updates(z, updates)
    if task.metropolis:
        z, opt_state, at_new = metropolis_step(task, potential, z, proposal, loss, grads, opt_state, hyper, key)
        return z, opt_state, loss, at_new
    return proposal, opt_state, loss, None


#: fold_in tag of the Metropolis uniform's stream
METROPOLIS_STREAM = 0x3A1A


def metropolis_step(task: Task, potential, z, proposal, loss, grads, opt_state, hyper, key):
    r"""Accept or reject a Langevin proposal (MALA, THEORY.md §1).  In the unit variables z the target is
    pi(z) ∝ exp(-U(z)/s2) with U = potential + s2 |z|^2/2 over the moved parameters (the leaves in
    ``task.fixed_leaves``, e.g. a ``gibbs``-drawn readout, are constants of this step), and the proposal
    z' = z - eta grad U(z) + sqrt(2 eta s2) xi has density q(z'|z) ∝ exp(-|z' - z + eta grad U(z)|^2/(4 eta s2)).
    Per leaf k the rate is eta_k = s_k eta (``task.step_scales``) and the noise variance v_k = 2 eta_k s2, or
    2 eta_k s2 (1 - eta_k s2/2) with ``task.prior_exact``; the density is then
    q(z'|z) ∝ exp(-sum_k |z'_k - z_k + eta_k grad_k U(z)|^2/(2 v_k)) (its normalisation does not depend on z).
    The proposal is accepted with probability min(1, exp(-(U(z') - U(z))/s2 + log q(z|z') - log q(z'|z)))
    (float64 algebra), otherwise the chain stays at z; a non-finite U(z') is rejected.  The proposal is the plain Langevin
    step itself (the same noise), so an accepted step equals the unadjusted chain's.  One more
    value-and-gradient of the potential per step (at z'), which the step loop reuses at the next step
    when no Gibbs update intervenes (:func:`_carries_gradient`).  Returns (z, opt_state with the counters
    advanced, (potential, gradient) at the returned z)."""
    s2 = jnp.asarray(hyper.s2, jnp.float64)
    eta = jnp.asarray(hyper.lr, jnp.float64)
    loss_p, grads_p = jax.value_and_grad(potential)(proposal)
    moved = [k for k in z if k not in task.fixed_leaves]

    def energy(value, zz):
        prior = sum(jnp.sum(jnp.square(leaf.astype(jnp.float64)))
                    for k in moved for leaf in jax.tree_util.tree_leaves(zz[k]))
        return jnp.asarray(value, jnp.float64) + 0.5 * s2 * prior

    scales = {} if task.step_scales is None else task.step_scales(hyper)

    def log_q(to, frm, g):
        """log q(to | frm) up to the constant: -sum_k |to_k - frm_k + eta_k grad_k U(frm)|^2/(2 v_k), written as
        -sum_k |r_k|^2/w_k / (4 eta s2) with w_k = v_k/(2 eta s2) (1 for the plain step: the same arithmetic)."""
        total = 0.0
        for k in moved:
            s_k = jnp.asarray(scales[k], jnp.float64) if k in scales else None
            eta_k = eta if s_k is None else eta * s_k
            w_k = jnp.ones((), jnp.float64) if s_k is None else s_k
            if task.prior_exact:
                w_k = w_k * (1.0 - 0.5 * eta_k * s2)
            unit = s_k is None and not task.prior_exact
            for t_, f_, g_ in zip(*(jax.tree_util.tree_leaves(x[k]) for x in (to, frm, g))):
                f64 = f_.astype(jnp.float64)
                r = t_.astype(jnp.float64) - f64 + eta_k * (g_.astype(jnp.float64) + s2 * f64)
                total = total + (jnp.sum(r * r) if unit else jnp.sum(r * r) / w_k)
        return -total / (4.0 * eta * s2)

    log_alpha = (-(energy(loss_p, proposal) - energy(loss, z)) / s2
                 + log_q(z, proposal, grads_p) - log_q(proposal, z, grads))
    log_u = jnp.log(jax.random.uniform(jax.random.fold_in(key, METROPOLIS_STREAM), (), jnp.float64))
    accept = jnp.isfinite(log_alpha) & (log_u < log_alpha)
    z_new = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), proposal, z)
    opt_state = opt_state._replace(proposed=opt_state.proposed + 1,
                                   accepted=opt_state.accepted + accept.astype(jnp.int32))
    at_new = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), (loss_p, grads_p), (loss, grads))
    return z_new, opt_state, at_new


#: networks advanced together inside one chunk on a single CPU device (None: one vmap over the chunk)
CPU_GROUP = 4


def default_group(n_devices: int, task: Task | None = None) -> int | None:
    """On one CPU device, advance the chunk in groups of CPU_GROUP networks (``lax.map`` over
    vmapped groups): one vmap over the whole chunk streams (M, n, N) temporaries through memory,
    while groups keep them in cache (benchmarks/README.md: 1.2-1.5x in float32, identical results).
    A task may ask for its own group size (``Task.cpu_group``; the modular task: 1), which then holds
    on every CPU device (with several devices each maps over its own members inside ``shard_map``):
    XLA:CPU rounds a vmap over 2 networks differently from one over 1, so groups of 1 make results
    bit-identical across device counts.  Without one, sharded chunks use one vmap per device (the
    teacher-student task: 1 and 2 devices agree, 3 devices for 3 networks differ at 1e-6), as do
    accelerators."""
    if jax.default_backend() != "cpu":
        return None
    if task is not None and task.cpu_group is not None:
        return task.cpu_group
    return CPU_GROUP if n_devices == 1 else None


@functools.lru_cache(maxsize=16)
def _make_functions(task: Task, group: int | None = None, mesh: Mesh | None = None):
    """jitted, vmapped init / advance / observe for this task (cached: the same task reuses its
    compiled executables).  ``group``: advance in ``lax.map`` groups of this many networks, on each
    device of ``mesh`` (a member-axis mesh: ``shard_map``) when one is given."""

    def init_member(data_key, init_key, hyper):
        data = task.make_data(data_key, hyper)
        z = task.init(init_key, data, hyper)
        opt_state = _as_tx(task.make_tx(hyper)).init(z)
        theta = scale_params(z, task.prior_std(z, hyper))
        accum = task.init_accum(theta, data, hyper)
        return ChainState(z, opt_state, jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32), accum)

    def data_member(data_key, hyper):
        return task.make_data(data_key, hyper)

    def advance_member(state: ChainState, data, hyper, noise_key, n_steps):
        carry_grad = _carries_gradient(task)

        def body(i, carry):
            z, opt_state, diverged_at, current = carry
            step = state.step + i
            z, opt_state, loss, at_new = _member_step(task, z, opt_state, data, hyper, noise_key, step,
                                                      current if carry_grad else None)
            bad = ~jnp.isfinite(loss)
            diverged_at = jnp.where(bad & (diverged_at < 0), step, diverged_at)
            return z, opt_state, diverged_at, at_new if carry_grad else current

        z0 = state.z
        if task.gibbs is not None and task.gibbs_per_call:
            # the periodic refresh: one exact conditional draw at the call's start (the key of its first step)
            z0 = task.gibbs(z0, data, hyper, jax.random.fold_in(jax.random.fold_in(noise_key, state.step), GIBBS_STREAM))
        # the carried (potential, gradient) starts afresh at every call: hyperparameters may change between
        # calls (ladders, replica swaps), never inside one
        current = (jax.value_and_grad(_potential(task, z0, data, hyper))(z0) if carry_grad
                   else jnp.zeros(()))
        z, opt_state, diverged_at, _ = jax.lax.fori_loop(0, n_steps, body,
                                                         (z0, state.opt_state, state.diverged_at, current))
        return state._replace(z=z, opt_state=opt_state, diverged_at=diverged_at, step=state.step + n_steps)

    def observe_member(state: ChainState, data, hyper, weight):
        theta = scale_params(state.z, task.prior_std(state.z, hyper))
        record, accum = task.observe(theta, data, hyper, state.accum, weight)
        if task.umbrella:
            record = {**record, **umbrella_records(task, state.z, state.opt_state, data, hyper)}
        if task.metropolis:
            counts = state.opt_state
            record = {**record, "metropolis_acceptance": (counts.accepted.astype(jnp.float64)
                                                          / jnp.maximum(counts.proposed, 1).astype(jnp.float64))}
        return record, state._replace(accum=accum)

    init_v = jax.jit(jax.vmap(init_member))
    data_v = jax.jit(jax.vmap(data_member))
    if group is None:
        advance_v = jax.jit(jax.vmap(advance_member, in_axes=(0, 0, 0, 0, None)), donate_argnums=0)
    else:
        def advance_grouped(state, data, hyper, noise_key, n_steps):
            return jax.lax.map(lambda args: advance_member(*args, n_steps), (state, data, hyper, noise_key),
                               batch_size=group)

        advance_v = jax.jit(_per_device(advance_grouped, mesh, 4), donate_argnums=0)
    if group is None:
        observe_v = jax.jit(jax.vmap(observe_member, in_axes=(0, 0, 0, None)), donate_argnums=0)
    else:
        def observe_grouped(state, data, hyper, weight):
            return jax.lax.map(lambda args: observe_member(*args, weight), (state, data, hyper), batch_size=group)

        observe_v = jax.jit(_per_device(observe_grouped, mesh, 3), donate_argnums=0)
    return init_v, data_v, advance_v, observe_v


def _per_device(fn, mesh: Mesh | None, n_sharded: int):
    """``fn`` run by every device of ``mesh`` on its own members (``shard_map``): its first
    ``n_sharded`` arguments have a leading member axis, the last one is replicated."""
    if mesh is None:
        return fn
    spec = PartitionSpec("member")
    return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * n_sharded + (PartitionSpec(),), out_specs=spec)


# ---------------------------------------------------------------------------------------------
# the run


def _mesh_sharding(devices):
    mesh = Mesh(np.asarray(devices), ("member",))
    return NamedSharding(mesh, PartitionSpec("member"))


def _shard(tree, sharding):
    """Place host arrays with a leading member axis on ``sharding`` (works across processes too:
    each process supplies the shards its devices hold)."""
    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)


def _fetch(tree):
    """Device arrays -> host NumPy.  In a multi-process run an array sharded over several processes'
    devices is gathered from all of them (a collective every process must join); arrays this
    process holds whole (computed redundantly by every process) are read locally.  A process that
    has died or left shows up here: :class:`~grokphase.sims.checkpoint.LostProcessError`."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return collective(lambda: jax.tree_util.tree_map(get, tree))


def _agreed(flag: bool) -> bool:
    """Process 0's ``flag`` in every process (a multi-process run's decisions that hang on a clock,
    such as when to checkpoint, must be the same in all of them)."""
    if jax.process_count() == 1:
        return flag
    return bool(collective(lambda: multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32))))


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], tree)


class _Interrupt(Exception):
    """Raised by the test hook ``stop_after_records`` to simulate an interrupted run."""


def progress_bar(total: int, desc: str, initial: int = 0):
    """The engine's progress bar on stderr, in network steps, showing "compiling" until
    :func:`advance_bar` restarts its clock."""
    quiet = {"disable": True} if jax.process_index() != 0 else {}     # multi-process runs: process 0 reports
    bar = tqdm(total=total, initial=initial, unit="net-step", unit_scale=True, desc=desc, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1, **quiet)
    bar.set_postfix_str("compiling…")
    return bar


def advance_bar(bar, dn: int, timed: bool, compiling: bool = False) -> None:
    """Count ``dn`` more network steps.  ``timed=False`` (work that included compiling a jitted
    function, or steps loaded from a checkpoint): the steps are counted but left out of the rate, and
    the clock restarts now, so the rate and ETA measure compiled steps only.  ``compiling``: the
    functions have still to compile (keep showing "compiling")."""
    if bar is None:
        return
    if timed or bar.disable:            # a bar switched off (TQDM_DISABLE) keeps no clock
        bar.update(dn)
        return
    bar.n = bar.initial = bar.last_print_n = bar.n + dn
    bar.start_t = bar.last_print_t = bar._time()          # the bar's own clock (time.time)
    if not compiling:
        bar.set_postfix_str("", refresh=False)
    bar.refresh()


def run_ensemble(
    task: Task,
    members: Members,
    schedule: Schedule,
    *,
    ensemble_chunk: int | None = None,
    devices: Sequence[Any] | None = None,
    checkpoint: Checkpointer | None = None,
    member_labels: Sequence[str] | None = None,
    progress: bool = False,
    progress_desc: str = "networks",
    stop_after_records: int | None = None,
    initial_z: Any = None,
) -> RunOutput:
    """Run every member of the ensemble for ``schedule.steps`` updates.

    ``initial_z`` (optional): the members' starting unit-variance parameters (a pytree like the
    task's ``init`` output with a leading member axis) instead of ``init``'s draw from the prior —
    an ordered start, or the end state of a previous run (:func:`run_ladder`).

    Returns the record times, the recorded trajectories (member axis first), the accumulated
    after-burn-in statistics and the final unit-variance parameters.  Raises SimulationError when
    a member's loss becomes non-finite (naming the member and the step).
    """
    M = int(np.shape(members.data_keys)[0])
    if M < 1:
        raise ParameterError("the ensemble is empty: need at least one network (datasets >= 1, inits >= 1)")
    if initial_z is not None:
        bad = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(initial_z) if np.shape(leaf)[:1] != (M,)]
        if bad:
            raise ParameterError(f"initial_z needs a leading member axis of length {M}, got a leaf of shape {bad[0]}")
        if not all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(initial_z)):
            raise ParameterError("initial_z contains non-finite values")
    devices = list(devices) if devices is not None else jax.devices()
    n_dev = len(devices)
    chunk = M if ensemble_chunk is None else int(ensemble_chunk)
    if chunk < 1:
        raise ParameterError(f"ensemble_chunk must be >= 1, got {ensemble_chunk!r}")
    chunk = min(chunk, M)
    chunk = int(math.ceil(chunk / n_dev) * n_dev)     # a multiple of the device count
    sharding = _mesh_sharding(devices) if n_dev > 1 else None
    record_steps = schedule.record_steps()
    group = default_group(n_dev, task)
    # the same call as replica.py's and the tests' when unsharded: lru_cache keys on the arguments as
    # written, so (task, group) and (task, group, None) would compile everything twice
    init_v, data_v, advance_v, observe_v = (_make_functions(task, group) if sharding is None
                                            else _make_functions(task, group, sharding.mesh))
    labels = list(member_labels) if member_labels is not None else [f"member {i}" for i in range(M)]

    bar = progress_bar(M * schedule.steps, progress_desc) if progress else None
    compiled = False                 # whether advance and observe have run once in this call

    outputs = []
    t_start = time.perf_counter()
    records_done = 0
    earlier_seconds = 0.0            # engine time of earlier segments (from loaded checkpoints)
    segment = 1                      # this segment's number: 1 + the most any loaded checkpoint had seen
    resumed = False
    for c, start in enumerate(range(0, M, chunk)):
        t_chunk = time.perf_counter()
        chunk_seconds = 0.0          # engine time earlier segments spent on this chunk
        idx = np.arange(start, min(start + chunk, M))
        pad = np.concatenate([idx, np.full(chunk - idx.size, idx[-1])])   # pad with copies of the last member
        hyper = _take(members.hyper, pad)
        keys = [jnp.asarray(np.asarray(k)[pad]) for k in (members.data_keys, members.init_keys, members.noise_keys)]
        hyper = jax.tree_util.tree_map(jnp.asarray, hyper)
        if sharding is not None:
            keys = [_shard(k, sharding) for k in keys]
            hyper = _shard(hyper, sharding)
        data_keys, init_keys, noise_keys = keys
        data = data_v(data_keys, hyper)
        state = init_v(data_keys, init_keys, hyper)
        if initial_z is not None:
            z0 = _take(initial_z, pad)
            like = jax.tree_util.tree_structure(state.z)
            if jax.tree_util.tree_structure(z0) != like:
                raise ParameterError(f"initial_z has the structure {jax.tree_util.tree_structure(z0)}, "
                                     f"the task's parameters {like}")
            z0 = jax.tree_util.tree_map(lambda a, b: np.asarray(a, dtype=b.dtype), z0, state.z)
            z0 = _shard(z0, sharding) if sharding is not None else jax.tree_util.tree_map(jnp.asarray, z0)
            state = state._replace(z=z0)
        recs: list[dict] = []
        saved = checkpoint.load(c) if checkpoint is not None else None
        if saved is not None:
            check_resumable(checkpoint, c, saved, record_steps)     # a longer run may extend it, a shorter not
            state = _arrays_to_tree("s", saved, state)
            state = _shard(state, sharding) if sharding is not None else jax.tree_util.tree_map(jnp.asarray, state)
            recs = checkpoint_records(saved)
            chunk_seconds, seen = checkpoint_timing(saved)
            earlier_seconds += chunk_seconds
            segment = max(segment, seen + 1)
            resumed = True
            advance_bar(bar, int(saved["step"]) * idx.size, timed=False, compiling=not compiled)
        done_step = int(_fetch(state.step)[0])
        last_ckpt = time.perf_counter()
        for t in record_steps[len(recs):]:
            n_steps = int(t) - done_step
            if n_steps > 0:
                state = advance_v(state, data, hyper, noise_keys, jnp.int32(n_steps))
            weight = 1.0 if t > schedule.burn_in else 0.0
            record, state = observe_v(state, data, hyper, jnp.asarray(weight, jnp.float32))
            record = _fetch(record)
            diverged = _fetch(state.diverged_at)[: idx.size]
            if np.any(diverged >= 0):
                j = int(np.argmax(diverged >= 0))
                raise SimulationError(
                    f"{labels[idx[j]]}: the loss became non-finite at step {int(diverged[j])} "
                    f"(of {schedule.steps}); the dynamics diverged — use a smaller learning rate (--lr)")
            recs.append(record)
            advance_bar(bar, n_steps * idx.size, timed=compiled)
            compiled = compiled or n_steps > 0
            done_step = int(t)
            records_done += 1
            now = time.perf_counter()
            timing = (chunk_seconds + now - t_chunk, segment)
            if checkpoint is not None and _agreed(now - last_ckpt >= checkpoint.every_seconds or t == record_steps[-1]):
                _checkpoint(checkpoint, c, state, recs, done_step, timing)
                last_ckpt = now
            if stop_after_records is not None and records_done >= stop_after_records:
                if checkpoint is not None:
                    _checkpoint(checkpoint, c, state, recs, done_step, timing)
                raise _Interrupt(f"stopped after {records_done} records")
        stacked = {name: np.stack([np.asarray(r[name]) for r in recs], axis=1)[: idx.size] for name in recs[0]}
        accum = jax.tree_util.tree_map(lambda a: a[: idx.size], _fetch(state.accum))
        z = jax.tree_util.tree_map(lambda a: a[: idx.size], _fetch(state.z))
        outputs.append((stacked, accum, z))
    if bar is not None:
        bar.close()
    records = {name: np.concatenate([o[0][name] for o in outputs], axis=0) for name in outputs[0][0]}
    accum = jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *[o[1] for o in outputs])
    z = jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *[o[2] for o in outputs])
    seconds = earlier_seconds + time.perf_counter() - t_start
    return RunOutput(record_steps, records, accum, z, seconds, M * schedule.steps, segment, resumed)


def ladder_branches(s2, anneal: str, start: str) -> list[tuple[str, np.ndarray, str]]:
    """(branch name, s2 ladder in run order, start) of every chain family of an annealing protocol
    (both models): anneal="none": one "independent" family, every s2 started afresh (from the ordered
    start only with start="ordered"); "down": cooling (s2 decreasing, from the prior unless
    start="ordered"); "up": heating (s2 increasing, from the ordered droplet start unless
    start="prior"); "both": the two side by side."""
    s2 = np.asarray(s2)
    if anneal == "none":
        return [("independent", s2, "ordered" if start == "ordered" else "prior")]
    out = []
    if anneal in ("down", "both"):
        out.append(("cooling", np.sort(s2)[::-1], "ordered" if start == "ordered" else "prior"))
    if anneal in ("up", "both"):
        out.append(("heating", np.sort(s2), "prior" if start == "prior" else "ordered"))
    return out


def ladder_branch_output(outs: Sequence[RunOutput], ladder, s2_sorted, members: slice) -> tuple[RunOutput, list]:
    """One branch of an annealing run as a single RunOutput: members ``members`` of every stage
    output in ``outs`` (stage s ran at ``ladder[s]``), stages reordered to ``s2_sorted`` and
    concatenated along the member axis.  Returns it and the stage index of each s2."""
    order = [int(np.flatnonzero(np.asarray(ladder) == v)[0]) for v in s2_sorted]   # stage of each s2

    def take(tree):
        return jax.tree_util.tree_map(lambda *a: np.concatenate([x[members] for x in a]),
                                      *[tree(outs[s]) for s in order])

    out = outs[0]._replace(records=take(lambda o: o.records), accum=take(lambda o: o.accum), z=take(lambda o: o.z))
    return out, order


def prior_z(task: Task, members: Members):
    """The members' prior draws of the unit-variance parameters (what ``run_ensemble`` starts from
    without ``initial_z``), as host arrays with a leading member axis."""
    def one(data_key, init_key, hyper):
        return task.init(init_key, task.make_data(data_key, hyper), hyper)

    hyper = jax.tree_util.tree_map(jnp.asarray, members.hyper)
    return _fetch(jax.jit(jax.vmap(one))(jnp.asarray(members.data_keys), jnp.asarray(members.init_keys), hyper))


def run_ladder(
    task: Task,
    members: Members,
    stage_hypers: Sequence[Any],
    schedule: Schedule,
    *,
    initial_z: Any = None,
    checkpoint_dir: str | None = None,
    checkpoint_config: dict | None = None,
    checkpoint_every: float = 60.0,
    stage_labels: Sequence[str] | None = None,
    **kwargs,
) -> list[RunOutput]:
    """Run the ensemble through a ladder of hyperparameters, each stage starting from the end state
    of the previous one (annealing: a sigma^2 ladder with the state carried over).

    ``stage_hypers[s]`` is stage s's hyperparameter pytree (leading member axis; members may follow
    different ladders, e.g. a cooling and a heating branch side by side).  Stage 0 starts from
    ``initial_z`` (or the prior).  Every stage runs ``schedule`` (burn-in, then time averages of its
    own); its noise keys are ``fold_in(noise_key, s)``, so no two stages share noise.  With
    ``checkpoint_dir`` every stage checkpoints under the hash of (``checkpoint_config``, stage), and a
    re-run resumes inside the interrupted stage after reloading the finished ones.  Other keyword
    arguments go to :func:`run_ensemble`.  Returns one :class:`RunOutput` per stage (each with its own
    ``seconds``, ``segments`` and ``resumed``; :func:`ladder_timing` combines them).
    """
    if len(stage_hypers) < 1:
        raise ParameterError("a ladder needs at least one stage")
    outputs: list[RunOutput] = []
    z = initial_z
    base_desc = kwargs.pop("progress_desc", "networks")
    for s, hyper in enumerate(stage_hypers):
        keys = np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, s))(jnp.asarray(members.noise_keys)))
        stage_members = members._replace(noise_keys=keys, hyper=hyper)
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = Checkpointer(checkpoint_dir, {**(checkpoint_config or {}), "ladder_stage": s},
                                every_seconds=checkpoint_every)
        label = stage_labels[s] if stage_labels is not None else f"stage {s + 1}/{len(stage_hypers)}"
        out = run_ensemble(task, stage_members, schedule, checkpoint=ckpt, initial_z=z,
                           progress_desc=f"{base_desc} {label}", **kwargs)
        outputs.append(out)
        z = out.z
    return outputs


def ladder_timing(outs: Sequence[RunOutput]) -> tuple[float, int, int, bool]:
    """(seconds, network steps, segments, resumed) of a ladder's stages together: the sums of time
    and steps, the most segments any stage took, whether any stage was resumed."""
    return (sum(o.seconds for o in outs), sum(o.network_steps for o in outs), max(o.segments for o in outs),
            any(o.resumed for o in outs))


def checkpoint_arrays(state, recs: list, step: int, timing: tuple[float, int] = (0.0, 1)) -> dict:
    """The arrays of a checkpoint: the carried state's leaves (``s0``, ``s1``, ...), the records so far
    (``r_<name>``, stacked over record times), the step reached, and ``timing`` = (engine seconds spent
    on this chunk by every segment so far, number of the segment writing it) as ``seconds`` and
    ``segments``."""
    arrays = _tree_to_arrays("s", _fetch(state))
    names = sorted(recs[0]) if recs else []
    arrays["n_records"] = np.asarray(len(recs))
    arrays["record_names"] = np.asarray(names, dtype=str)
    arrays["step"] = np.asarray(step)
    arrays["seconds"] = np.asarray(float(timing[0]), np.float64)
    arrays["segments"] = np.asarray(int(timing[1]), np.int64)
    for name in names:
        arrays[f"r_{name}"] = np.stack([np.asarray(r[name]) for r in recs])
    return arrays


def checkpoint_records(saved: dict) -> list[dict]:
    """The records of a loaded checkpoint (:func:`checkpoint_arrays`), one dict per record time."""
    n_rec = int(saved["n_records"])
    names = [str(n) for n in saved["record_names"]] if n_rec else []
    return [{name: saved[f"r_{name}"][k] for name in names} for k in range(n_rec)]


def checkpoint_timing(saved: dict) -> tuple[float, int]:
    """(engine seconds, segments) recorded in a loaded checkpoint; a checkpoint written before they
    were recorded counts as one segment of unknown (0) time."""
    seconds = float(saved["seconds"]) if "seconds" in saved else 0.0
    segments = int(saved["segments"]) if "segments" in saved else 1
    return seconds, segments


def _checkpoint(checkpoint: Checkpointer, c: int, state: ChainState, recs: list, step: int,
                timing: tuple[float, int]) -> None:
    checkpoint.save(c, checkpoint_arrays(state, recs, step, timing))


def _chunk_key(ensemble_chunk: int | None, n_members: int, devices) -> int | None:
    """The chunk size the driver will use (a multiple of the device count), for checkpoint configs."""
    if ensemble_chunk is None:
        return None
    n_dev = len(devices) if devices is not None else len(jax.devices())
    return int(math.ceil(min(ensemble_chunk, n_members) / n_dev) * n_dev)


def write_timing(ds, seconds: float, network_steps: int, segments: int = 1, resumed: bool = False) -> None:
    """The run's timing attributes: ``seconds`` (engine time of every segment that produced it: the
    first run and each resume, up to its last checkpoint), ``network_steps_per_second`` (all network
    steps over ``seconds``), ``segments`` (how many runs and resumes produced it; 1: uninterrupted) and
    ``resumed`` (1 when it continued from checkpoints, else 0)."""
    ds.attrs["seconds"] = float(seconds)
    ds.attrs["network_steps_per_second"] = float(network_steps / max(seconds, 1e-9))
    ds.attrs["segments"] = int(segments)
    ds.attrs["resumed"] = int(bool(resumed))
