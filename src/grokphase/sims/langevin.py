r"""Langevin dynamics as Optax gradient transformations (THEORY.md §1, eq. 6 of the paper).

For every parameter theta the paper's full-batch Langevin step is

    theta <- theta - eta * grad[ L + 1/2 sum_layers gamma_layer |theta_layer|^2 ] + sqrt(2 eta s2) xi,

with L = 1/2 sum_mu (f(x_mu) - y_mu)^2 and xi standard normal.  Its stationary law is proportional
to exp(-L/s2 - sum gamma |theta|^2 / (2 s2)): the Bayesian posterior with prior variance
s2/gamma_layer, so gamma_layer = s2 / prior_variance_layer.

:func:`langevin` is that step as an ``optax.GradientTransformationExtraArgs``: the incoming
``updates`` are grad L, the output is the increment to add to the parameters (``optax.apply_updates``).
It is the chain  prior weight decay (s2/prior_variance) -> scale(-eta) -> Gaussian noise of variance
2 eta s2; the noise key is an explicit ``key=`` argument of ``update`` (the driver derives it from
(member, step) with ``jax.random.fold_in``, so results do not depend on chunking or devices).

**Stability and the preconditioned parametrisation.**  Euler-Maruyama is stable only for
eta * lambda < 2 for every curvature lambda of the potential.  With the teacher-student priors the
readout prior variance is sa2/N = 8/N^2 per weight, so gamma_a = s2 N^2/8 and eta = 2e-3 on raw
parameters diverges already for N ~ 350 (beta >= 1/2).  The engine therefore samples unit-variance
variables z with theta = prior_std * z: the posterior of z is exp(-L(prior_std z)/s2 - |z|^2/2), i.e.
``langevin(eta, s2, prior_variance=1)`` in z.  This is Langevin preconditioned by the prior
covariance: the stationary law (the posterior) is unchanged, every prior curvature equals s2, and
the learning rate is dimensionless (eta s2 is the fraction of the prior relaxed per step).

The discrete chain has an O(eta) bias: on a quadratic potential lambda theta^2/2 (in units of the
update above) its stationary variance is s2/(lambda (1 - eta lambda/2)) exactly.

**Prior-exact noise** (``langevin(..., prior_exact=True)``, issue 20).  With the noise variance
2 eta s2 (1 - eta s2/(2 v)) instead of 2 eta s2 (v the prior variance) the step on the prior alone,
theta' = rho theta + sqrt(v (1 - rho^2)) xi with rho = 1 - eta s2/v, is exact: its stationary law is the
prior N(0, v) for any 0 < eta s2/v < 2 (the variance above with lambda = s2/v times the factor).  As the
proposal of a Metropolis-adjusted chain it is a preconditioned Crank-Nicolson Langevin proposal (pCN,
Cotter, Roberts, Stuart & White 2013): reversible with respect to the Gaussian prior, so the acceptance
rate no longer falls with the number of prior-dominated parameters, only with the likelihood's part.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def add_prior_decay(temperature, prior_variance: Any = 1.0) -> optax.GradientTransformation:
    """updates + (temperature / prior_variance) * params: the gradient of the Gaussian prior term
    s2 |theta|^2/(2 prior_variance).  ``prior_variance`` is a scalar or a pytree matching params
    (per-layer priors)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_prior_decay needs params")
        def decay(g, p, v):
            return g + jnp.asarray(temperature / v, p.dtype) * p

        if isinstance(prior_variance, (int, float)) or hasattr(prior_variance, "shape"):
            out = jax.tree_util.tree_map(lambda g, p: decay(g, p, prior_variance), updates, params)
        else:
            out = jax.tree_util.tree_map(decay, updates, params, prior_variance)
        return out, state

    return optax.GradientTransformation(init, update)


def _path_id(path) -> int:
    """A stable 31-bit id of a leaf's tree path (e.g. "['params']['w']"): noise streams are keyed by
    the parameter's name, so masking (optax.multi_transform / masked replaces other groups by empty
    nodes) or adding parameters never makes two parameters share a stream."""
    return zlib.crc32(jax.tree_util.keystr(path).encode()) & 0x7FFFFFFF


def add_langevin_noise(learning_rate, temperature, variance_factor=1.0) -> optax.GradientTransformationExtraArgs:
    """updates + sqrt(2 * learning_rate * temperature * variance_factor) * xi, xi ~ N(0, I) drawn from ``key``
    (a required keyword argument of ``update``); leaf ``p`` uses ``fold_in(key, crc32(keystr(p)))``,
    one independent stream per parameter name.  ``variance_factor``: 1 for the Langevin step, 1 - eta s2/2
    for the prior-exact step (:func:`langevin`)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, key=None, **extra):
        del params, extra
        if key is None:
            raise ValueError("add_langevin_noise.update needs key=")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
        scale = jnp.sqrt(2.0 * learning_rate * temperature * variance_factor)
        noisy = [u + jnp.asarray(scale, u.dtype) * jax.random.normal(jax.random.fold_in(key, _path_id(path)),
                                                                     u.shape, u.dtype)
                 for path, u in leaves]
        return jax.tree_util.tree_unflatten(treedef, noisy), state

    return optax.GradientTransformationExtraArgs(init, update)


def _scale(factor) -> optax.GradientTransformation:
    """optax.scale that keeps each leaf's dtype (a float64 factor must not promote float32 leaves)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: jnp.asarray(factor, u.dtype) * u, updates), state

    return optax.GradientTransformation(init, update)


def langevin(learning_rate, temperature, prior_variance: Any = 1.0,
             prior_exact: bool = False) -> optax.GradientTransformationExtraArgs:
    """Full-batch Langevin step (eq. 6): -eta * (grad L + (s2/prior_variance) theta) + sqrt(2 eta s2) xi.

    Args:
      learning_rate: eta (scalar; may be a traced array, so it can differ between ensemble members).
      temperature: s2, the Langevin temperature = Bayesian observation-noise variance.
      prior_variance: prior variance of each parameter (scalar or pytree); 1 in the engine's
        preconditioned unit-variance parametrisation.
      prior_exact: noise variance 2 eta s2 (1 - eta s2/(2 prior_variance)): the step is exact on the
        prior (module docstring); needs a scalar ``prior_variance`` and 0 < eta s2/prior_variance < 2
        (outside it the noise is NaN: validate at the boundary).

    ``update(grads, state, params, key=key)`` returns the increment; ``key`` is required.
    """
    factor = 1.0
    if prior_exact:
        if not (isinstance(prior_variance, (int, float)) or hasattr(prior_variance, "shape")):
            raise ValueError("langevin(prior_exact=True) needs one scalar prior_variance")
        factor = 1.0 - 0.5 * learning_rate * temperature / prior_variance
    return optax.chain(
        add_prior_decay(temperature, prior_variance),
        _scale(-1.0 * learning_rate),
        add_langevin_noise(learning_rate, temperature, factor),
    )


class MetropolisState(NamedTuple):
    """State of :func:`metropolis_adjusted`: the wrapped rule's state and the chain's proposal and
    acceptance counts (int32, since step 0)."""

    inner: Any
    proposed: jax.Array
    accepted: jax.Array


def metropolis_adjusted(tx) -> optax.GradientTransformationExtraArgs:
    r"""The update rule ``tx`` (a :func:`langevin` step, possibly inside ``optax.multi_transform``) with the
    counters of a Metropolis-adjusted Langevin chain (MALA): ``update`` is ``tx``'s, the proposal; the
    accept/reject decision needs the potential at the proposal and is taken by the driver
    (:func:`grokphase.sims.driver.metropolis_step`), which also advances the counters.  ``init`` wraps
    ``tx``'s state in :class:`MetropolisState`, so checkpoints, replica swaps and resumes carry the counts."""
    tx = optax.with_extra_args_support(tx)

    def init(params):
        return MetropolisState(tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, **extra):
        out, inner = tx.update(updates, state.inner, params, **extra)
        return out, state._replace(inner=inner)

    return optax.GradientTransformationExtraArgs(init, update)
