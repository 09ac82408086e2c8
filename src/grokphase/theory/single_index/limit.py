r"""The scaling limit and the GFL -> GMFL-I transition of the single-index family (THEORY.md §3, §3b,
§6): the paper's argument (Claim IV) written for any activation and any degree set K.

In the scaling limit (alpha, beta -> infinity at fixed u, r) a neuron's action per input dimension is

    Shat(q, t) = P(q, t) - (u/2) (v·g(q, t))^2,   P = (q^2 + t)/(2 sw2) - log(t/sw2)/2 - 1/2

relative to the bulk saddle (0, sw2) (exact approximation; concentrated: t = sw2, P = q^2/(2 sw2)).

* Bulk (q ~ 1/sqrt(d)): only degree 1 has an O(q) overlap, g_1 ~ G1 q with G1 = m_1(sw2)/sqrt(sw2)
  (erf: 2/sqrt(pi (1 + 2 sw2))); every other degree k >= 2 contributes O(d^{1-k}) to the kernel and
  is not learned by the bulk.  p(q) ~ exp(-d kappa q^2), kappa = 1/(2 sw2) - (u/2) v_1^2 G1^2.
* GFL branch: v_k = yhat_k for k != 1 and v_1 = yhat_1/(1 + u r G1^2/(2 kappa(v_1))) (the paper's
  b = 1/(1 + u r c0/kappa) with c0 = G1^2/2).  Limit free energy per neuron
  F/r = (v·yhat - |v|^2/2)/r + log(2 sw2 kappa)/2.
* Degeneracy (Claim IV): Lambda(v) = sup_{q != 0, t} (u/2)(v·g)^2 / P; droplets lie below the bulk iff
  Lambda > 1.  The transition is Lambda(v_GFL) = 1.
* GMFL-I: the limit F is concave and finite exactly where Lambda(v) <= 1 (a convex set: an
  intersection of slabs |v·g(q, t)| <= sqrt(2 P/u)), so the mixed phase maximises F on that set.
  Its KKT conditions are the paper's equations with a vector basis:
  yhat - v - (u r G1^2/(2 kappa)) v_1 e_1 - u r pi1 (v·g*) g* = 0, Shat(q*, t*) = 0, grad Shat(q*, t*) = 0,
  with pi1 = O(1) the droplet weight (p1 = pi1/d).  Solved by damped Newton, continued along the
  sigma^2 line through the point (u ~ 1/s2^2, r ~ s2) from its transition, and checked afterwards (kappa > 0, pi1 >= 0, Lambda(v) <= 1).

For erf on He1 + eps He3 with K = {1, 3} this reproduces the paper's model's
:func:`grokphase.theory.teacher_student.solve_limit` and ``solve_transition`` (tests check 1e-10).

Where the argument does not carry over, :func:`limit_support` says why and the solvers return NaN
with status NO_BRANCH (or raise with ``check``): degree 0 in K (the constant overlap g_0 is O(1) in
the bulk, so the bulk is not the paper's q ~ 1/sqrt(d) Gaussian), a target degree the activation
cannot express (g_k = 0 identically), K of mixed parity (the droplets at +q* and -q* are not
mirror images and the bulk has odd cross terms: not derived here), and unbounded activations (relu,
gelu, silu, callables): for phi ~ |h| the degeneracy ratio stays positive as |w| -> infinity, so
the instability can be a runaway of |w| rather than a droplet at finite q*.  Even targets (with
symmetric +-q* droplets) do carry over: (v·g)^2 and g g^T are even in q for a single-parity basis.
A bounded activation whose degeneracy maximiser reaches the end of the droplet scan gets status
NO_BRANCH as well."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokphase.errors import ParameterError
from grokphase.theory.batching import flatten, padded, to_float64, unpad
from grokphase.theory.roots import bisect, grid_bisect
from grokphase.theory.single_index.activations import get_activation
from grokphase.theory.single_index.finite_d import coupled_degrees, is_symmetric
from grokphase.theory.single_index.overlaps import check_degrees, overlaps
from grokphase.theory.single_index.params import SingleIndexParams
from grokphase.theory.single_index.target import get_target
from grokphase.theory.status import Phase, Status, raise_on_failure
from grokphase.theory.teacher_student.finite_d import FAILURE_HINTS
from grokphase.theory.teacher_student.params import DEFAULT_APPROXIMATION, check_approximation

#: droplet scan: q in (0, Q_SCAN_MAX sqrt(1 + 2 sw2)], log(t/sw2) in [log 1e-3, log 4]
Q_SCAN = 96
Q_SCAN_MAX = 3.0
S_SCAN = 33
S_RANGE = (math.log(1e-3), math.log(4.0))
#: continuation from the transition along the sigma^2 line, s2 up to e^A_MAX times the point's
A_MAX = 8.0
#: continuation steps from the transition, Newton iterations per step and at the end
CONTINUATION_STEPS = 96
NEWTON_STEP_ITERS = 5
NEWTON_FINAL_ITERS = 30
#: accepted KKT residual and Lambda slack of a GMFL-I solution
KKT_TOL = 1e-9
LAMBDA_SLACK = 1e-8


class SingleIndexLimit(NamedTuple):
    """Scaling-limit solution of the family (leading axes: the batch shape; last axis of ``v``,
    ``coefficients``, ``learned``: the degrees of the basis).

    v: discrepancy in the orthonormal basis; coefficients = v_k/sqrt(k!); learned = 1 - v_k/yhat_k
    (NaN where the target has no such degree).  pi1: droplet weight (p1 = pi1/d; 0 in GFL);
    droplet_fraction = pi1/d with the parameters' d.  q_star, t_star: the droplet saddle (in GFL: the
    maximiser of the degeneracy ratio, 0 and sw2 when that is the q -> 0 limit).  kappa: bulk
    curvature.  degeneracy: Lambda on the GFL branch (> 1: GMFL-I).  free_energy: the limit F/r.
    status, phase as the paper's model's."""

    v: jax.Array
    coefficients: jax.Array
    learned: jax.Array
    pi1: jax.Array
    droplet_fraction: jax.Array
    q_star: jax.Array
    t_star: jax.Array
    kappa: jax.Array
    degeneracy: jax.Array
    free_energy: jax.Array
    u: jax.Array
    r: jax.Array
    status: jax.Array
    phase: jax.Array


def limit_support(target, activation="erf", degrees=None) -> str | None:
    """None where the paper's scaling-limit argument carries over to (activation, target, K);
    otherwise the reason it does not (one sentence)."""
    target = get_target(target)
    act = get_activation(activation)
    degrees = target.degrees if degrees is None else check_degrees(degrees)
    if 0 in degrees:
        return ("degree 0 is in the basis: the constant overlap g_0 is O(1) for bulk neurons, so the bulk "
                "is not the paper's q ~ 1/sqrt(d) Gaussian")
    if not act.bounded:
        return (f"{act.name} is not known to be bounded: for an activation growing like |h| the ratio "
                "(u/2)(v.g)^2/P tends to a positive constant as |w| -> infinity, so the first instability can be "
                "a runaway of |w| instead of a droplet at finite q* (not derived here; the registry's bounded "
                "activations are erf and tanh)")
    coupled = set(coupled_degrees(act, max(degrees)))
    mute = [k for k in target.degrees if k not in coupled and target.coefficient(k) != 0.0]
    if mute:
        return (f"{act.name} cannot express He{mute[0]} (g_{mute[0]} = 0 identically): that degree is never "
                "learned and the droplet argument does not apply to it")
    if not is_symmetric(degrees):
        return ("the basis has mixed parity (odd and even degrees): the droplets at +q* and -q* are not mirror "
                "images and the bulk has odd cross terms, which this derivation does not cover")
    return None


# --- one point ---------------------------------------------------------------------------------

class _Model(NamedTuple):
    activation: object
    degrees: tuple
    exact: bool


def _g(model, q, t):
    return overlaps(model.activation, model.degrees, q, t)


def _G1sq(model, sw2):
    if 1 not in model.degrees:
        return jnp.zeros_like(sw2)
    root = jnp.sqrt(sw2)
    g1 = overlaps(model.activation, (1,), root, 0.0 * root)[..., 0]     # rho = 1: g_1 = m_1(sw2)
    return g1 * g1 / sw2


def _kappa(model, v, u, sw2):
    if 1 not in model.degrees:
        return 1.0 / (2.0 * sw2) + 0.0 * u
    v1 = v[model.degrees.index(1)]
    return 1.0 / (2.0 * sw2) - 0.5 * u * v1 * v1 * _G1sq(model, sw2)


def _gfl_v(model, yhat, u, r, sw2):
    """The GFL branch: v_k = yhat_k except v_1, the root of (b - |y1|) kappa(b) + (u r G1^2/2) b on
    (0, min(|y1|, b_max)) (the paper's :func:`gfl_b`), with y1's sign."""
    if 1 not in model.degrees:
        return yhat + 0.0 * u
    i = model.degrees.index(1)
    y1 = yhat[i]
    G = _G1sq(model, sw2)
    k0 = 1.0 / (2.0 * sw2)
    k2 = 0.5 * u * G
    hi = jnp.minimum(jnp.abs(y1), jnp.sqrt(k0 / k2))
    f = lambda b: (b - jnp.abs(y1)) * (k0 - k2 * b * b) + 0.5 * G * u * r * b  # noqa: E731
    b = bisect(f, jnp.zeros_like(hi), hi)
    return yhat.at[i].set(jnp.sign(y1) * b)


def _cost(model, q, s, sw2):
    """P(q, t) with t = sw2 e^s (s = 0 in the concentrated reduction)."""
    if model.exact:
        return q * q / (2.0 * sw2) + 0.5 * (jnp.exp(s) - 1.0 - s)
    return q * q / (2.0 * sw2)


def _t(model, s, sw2):
    return sw2 * jnp.exp(s) if model.exact else sw2 + 0.0 * s


def _log_ratio(model, z, v, u, sw2):
    q, s = z[0], z[1]
    w = _g(model, q, _t(model, s, sw2)) @ v
    return jnp.log(0.5 * u * w * w) - jnp.log(_cost(model, q, s, sw2))


def _degeneracy(model, v, u, sw2):
    """Lambda(v) = sup (u/2)(v·g)^2/P over q > 0 (and t), and its argmax (q*, t*): a scan, then
    Newton on log(ratio) with steps clipped to the scan spacing; the q -> 0 limit u sw2 v_1^2 G1^2
    (the bulk's own stability, kappa = 0) when that is larger (then q* = 0, t* = sw2)."""
    qmax = Q_SCAN_MAX * jnp.sqrt(1.0 + 2.0 * sw2)
    hq = qmax / Q_SCAN
    qs = hq * jnp.arange(1, Q_SCAN + 1)
    if model.exact:
        ss = jnp.linspace(*S_RANGE, S_SCAN)
        hs = ss[1] - ss[0]
    else:
        ss = jnp.zeros(1)
        hs = 1.0
    Q, S = jnp.meshgrid(qs, ss, indexing="ij")
    w = _g(model, Q, _t(model, S, sw2)) @ v
    lr = jnp.log(0.5 * u * w * w) - jnp.log(_cost(model, Q, S, sw2))
    lr = jnp.where(jnp.isfinite(lr), lr, -jnp.inf)
    k = jnp.argmax(lr.reshape(-1))
    z0 = jnp.stack([Q.reshape(-1)[k], S.reshape(-1)[k]])
    f = lambda z: _log_ratio(model, z, v, u, sw2)  # noqa: E731
    grad, hess = jax.grad(f), jax.hessian(f)
    span = jnp.array([hq, hs])
    dim = 2 if model.exact else 1

    def body(_, z):
        gz, H = grad(z)[:dim], hess(z)[:dim, :dim]
        step = -jnp.linalg.solve(H, gz)
        ok = jnp.all(jnp.isfinite(step)) & (gz @ step > 0.0)
        step = jnp.where(ok, step, gz * span[:dim] ** 2)
        step = jnp.clip(step, -span[:dim], span[:dim])
        zn = z.at[:dim].add(step)
        zn = zn.at[0].set(jnp.clip(zn[0], 0.25 * hq, qmax))
        return jnp.where(f(zn) >= f(z) - 1e-15, zn, z)

    z = jax.lax.fori_loop(0, 40, body, z0)
    lam = jnp.where(z[0] < qmax * (1.0 - 1e-6), jnp.exp(f(z)), jnp.nan)   # at the scan's end: no droplet
    lam0 = u * sw2 * _G1sq(model, sw2) * (v[model.degrees.index(1)] ** 2 if 1 in model.degrees else 0.0)
    interior = (lam > lam0) | jnp.isnan(lam)
    return (jnp.where(interior, lam, lam0), jnp.where(interior, z[0], 0.0),
            jnp.where(interior, _t(model, z[1], sw2), sw2), z)


def _kkt(model, yhat, u, r, sw2, x):
    """KKT residual of GMFL-I in x = (v, pi1, q*, s*) (s* absent in the concentrated reduction)."""
    m = len(model.degrees)
    v, pi1, q = x[:m], x[m], x[m + 1]
    s = x[m + 2] if model.exact else 0.0
    t = _t(model, s, sw2)
    g = _g(model, q, t)
    res = yhat - v - u * r * pi1 * (v @ g) * g
    if 1 in model.degrees:
        i = model.degrees.index(1)
        res = res.at[i].add(-0.5 * u * r * _G1sq(model, sw2) / _kappa(model, v, u, sw2) * v[i])

    def shat(qs):
        ww = _g(model, qs[0], _t(model, qs[1], sw2)) @ v
        return _cost(model, qs[0], qs[1], sw2) - 0.5 * u * ww * ww

    z = jnp.stack([q, jnp.asarray(s, dtype=q.dtype)])
    dS = jax.grad(shat)(z)
    eqs = [res, jnp.atleast_1d(shat(z)), jnp.atleast_1d(dS[0])]
    if model.exact:
        eqs.append(jnp.atleast_1d(dS[1]))
    return jnp.concatenate(eqs)


def _newton_kkt(model, yhat, u, r, sw2, x, iters):
    F = lambda x_: _kkt(model, yhat, u, r, sw2, x_)  # noqa: E731
    J = jax.jacfwd(F)

    def body(_, x_):
        f0 = F(x_)
        step = jnp.linalg.solve(J(x_), -f0)
        # damped: the first of 1, 1/2, 1/4, 1/8 of the step that lowers |F| (else the smallest)
        scales = jnp.array([1.0, 0.5, 0.25, 0.125])
        norms = jax.vmap(lambda a: jnp.linalg.norm(F(x_ + a * step)))(scales)
        norms = jnp.where(jnp.isfinite(norms), norms, jnp.inf)
        better = norms < jnp.linalg.norm(f0)
        a = scales[jnp.where(jnp.any(better), jnp.argmax(better), 3)]
        xn = x_ + a * step
        return jnp.where(jnp.all(jnp.isfinite(xn)) & jnp.any(better), xn, x_)

    return jax.lax.fori_loop(0, iters, body, x)


def _excess(model, yhat, u, r, sw2):
    return _degeneracy(model, _gfl_v(model, yhat, u, r, sw2), u, sw2)[0] - 1.0


def _limit_point(model, yhat, u, r, sw2, d):
    m = len(model.degrees)
    v_g = _gfl_v(model, yhat, u, r, sw2)
    lam, q_g, t_g, _ = _degeneracy(model, v_g, u, sw2)
    gfl = lam <= 1.0
    # --- GMFL-I: continuation along the sigma^2 line through this point (s2 -> e^a s2, i.e.
    # u -> u e^{-2a}, r -> r e^a) from the transition a_c > 0 down to a = 0 ---
    def along(a):
        return u * jnp.exp(-2.0 * a), r * jnp.exp(a)

    e_hi = _excess(model, yhat, *along(A_MAX), sw2)
    a_c = bisect(lambda a: _excess(model, yhat, *along(a), sw2), jnp.zeros_like(u), A_MAX + 0.0 * u, iters=60)
    bracket = (e_hi < 0.0) & ~gfl
    uc, rc = along(a_c)
    vc = _gfl_v(model, yhat, uc, rc, sw2)
    _, _, _, zc = _degeneracy(model, vc, uc, sw2)
    x = jnp.concatenate([vc, jnp.zeros(1), zc[:1]] + ([zc[1:]] if model.exact else []))

    def step(i, x_):
        ui, ri = along(a_c * (1.0 - (i + 1.0) / CONTINUATION_STEPS))
        return _newton_kkt(model, yhat, ui, ri, sw2, x_, NEWTON_STEP_ITERS)

    x = jax.lax.fori_loop(0, CONTINUATION_STEPS, step, x)
    x = _newton_kkt(model, yhat, u, r, sw2, x, NEWTON_FINAL_ITERS)
    v_m, pi1_m, q_m = x[:m], x[m], jnp.abs(x[m + 1])
    t_m = _t(model, x[m + 2], sw2) if model.exact else sw2 + 0.0 * u
    kap_m = _kappa(model, v_m, u, sw2)
    resid = jnp.max(jnp.abs(_kkt(model, yhat, u, r, sw2, x)))
    lam_m = _degeneracy(model, v_m, u, sw2)[0]
    ok = (bracket & (kap_m > 0.0) & (pi1_m >= 0.0) & (resid < KKT_TOL * (1.0 + jnp.max(jnp.abs(yhat))))
          & (lam_m <= 1.0 + LAMBDA_SLACK) & jnp.all(jnp.isfinite(x)))
    v = jnp.where(gfl, v_g, v_m)
    pi1 = jnp.where(gfl, 0.0, pi1_m)
    kap = jnp.where(gfl, _kappa(model, v_g, u, sw2), kap_m)
    q_star = jnp.where(gfl, q_g, q_m)
    t_star = jnp.where(gfl, t_g, t_m)
    F = (v @ yhat - 0.5 * v @ v) / r + 0.5 * jnp.log(2.0 * sw2 * kap)
    status = jnp.where(gfl | ok, Status.CONVERGED, Status.NO_BRANCH).astype(jnp.int32)
    phase = jnp.where(gfl, Phase.GFL, Phase.GMFL_I).astype(jnp.int32)
    fact = jnp.sqrt(jnp.asarray([float(math.factorial(k)) for k in model.degrees]))
    learned = jnp.where(yhat == 0.0, jnp.nan, 1.0 - v / jnp.where(yhat == 0.0, 1.0, yhat))
    return SingleIndexLimit(v=v, coefficients=v / fact, learned=learned, pi1=pi1, droplet_fraction=pi1 / d,
                            q_star=q_star, t_star=t_star, kappa=kap, degeneracy=lam, free_energy=F, u=u, r=r,
                            status=status, phase=phase)


@jax.jit(static_argnames=("model",))
def _limit_batch(model, yhat, u, r, sw2, d):
    return jax.vmap(lambda *a: _limit_point(model, yhat, *a))(u, r, sw2, d)


@jax.jit(static_argnames=("model",))
def _excess_batch(model, yhat, u, r, sw2):
    return jax.vmap(lambda *a: _excess(model, yhat, *a))(u, r, sw2)


@jax.jit(static_argnames=("model",))
def _gfl_degeneracy_batch(model, yhat, u, r, sw2):
    def one(u_, r_, sw2_):
        v = _gfl_v(model, yhat, u_, r_, sw2_)
        lam, q, t, _ = _degeneracy(model, v, u_, sw2_)
        return v, lam, q, t
    return jax.vmap(one)(u, r, sw2)


def _setup(target, activation, degrees, approximation):
    exact = check_approximation(approximation) == "exact"
    target = get_target(target)
    act = get_activation(activation)
    degrees = target.degrees if degrees is None else check_degrees(degrees)
    return _Model(act, degrees, exact), target, jnp.asarray(target.yhat(degrees))


def _unsupported(model, target, what):
    reason = limit_support(target, model.activation, model.degrees)
    if reason is not None:
        raise ParameterError(f"{what} is not available for {model.activation.name} on target {target.spec} "
                             f"(degrees {','.join(map(str, model.degrees))}): {reason}")


def solve_limit(params: SingleIndexParams, target="1:1,3:-0.3", activation="erf", degrees=None, *,
                approximation: str = DEFAULT_APPROXIMATION, check: bool = True) -> SingleIndexLimit:
    """The scaling limit at every point of ``params`` (any broadcast shape; it depends on them only
    through u, r, sw2, and d for ``droplet_fraction``).  ParameterError where :func:`limit_support`
    says the argument does not carry over; with ``check`` a point without a valid GMFL-I solution
    raises SolverError (otherwise its status is NO_BRANCH)."""
    model, target, yhat = _setup(target, activation, degrees, approximation)
    _unsupported(model, target, "the scaling limit")
    shape, flat = flatten(params)
    padded_flat, M = padded(to_float64(flat))
    p = padded_flat
    out = _limit_batch(model, yhat, p.u, p.r, p.sw2, p.d)
    sol = unpad(SingleIndexLimit(*jax.device_get(out)), M, shape)
    if check:
        raise_on_failure(np.asarray(sol.status).reshape(-1), flat,
                         f"single-index scaling limit ({approximation}; {model.activation.name}, {target.spec})",
                         FAILURE_HINTS)
    return sol


class SingleIndexTransition(NamedTuple):
    """GFL -> GMFL-I transition of the family's scaling limit along one parameter: value (NaN where no
    crossing lies in [lo, hi]), u and r there, v the GFL discrepancy there, the droplet saddle
    (q_star, t_star), found."""

    value: np.ndarray
    u: np.ndarray
    r: np.ndarray
    v: np.ndarray
    q_star: np.ndarray
    t_star: np.ndarray
    found: np.ndarray


def solve_transition(params, target="1:1,3:-0.3", activation="erf", degrees=None, along: str = "s2",
                     lo=None, hi=None, *, num_scan: int = 256, log: bool = True, make=None,
                     approximation: str = DEFAULT_APPROXIMATION) -> SingleIndexTransition:
    """Where Lambda(v_GFL) crosses 1 (Claim IV), scanning ``along`` over [lo, hi] and bisecting the
    first crossing (the paper's model's :func:`~grokphase.theory.teacher_student.solve_transition`,
    with the family's degeneracy).  ``params``: a SingleIndexParams or TeacherStudentParams (the
    latter for the axes u and r, through its ``with_axis``); ``make(values)`` as there.  The scan's
    batch is padded to a power of two, so the default ``num_scan`` = 256 is one (the paper's 257
    padded to 512 and doubled the cost of the scan, most of a warm call's time)."""
    model, target, yhat = _setup(target, activation, degrees, approximation)
    _unsupported(model, target, "the scaling-limit transition")
    base = params.broadcast()
    shape = base.shape if hasattr(base, "shape") else np.shape(np.asarray(base.s2))
    if make is None:
        if not hasattr(base, "with_axis"):
            if along not in ("N", "n", "d", "s2", "sa2", "sw2"):
                raise ParameterError(f"unknown parameter {along!r} for a transition search")

            def make(values):
                expanded = jax.tree_util.tree_map(lambda a: np.asarray(a)[..., None], base)
                return expanded.replace(**{along: values})
        else:
            def make(values):
                expanded = jax.tree_util.tree_map(lambda a: np.asarray(a)[..., None], base)
                return expanded.with_axis(along, values)
    current = np.asarray(getattr(base, along), dtype=float) if hasattr(base, along) else np.asarray(
        getattr(base, along), dtype=float)
    lo = np.broadcast_to(np.asarray(current / 100.0 if lo is None else lo, dtype=float), shape)
    hi = np.broadcast_to(np.asarray(current * 100.0 if hi is None else hi, dtype=float), shape)
    if np.any(~(hi > lo)) or (log and np.any(lo <= 0)):
        raise ParameterError(f"transition search range for {along} must satisfy 0 < lo < hi")
    s = np.linspace(0.0, 1.0, num_scan)
    grid = (np.exp(np.log(lo)[..., None] + (np.log(hi) - np.log(lo))[..., None] * s) if log
            else lo[..., None] + (hi - lo)[..., None] * s)

    def invariants(values):
        pr = make(values).broadcast()
        return tuple(np.broadcast_to(np.asarray(a, dtype=float), values.shape) for a in (pr.u, pr.r, pr.sw2))

    def excess(values):
        u, r, sw2 = invariants(values)
        flat = [a.reshape(-1) for a in (u, r, sw2)]
        M = flat[0].size
        size = max(1, 1 << (M - 1).bit_length())
        padded_ = [np.concatenate([a, np.full(size - M, a[-1] if M else 1.0)]) for a in flat]
        return np.asarray(_excess_batch(model, yhat, *padded_))[:M].reshape(values.shape)

    found, value = grid_bisect(excess, grid, log)
    u, r, sw2 = (x[..., 0] for x in invariants(np.where(found, value, current)[..., None]))
    v, _, qs, ts_ = (np.asarray(x) for x in _gfl_degeneracy_batch(model, yhat, u.reshape(-1), r.reshape(-1),
                                                                   sw2.reshape(-1)))
    nan = lambda x: np.where(found, x, np.nan)  # noqa: E731
    return SingleIndexTransition(value=value, u=nan(u), r=nan(r),
                                 v=np.where(found[..., None], v.reshape(u.shape + (-1,)), np.nan),
                                 q_star=nan(qs.reshape(u.shape)), t_star=nan(ts_.reshape(u.shape)), found=found)
