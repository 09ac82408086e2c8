r"""Free energy along an order parameter from umbrella sampling, by MBAR (THEORY.md §7, issue 19).

**Input.**  An umbrella-sampling result: per simulated sigma^2 (``s2``), window j and unit (chain) the
recorded order parameter m and potential L(theta) = 1/2 sum_mu (f(x_mu) - y_mu)^2.  Window j adds
U_j = (kappa_j/2)(m - m0_j)^2 to -log posterior, so a sample theta has in the thermodynamic state
(s2, kappa, m0) the reduced potential

    u(theta) = L(theta)/s2 + (kappa/2)(m(theta) - m0)^2

(the prior is the same in every state and cancels).  Samples of different *systems* (posteriors: a
teacher-student data set) are never pooled: one MBAR per system, then a quenched average (mean over
systems).  Units of one system (inits, seeds, starts) are independent chains of the same posterior.

**Pipeline (one system).**

1. Decorrelation (:func:`decorrelate`): records at steps <= ``param_burn_in`` are dropped; per chain,
   ``pymbar.timeseries.detect_equilibration`` on the chain's own reduced potential gives the start
   of its equilibrated part and a statistical inefficiency g_u; g = max(g_u, g_m) with g_m the
   statistical inefficiency of m on that part; ``subsample_correlated_data`` keeps about one record
   per g.  The g of every chain is recorded.
2. MBAR (:func:`solve_mbar`, ``pymbar.MBAR``) over every simulated state (each s2 x window) gives the
   dimensionless free energies f_k and the overlap matrix O (``compute_overlap``).  ``overlap_min`` is
   the smallest overlap min(O_kl, O_lk) of neighbouring states: windows adjacent in m0 at the same s2
   (with one window per s2: the same window at adjacent s2).  Below :data:`MIN_OVERLAP` = 0.03 (the
   usual rule for neighbouring states, e.g. Klimovich, Shirts & Mobley, JCAMD 29, 397 (2015)) F(m)
   between those windows is not determined and the analysis is refused.
3. Target states: the unbiased posterior at any s2_t has MBAR weights
   w_n ∝ exp(-L_n/s2_t) / sum_k N_k exp(f_k - u_k(theta_n)).  Its Kish effective sample size
   ESS = (sum w)^2 / sum w^2 decides whether s2_t can be trusted: ESS >= max(:data:`MIN_ESS` = 50,
   :data:`MIN_ESS_FRACTION` = 0.1 x the largest ESS of the unbiased states at the simulated s2).  The
   relative rule keeps the reweighted energies within about 1.5 standard deviations of the sampled
   ones (ESS/ESS_sim ~ exp(-Var(L) (1/s2_t - 1/s2_sim)^2) for Gaussian energies), the absolute one
   refuses states that rest on a handful of samples.  A requested s2 that fails is a
   :class:`ReweightingError`; the *trusted range* is the s2 interval around the simulated values where
   the rule holds (scanned on a log grid from s2_min/1.5 to 1.5 s2_max).
4. F(m) = -log p(m): the probability density of m in the target state, the MBAR expectation of bin
   indicators (sum of w over the samples in a bin, divided by the bin width); samples outside the bins
   count in the normalisation.  Profiles are reported as they are, -log of the *normalised* density (not
   shifted to minimum 0: the figure does that), so that ``F_sem``, the standard error of -log p, belongs
   to the reported numbers; a quenched average is the mean of the systems' -log p.
5. Wells (:func:`find_wells`): the global minimum of F and the most prominent other local minimum,
   i.e. the one lying deepest below the highest point of F between it and the global minimum; it is a
   second well when that depth exceeds :data:`WELL_Z` = 3 combined standard errors (a noise dip of a
   flat or single-welled profile is not).  The split between the basins is the highest bin between the
   two minima; the basin with larger m is "ordered".  Basin free energies F_A = -log P(A), the MBAR
   probability of the basin (= -log of the integral of e^{-F} over it); dF = F_ordered - F_disordered.
6. Coexistence: dF(s2) on :data:`SCAN_POINTS` s2 of the trusted range (each with its own split); the
   first sign change between two double-welled points is refined by Brent's method with the split held
   fixed, the split re-determined at the root until it no longer moves.  Barrier at coexistence:
   F(saddle) - min F, the highest point between the two minima above the *deeper* minimum (the larger
   of the two basins' barriers).  Latent heat: <L>_ordered - <L>_disordered, conditional means in the
   two basins at the coexistence s2.
7. Standard errors.  One system: bootstrap (``n_bootstrap`` replicates, default 100): the decorrelated
   samples of each state are resampled with replacement (the state's N_k kept), MBAR solved again
   (:func:`solve_free_energies`, Newton's method started from the full-data f_k; pymbar's solvers if it
   fails) and every quantity recomputed on the replicate
   with the full estimate's bins, basins and split: the coexistence s2 is the replicate's own root, and
   the barrier and latent heat are evaluated there, so their errors include that of s2_coex.  A
   replicate without a root in the trusted range counts as a failure; with more than
   :data:`MAX_BOOTSTRAP_FAILURES` = 10 % failures the coexistence SEs are reported as infinite (unknown).
   This is pymbar's own bootstrap scheme (resampling decorrelated samples within each state), done here
   so that derived quantities (roots, maxima) can be bootstrapped too.  Two or more systems: the
   quenched average's SE is the spread over systems, std(ddof=1)/sqrt(systems) (:func:`grokphase.stats.sem`).

pymbar is imported lazily and quietly (:func:`_pymbar`): its banners, log messages and warnings never
reach stdout or stderr, so ``--json`` output stays one JSON object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np
import xarray as xr
from scipy.optimize import brentq

from grokphase.errors import ParameterError, ResultFileError
from grokphase.io import annotate, parameters_of, to_json
from grokphase.stats import sem as _sem

KIND = "analysis.free_energy"

#: a target state's Kish effective sample size must reach this many samples ...
MIN_ESS = 50.0
#: ... and this fraction of the largest ESS of the unbiased states at the simulated s2 (module docstring)
MIN_ESS_FRACTION = 0.1
#: smallest acceptable overlap between neighbouring simulated states (module docstring, step 2)
MIN_OVERLAP = 0.03
#: a second minimum is a well when its depth below the separating maximum exceeds this many SE
WELL_Z = 3.0
#: coexistence SEs are unknown (inf) when more than this fraction of bootstrap replicates has no root
MAX_BOOTSTRAP_FAILURES = 0.1
#: s2 points per trusted interval at which dF(s2) is scanned for a sign change
SCAN_POINTS = 17
#: the trusted-range scan runs from s2_min / TRUST_FACTOR to TRUST_FACTOR * s2_max
TRUST_FACTOR = 1.5
DEFAULT_BINS = 40
DEFAULT_BOOTSTRAP = 100

REQUIRED = ("order_parameter_trajectory", "potential_trajectory", "window_m0", "window_kappa")


class ReweightingError(ParameterError):
    """A target s2 that the samples cannot be reweighted to (effective sample size or overlap too poor)."""


# ------------------------------------------------------------------------------------------------
# pymbar, quietly
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """Silence pymbar: its loggers, Python warnings, anything it prints; and keep NumPy's global random
    state (``pymbar.MBAR`` reseeds it from the OS on every call)."""
    log = logging.getLogger("pymbar")
    level = log.level
    state = np.random.get_state()
    log.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
        np.random.set_state(state)


_PYMBAR = None


def _pymbar():
    """The pymbar module, imported on first use without its banners (grokphase has already put JAX in
    64-bit mode, which pymbar requires)."""
    global _PYMBAR
    if _PYMBAR is None:
        with _quiet():
            import pymbar
            import pymbar.timeseries  # noqa: F401
        _PYMBAR = pymbar
    return _PYMBAR


def logsumexp(a, axis=None):
    """log sum exp(a) along ``axis`` (NumPy only: scipy's array-API version costs ~0.5 ms a call, and
    the coexistence search makes thousands); -inf for an empty or all -inf input."""
    a = np.asarray(a, np.float64)
    if a.size == 0:
        return -math.inf if axis is None else np.full(np.delete(a.shape, axis), -np.inf)
    mx = np.max(a, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - mx), axis=axis, keepdims=True)) + mx
    return out.item() if axis is None else np.squeeze(out, axis=axis)


# ------------------------------------------------------------------------------------------------
# samples of one system
# ------------------------------------------------------------------------------------------------

class Samples(NamedTuple):
    """The decorrelated samples of one system, pooled over its chains.

    L, m: (N,) potential and order parameter of each sample; state: (N,) index k of the simulated state
    it was drawn in; N_k: (K,) samples per state; s2, m0, kappa: (K,) the states; g, t0: (K, C) each
    chain's statistical inefficiency and the first record of its equilibrated part (after burn-in).

    Several umbrella coordinates: m (N, D) and m0, kappa (K, D) (the bias is the sum over coordinates);
    ``axis`` says which coordinate the profiles F are taken along (:func:`profiled`): the marginal of
    the others."""
    L: np.ndarray
    m: np.ndarray
    state: np.ndarray
    N_k: np.ndarray
    s2: np.ndarray
    m0: np.ndarray
    kappa: np.ndarray
    g: np.ndarray
    t0: np.ndarray
    axis: int = 0


def profiled(samples: Samples) -> np.ndarray:
    """The coordinate of the samples the profiles are taken along, (N,): ``m`` itself with one coordinate,
    its column ``axis`` with several."""
    return samples.m if samples.m.ndim == 1 else samples.m[:, samples.axis]


def reduced_potentials(L, m, s2, m0, kappa) -> np.ndarray:
    """u_kn = L_n/s2_k + (kappa_k/2)(m_n - m0_k)^2, shape (K, N): the reduced potential of sample n in
    state k (units of the log posterior; the s2-independent prior cancels).  Several coordinates (m of
    shape (N, D), m0 and kappa (K, D)): the bias is summed over them,
    u_kn = L_n/s2_k + sum_c (kappa_kc/2)(m_nc - m0_kc)^2."""
    L, m = np.asarray(L, np.float64), np.asarray(m, np.float64)
    s2 = np.asarray(s2, np.float64)[:, None]
    m0, kappa = (np.asarray(v, np.float64)[:, None] for v in (m0, kappa))
    if m.ndim == 1:
        return L[None, :] / s2 + 0.5 * kappa * (m[None, :] - m0) ** 2
    return L[None, :] / s2 + np.sum(0.5 * kappa * (m[None, :, :] - m0) ** 2, axis=-1)


def _chain_inefficiency(u: np.ndarray, m: np.ndarray) -> tuple[int, float]:
    """(t0, g) of one chain: pymbar's equilibration detection on u, g = max(g_u, g_m) on [t0, T); m (T,) or
    (T, D) for several coordinates (g_m: the largest over them)."""
    if m.ndim == 2:
        t0, g = _chain_inefficiency(u, m[:, 0])
        for c in range(1, m.shape[1]):
            g = max(g, _chain_inefficiency(u, m[:, c])[1])
        return t0, g
    ts = _pymbar().timeseries
    T = u.size
    if T < 4:                       # too short for a correlation function: every record counts
        return 0, 1.0
    with _quiet():
        if np.ptp(u) == 0.0:
            t0, g_u = 0, 1.0
        else:
            t0, g_u, _ = ts.detect_equilibration(u, fast=True, nskip=max(1, T // 25))
        rest = m[int(t0):]
        if rest.size < 4:
            g_m = 1.0
        elif np.ptp(rest) == 0.0:       # a chain stuck at one m: one independent sample
            g_m = float(rest.size)
        else:
            g_m = ts.statistical_inefficiency(rest, fast=False)
    return int(t0), float(max(g_u, g_m, 1.0))


def decorrelate(L, m, s2, m0, kappa, *, subsample: bool = True, axis: int = 0) -> Samples:
    """Decorrelated samples of one system from trajectories ``L``, ``m`` of shape (K, C, T): K simulated
    states (``s2``, ``m0``, ``kappa`` of shape (K,)), C chains per state, T records (burn-in already
    dropped).  Per chain: equilibration detection and subsampling at the statistical inefficiency
    (module docstring, step 1); ``subsample=False`` keeps every record (samples known independent).
    Several umbrella coordinates: ``m`` (K, C, T, D), ``m0`` and ``kappa`` (K, D), and ``axis`` the
    coordinate of the profiles (:class:`Samples`)."""
    L, m = np.asarray(L, np.float64), np.asarray(m, np.float64)
    several = m.ndim == 4
    if L.ndim != 3 or m.shape[:3] != L.shape or m.ndim not in (3, 4):
        raise ParameterError(f"L and m must both have shape (states, chains, times) (m: with a trailing coordinate "
                             f"axis for several coordinates), got {L.shape} and {m.shape}")
    K, C, T = L.shape
    D = m.shape[3] if several else 1
    shape = (K, D) if several else (K,)
    s2 = np.asarray(s2, np.float64).reshape(-1)
    try:
        m0, kappa = (np.asarray(v, np.float64).reshape(shape) for v in (m0, kappa))
    except ValueError:
        raise ParameterError(f"m0 and kappa need shape {shape} (one value per state and coordinate), got "
                             f"{np.shape(m0)} and {np.shape(kappa)}") from None
    if not s2.size == K:
        raise ParameterError(f"s2, m0 and kappa need one value per state ({K}), got {s2.size}, {m0.shape[0]}, "
                             f"{kappa.shape[0]}")
    if several and not (isinstance(axis, (int, np.integer)) and 0 <= axis < D):
        raise ParameterError(f"axis must be a coordinate index in [0, {D}), got {axis!r}")
    if T < 1:
        raise ParameterError("no records left after burn-in")
    if not (np.all(np.isfinite(L)) and np.all(np.isfinite(m))):
        raise ParameterError("the trajectories hold non-finite values (a diverged or unfinished run)")
    if not (np.all(s2 > 0) and np.all(np.isfinite(s2))):
        raise ParameterError(f"every simulated s2 must be finite and > 0, got {s2}")
    if not (np.all(kappa >= 0) and np.all(np.isfinite(kappa)) and np.all(np.isfinite(m0))):
        raise ParameterError("window_kappa must be finite and >= 0 and window_m0 finite")
    g = np.ones((K, C))
    t0 = np.zeros((K, C), dtype=np.int64)
    Ls, ms, states = [], [], []
    for k in range(K):
        for c in range(C):
            if subsample:
                u = L[k, c] / s2[k] + np.sum(0.5 * kappa[k] * (m[k, c] - m0[k]) ** 2, axis=-1) if several else \
                    L[k, c] / s2[k] + 0.5 * kappa[k] * (m[k, c] - m0[k]) ** 2
                t0[k, c], g[k, c] = _chain_inefficiency(u, m[k, c])
                with _quiet():
                    keep = t0[k, c] + np.asarray(_pymbar().timeseries.subsample_correlated_data(
                        u[t0[k, c]:], g=g[k, c]), dtype=np.int64)
            else:
                keep = np.arange(T)
            Ls.append(L[k, c, keep])
            ms.append(m[k, c, keep])
            states.append(np.full(keep.size, k, dtype=np.int64))
    state = np.concatenate(states)
    return Samples(np.concatenate(Ls), np.concatenate(ms), state, np.bincount(state, minlength=K),
                   s2, m0, kappa, g, t0, int(axis) if several else 0)


# ------------------------------------------------------------------------------------------------
# MBAR
# ------------------------------------------------------------------------------------------------

class MBARFit(NamedTuple):
    """f_k (K,) dimensionless free energies (f_0 = 0); log_denominator (N,) log sum_k N_k exp(f_k - u_kn);
    overlap (K, K) pymbar's overlap matrix; overlap_min its smallest neighbour overlap (module docstring,
    step 2; NaN with a single state) and the neighbour pair (k, l); overlap_scalar 1 - its second
    eigenvalue."""
    f_k: np.ndarray
    log_denominator: np.ndarray
    overlap: np.ndarray
    overlap_min: float
    overlap_pair: tuple[int, int]
    overlap_scalar: float


def _log_denominator(u_kn, N_k, f_k) -> np.ndarray:
    with np.errstate(divide="ignore"):
        log_N = np.log(np.asarray(N_k, np.float64))
    return logsumexp((log_N + np.asarray(f_k))[:, None] - u_kn, axis=0)


def neighbour_pairs(s2, m0) -> list[tuple[int, int]]:
    """Pairs of neighbouring states: windows adjacent in m0 at the same s2; where an s2 has one window,
    the same window (m0) at adjacent s2.  Several coordinates (m0 of shape (K, D)): windows adjacent
    along one coordinate with the same centres in the others (neighbours on the product grid)."""
    s2, m0 = np.asarray(s2), np.asarray(m0)
    grid = m0.reshape(m0.shape[0], -1)
    pairs = []
    levels = np.unique(s2)
    for s in levels:
        ks = np.flatnonzero(s2 == s)
        for c in range(grid.shape[1]):
            others = [tuple(row) for row in np.delete(grid[ks], c, axis=1)]
            for line in dict.fromkeys(others):          # the states on one grid line along coordinate c
                on = ks[[o == line for o in others]]
                on = on[np.argsort(grid[on, c], kind="stable")]
                pairs += list(zip(on[:-1].tolist(), on[1:].tolist()))
    for a, b in zip(levels[:-1], levels[1:]):
        if (s2 == a).sum() == 1 or (s2 == b).sum() == 1:
            for k in np.flatnonzero(s2 == a):
                same = np.flatnonzero((s2 == b) & np.all(np.isclose(grid, grid[k]), axis=1))
                pairs += [(int(k), int(l)) for l in same]
    return pairs


def solve_mbar(samples: Samples, initial_f_k=None) -> MBARFit:
    """MBAR over the simulated states of ``samples`` (``pymbar.MBAR``), with its overlap matrix."""
    pymbar = _pymbar()
    u_kn = reduced_potentials(samples.L, samples.m, samples.s2, samples.m0, samples.kappa)
    with _quiet():
        mbar = pymbar.MBAR(u_kn, samples.N_k, initial_f_k=initial_f_k)
        f_k = np.asarray(mbar.f_k, np.float64)
        ov = mbar.compute_overlap()
    O = np.asarray(ov["matrix"], np.float64)
    pairs = neighbour_pairs(samples.s2, samples.m0)
    if pairs:
        vals = [min(O[k, l], O[l, k]) for k, l in pairs]
        i = int(np.argmin(vals))
        omin, pair = float(vals[i]), pairs[i]
    else:
        omin, pair = math.nan, (0, 0)
    return MBARFit(f_k, _log_denominator(u_kn, samples.N_k, f_k), O, omin, pair,
                   float(np.real(ov["scalar"])))


def solve_free_energies(u_kn, N_k, f_init, tol: float = 1e-10, maxiter: int = 100) -> np.ndarray | None:
    """MBAR's f_k (f_0 = 0) by Newton's method with backtracking on its convex objective
    Phi(f) = sum_n log sum_k N_k exp(f_k - u_kn) - sum_k N_k f_k, whose stationary point is the MBAR
    equations of Shirts & Chodera (J. Chem. Phys. 129, 124105, 2008), from
    ``f_init``; None when it has not converged (max_k |dPhi/df_k| / N_k < ``tol``) in ``maxiter`` steps.
    Used for the bootstrap replicates, started at the full-data solution (a few steps each, no JAX
    compilation per shape); the test suite checks it against ``pymbar.MBAR``."""
    u_kn = np.asarray(u_kn, np.float64)
    N_k = np.asarray(N_k, np.float64)
    log_N = np.log(N_k)
    f = np.asarray(f_init, np.float64) - float(f_init[0])

    def parts(f):
        a = (log_N + f)[:, None] - u_kn
        log_D = logsumexp(a, axis=0)
        return a, log_D, float(np.sum(log_D) - np.dot(N_k, f))

    a, log_D, phi = parts(f)
    for _ in range(maxiter):
        W = np.exp(a - log_D)                     # N_k W_nk: each column sums to 1
        colsum = W.sum(axis=1)
        grad = colsum - N_k
        if np.max(np.abs(grad[1:]) / N_k[1:], initial=0.0) < tol:
            return f
        hess = np.diag(colsum) - W @ W.T
        try:
            step = np.linalg.solve(hess[1:, 1:], grad[1:])
        except np.linalg.LinAlgError:
            return None
        t = 1.0
        while t > 1e-8:
            trial = f.copy()
            trial[1:] -= t * step
            a_t, log_D_t, phi_t = parts(trial)
            if phi_t <= phi + 1e-12 * abs(phi):
                break
            t *= 0.5
        else:
            return None
        f, a, log_D, phi = trial, a_t, log_D_t, phi_t
    return None


# ------------------------------------------------------------------------------------------------
# reweighting to unbiased target states
# ------------------------------------------------------------------------------------------------

class _Draw(NamedTuple):
    """One set of samples with its MBAR denominators: the full data or one bootstrap replicate."""
    L: np.ndarray
    m: np.ndarray
    bin_index: np.ndarray      # -1 outside the bins
    log_denominator: np.ndarray


def _log_weights(d: _Draw, s2: float) -> np.ndarray:
    """Normalised log MBAR weights of the unbiased state at ``s2``."""
    lw = -d.L / s2 - d.log_denominator
    return lw - logsumexp(lw)


def _ess(d: _Draw, s2: float) -> float:
    """Kish effective sample size of the unbiased state at ``s2``: 1 / sum w^2 (w normalised)."""
    return float(np.exp(-logsumexp(2.0 * _log_weights(d, s2))))


def _minus_log_density(d: _Draw, w: np.ndarray, widths: np.ndarray) -> np.ndarray:
    inside = d.bin_index >= 0
    p = np.bincount(d.bin_index[inside], weights=w[inside], minlength=widths.size) / widths
    with np.errstate(divide="ignore"):
        return -np.log(p)


def _delta_F(d: _Draw, lw: np.ndarray, split: float) -> float:
    """F_ordered - F_disordered = -log P(m > split) + log P(m <= split)."""
    up = d.m > split
    if not up.any() or up.all():
        return math.inf if not up.any() else -math.inf
    return float(logsumexp(lw[~up]) - logsumexp(lw[up]))


def _basin_L(d: _Draw, lw: np.ndarray, split: float) -> tuple[float, float]:
    """Conditional means <L> in the disordered (m <= split) and ordered basins."""
    out = []
    for sel in (d.m <= split, d.m > split):
        if not sel.any():
            out.append(math.nan)
            continue
        w = np.exp(lw[sel] - logsumexp(lw[sel]))
        out.append(float(np.sum(w * d.L[sel])))
    return out[0], out[1]


def _boot_sem(values: np.ndarray, full=None) -> np.ndarray:
    """Bootstrap standard error along axis 0 (std, ddof=1) over the finite replicates; inf where more
    than MAX_BOOTSTRAP_FAILURES of them are not finite (or fewer than two are), or where ``full`` is not
    finite."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    n_ok = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(np.where(ok, values, np.nan), axis=0, ddof=1)
    bad = (n_ok < 2) | (n_ok < (1.0 - MAX_BOOTSTRAP_FAILURES) * values.shape[0])
    if full is not None:
        bad |= ~np.isfinite(full)
    return np.where(bad, np.inf, sd)


# ------------------------------------------------------------------------------------------------
# wells
# ------------------------------------------------------------------------------------------------

class Wells(NamedTuple):
    """wells: 1 or 2; minima: (i_disordered, i_ordered) bin indices (equal for one well); saddle: the
    bin index of the highest point between them (-1 for one well); reason: why there is one well ("" for
    two)."""
    wells: int
    minima: tuple[int, int]
    saddle: int
    reason: str


def find_wells(F, F_sem=None, z: float = WELL_Z) -> Wells:
    """The wells of a profile F (bins, NaN/inf where empty): the global minimum and the most prominent
    other local minimum, a well when its depth below the highest point of F between the two exceeds
    ``z`` combined standard errors ``F_sem`` (any positive depth without ``F_sem``)."""
    F = np.asarray(F, np.float64)
    sem_ = np.zeros_like(F) if F_sem is None else np.asarray(F_sem, np.float64)
    idx = np.flatnonzero(np.isfinite(F))
    if idx.size < 3:
        g = int(idx[np.argmin(F[idx])]) if idx.size else -1
        return Wells(1, (g, g), -1, "fewer than 3 bins hold samples")
    f, s = F[idx], np.where(np.isfinite(sem_[idx]), sem_[idx], np.inf)
    g = int(np.argmin(f))
    best, best_depth = None, 0.0
    for j in range(f.size):
        if j == g:
            continue
        left = f[j - 1] if j > 0 else math.inf
        right = f[j + 1] if j < f.size - 1 else math.inf
        if not (f[j] <= left and f[j] <= right):
            continue
        lo, hi = min(j, g), max(j, g)
        k = lo + int(np.argmax(f[lo:hi + 1]))
        depth = f[k] - f[j]
        if k in (j, g) or depth <= 0 or depth <= z * math.hypot(s[k], s[j]):
            continue
        if depth > best_depth:
            best, best_depth = (j, k), depth
    if best is None:
        return Wells(1, (int(idx[g]), int(idx[g])), -1,
                     f"F(m) has one well (no second minimum deeper than {z:g} standard errors)")
    j, k = best
    a, b = sorted((int(idx[g]), int(idx[j])))
    return Wells(2, (a, b), int(idx[k]), "")


# ------------------------------------------------------------------------------------------------
# one system
# ------------------------------------------------------------------------------------------------

class Profile(NamedTuple):
    """F(m) at one target s2 (one system, or the quenched average over systems).

    F: (bins,) -log p(m) (unshifted: the normalised density), NaN in empty bins; F_sem its standard
    error; ess the Kish effective sample size (for a quenched average: the smallest over systems);
    wells, minima_m (disordered, ordered), saddle_m, split_m (NaN for one well); delta_F = F_ordered -
    F_disordered of the basins with its SE; L_mean = <L> with its SE."""
    s2: float
    F: np.ndarray
    F_sem: np.ndarray
    ess: float
    wells: int
    minima_m: tuple[float, float]
    saddle_m: float
    delta_F: float
    delta_F_sem: float
    L_mean: float
    L_mean_sem: float


class SystemResult(NamedTuple):
    """Everything measured on one system (one MBAR): the profiles at the target s2, the coexistence s2,
    barrier and latent heat with bootstrap SEs (NaN with a ``reason`` where there is none), the trusted
    s2 intervals, the coexistence split, minima and saddle, the overlap and decorrelation summaries."""
    profiles: tuple
    coexistence_s2: float
    coexistence_s2_sem: float
    barrier: float
    barrier_sem: float
    latent_heat: float
    latent_heat_sem: float
    wells: int
    reason: str | None
    candidates: tuple
    trusted_s2: tuple
    split_m: float
    minima_m: tuple[float, float]
    saddle_m: float
    bootstrap_failures: int
    overlap_min: float
    overlap_scalar: float
    ess_threshold: float
    n_samples: int
    g: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("coexistence_s2", "coexistence_s2_sem", "barrier", "barrier_sem",
                                              "latent_heat", "latent_heat_sem", "wells", "reason", "split_m",
                                              "saddle_m", "bootstrap_failures", "overlap_min", "overlap_scalar",
                                              "ess_threshold", "n_samples")}
        out["candidates_s2"] = list(self.candidates)
        out["minima_m"] = list(self.minima_m)
        out["trusted_s2"] = [list(r) for r in self.trusted_s2]
        out["statistical_inefficiency"] = _g_summary(self.g)
        return out


def _g_summary(g) -> dict[str, float]:
    g = np.asarray(g, np.float64)
    return {"mean": float(g.mean()), "max": float(g.max()), "min": float(g.min())}


class _System:
    """The full-data draw and the bootstrap replicates of one system, and the measurements on them."""

    def __init__(self, samples: Samples, edges: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                 min_ess: float, min_ess_fraction: float, min_overlap: float, z: float):
        self.samples, self.edges, self.z = samples, edges, z
        self.centres = 0.5 * (edges[1:] + edges[:-1])
        self.widths = np.diff(edges)
        self.fit = fit = solve_mbar(samples)
        if math.isfinite(fit.overlap_min) and fit.overlap_min < min_overlap:
            k, l = fit.overlap_pair
            show = lambda v: ",".join(f"{x:g}" for x in np.atleast_1d(v))  # noqa: E731
            raise ReweightingError(
                f"neighbouring umbrella states (s2 = {samples.s2[k]:g}, m0 = {show(samples.m0[k])}) and (s2 = "
                f"{samples.s2[l]:g}, m0 = {show(samples.m0[l])}) overlap only {fit.overlap_min:.3g} < {min_overlap:g}: "
                "F(m) between them is not determined (add windows between them or lower kappa)")
        x = profiled(samples)
        bidx = np.searchsorted(edges, x, side="right") - 1
        bidx[x == edges[-1]] = edges.size - 2
        bidx[(x < edges[0]) | (x > edges[-1])] = -1
        self.full = _Draw(samples.L, x, bidx, fit.log_denominator)
        self.s2_sim = np.unique(samples.s2)
        ess_ref = max(_ess(self.full, s) for s in self.s2_sim)
        self.ess_rule = (float(min_ess), float(min_ess_fraction), float(ess_ref))
        self.ess_threshold = max(min_ess, min_ess_fraction * ess_ref)
        grid = np.unique(np.concatenate([np.geomspace(self.s2_sim[0] / TRUST_FACTOR, self.s2_sim[-1] * TRUST_FACTOR,
                                                      121), self.s2_sim]))
        ok = np.array([_ess(self.full, s) >= self.ess_threshold for s in grid])
        self.runs = []                       # trusted intervals: runs of passing grid points holding a simulated s2
        i = 0
        while i < grid.size:
            if not ok[i]:
                i += 1
                continue
            j = i
            while j + 1 < grid.size and ok[j + 1]:
                j += 1
            run = grid[i:j + 1]
            if np.any(np.isin(self.s2_sim, run)):
                self.runs.append(run)
            i = j + 1
        self.n_bootstrap, self.rng = n_bootstrap, rng
        self.reps: list[_Draw] | None = None

    # -- targets -----------------------------------------------------------------------------------
    def trusted(self) -> tuple[tuple[float, float], ...]:
        return tuple((float(r[0]), float(r[-1])) for r in self.runs)

    def check_target(self, s2: float) -> float:
        ess = _ess(self.full, s2)
        if not ess >= self.ess_threshold:
            ranges = ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in self.trusted()) or "empty"
            raise ReweightingError(
                f"s2 = {s2:g} cannot be reweighted from the simulated s2 = {', '.join(f'{s:g}' for s in self.s2_sim)}: "
                f"the effective sample size of its unbiased state is {ess:.1f} < {self.ess_threshold:.1f} = max("
                f"{self.ess_rule[0]:g}, {self.ess_rule[1]:g} x {self.ess_rule[2]:.0f}, the best simulated s2's); "
                f"trusted s2 range: {ranges}")
        return ess

    # -- bootstrap ---------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        s = self.samples
        u_kn = reduced_potentials(s.L, s.m, s.s2, s.m0, s.kappa)
        by_state = [np.flatnonzero(s.state == k) for k in range(s.N_k.size)]
        pymbar = _pymbar()
        reps = []
        for _ in range(self.n_bootstrap):
            idx = np.concatenate([self.rng.choice(ix, size=ix.size, replace=True) for ix in by_state])
            u = u_kn[:, idx]
            f_k = solve_free_energies(u, s.N_k, self.fit.f_k)
            if f_k is None:                        # Newton failed: pymbar's solvers, from the same start
                with _quiet():
                    f_k = np.asarray(pymbar.MBAR(u, s.N_k, initial_f_k=self.fit.f_k).f_k, np.float64)
            reps.append(_Draw(s.L[idx], self.full.m[idx], self.full.bin_index[idx], _log_denominator(u, s.N_k, f_k)))
        self.reps = reps

    # -- measurements ------------------------------------------------------------------------------
    def profile(self, s2: float, ess: float | None = None) -> tuple[Profile, Wells]:
        """F(m), its wells and basins at ``s2``, with bootstrap SEs."""
        draws = [self.full] + self.reps
        lws = [_log_weights(d, s2) for d in draws]
        Fs = np.array([_minus_log_density(d, np.exp(lw), self.widths) for d, lw in zip(draws, lws)])
        F = Fs[0]
        F_sem = _boot_sem(Fs[1:], F)
        wells = find_wells(F, F_sem, self.z)
        Ls = np.array([np.sum(np.exp(lw) * d.L) for d, lw in zip(draws, lws)])
        if wells.wells == 2:
            split = float(self.centres[wells.saddle])
            dFs = np.array([_delta_F(d, lw, split) for d, lw in zip(draws, lws)])
            dF, dF_sem = float(dFs[0]), float(_boot_sem(dFs[1:], dFs[0]))
            minima = (float(self.centres[wells.minima[0]]), float(self.centres[wells.minima[1]]))
            saddle = split
        else:
            dF = dF_sem = saddle = math.nan
            minima = (math.nan, math.nan)
        F = np.where(np.isfinite(F), F, np.nan)
        return (Profile(float(s2), F, F_sem, float(_ess(self.full, s2) if ess is None else ess), wells.wells, minima,
                        saddle, dF, dF_sem, float(Ls[0]), float(_boot_sem(Ls[1:], Ls[0]))), wells)

    def _dF(self, d: _Draw, split: float):
        return lambda s2: _delta_F(d, _log_weights(d, s2), split)

    def _root(self, d: _Draw, split: float, a: float, b: float) -> float:
        f = self._dF(d, split)
        fa, fb = f(a), f(b)
        if not (np.isfinite(fa) and np.isfinite(fb)) or fa * fb > 0:
            return math.nan
        if fa == 0:
            return a
        if fb == 0:
            return b
        return float(brentq(f, a, b, xtol=1e-12 * b, rtol=1e-12))

    def _root_near(self, d: _Draw, split: float, r: float, a: float, b: float, lo: float, hi: float) -> float:
        """A replicate's root of dF nearest the full-data root ``r``: in the scan cell [a, b] if it changes
        sign there, else in brackets widened geometrically around r (at most to the trusted run [lo, hi])."""
        rr = self._root(d, split, a, b)
        if np.isfinite(rr):
            return rr
        f = self._dF(d, split)
        half = max(b - a, 1e-6 * r)
        left, right = a, b
        f_left, f_right = f(left), f(right)
        while left > lo or right < hi:
            half *= 2.0
            new_left, new_right = max(lo, r - half), min(hi, r + half)
            f_nl, f_nr = f(new_left), f(new_right)
            if np.isfinite(f_nl) and np.isfinite(f_left) and f_nl * f_left <= 0:
                return self._root(d, split, new_left, left)
            if np.isfinite(f_nr) and np.isfinite(f_right) and f_nr * f_right <= 0:
                return self._root(d, split, right, new_right)
            left, right, f_left, f_right = new_left, new_right, f_nl, f_nr
        return math.nan

    def _barrier(self, F: np.ndarray, minima: tuple[int, int]) -> float:
        """F(saddle) - min F: the highest bin between the two minima above the deepest bin."""
        if not np.any(np.isfinite(F)):
            return math.nan
        seg = F[minima[0]:minima[1] + 1]
        if not np.all(np.isfinite(seg)):
            return math.nan
        return float(np.max(seg) - np.nanmin(np.where(np.isfinite(F), F, np.nan)))

    def coexistence(self) -> dict[str, Any]:
        none = dict(coexistence_s2=math.nan, coexistence_s2_sem=math.nan, barrier=math.nan, barrier_sem=math.nan,
                    latent_heat=math.nan, latent_heat_sem=math.nan, candidates=(), split_m=math.nan,
                    minima_m=(math.nan, math.nan), saddle_m=math.nan, bootstrap_failures=0)
        if not self.runs:
            return dict(none, wells=1, reason="no s2 can be trusted (effective sample size below the threshold)")
        scans = []            # (s2, wells, split, dF) per run
        for run in self.runs:
            pts = run[np.unique(np.round(np.linspace(0, run.size - 1, min(SCAN_POINTS, run.size))).astype(int))]
            rows = []
            for s in pts:
                prof, w = self.profile(float(s))
                rows.append((float(s), w.wells, prof.saddle_m, prof.delta_F))
            scans.append(rows)
        double = any(r[1] == 2 for rows in scans for r in rows)
        ranges = ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in self.trusted())
        if not double:
            return dict(none, wells=1, reason=f"F(m) has a single well at every s2 of the trusted range {ranges}: "
                                              "no coexistence (a crossover, or windows that miss the second basin)")
        cells = []
        for ri, rows in enumerate(scans):
            for (s_a, w_a, sp_a, d_a), (s_b, w_b, sp_b, d_b) in zip(rows[:-1], rows[1:]):
                if w_a == 2 and w_b == 2 and np.isfinite(d_a) and np.isfinite(d_b) and d_a * d_b <= 0 and d_a != d_b:
                    cells.append((s_a, s_b, sp_a, sp_b, ri))
        if not cells:
            signs = {np.sign(r[3]) for rows in scans for r in rows if r[1] == 2 and np.isfinite(r[3])}
            which = ("the ordered basin is lower" if signs == {-1.0} else "the disordered basin is lower"
                     if signs == {1.0} else "dF changes sign only where F(m) has one well")
            return dict(none, wells=2, reason=f"F(m) is double-welled but {which} at every double-welled s2 of the "
                                              f"trusted range {ranges}: no coexistence inside it")
        candidates = []
        for a, b, sp_a, sp_b, ri in cells:            # each cell's root, the split iterated to the root's saddle
            lo, hi = float(self.runs[ri][0]), float(self.runs[ri][-1])
            r, split = math.nan, math.nan
            for sp in dict.fromkeys((sp_a, sp_b)):
                r = self._root_near(self.full, sp, 0.5 * (a + b), a, b, lo, hi)
                if np.isfinite(r):
                    split = sp
                    break
            for _ in range(4):
                if not np.isfinite(r):
                    break
                prof, w = self.profile(r)
                if w.wells != 2 or prof.saddle_m == split:
                    break
                r_new = self._root_near(self.full, prof.saddle_m, r, a, b, lo, hi)
                if not np.isfinite(r_new):
                    break
                r, split = r_new, prof.saddle_m
            candidates.append((r, split, a, b, ri))
        finite = [c for c in candidates if np.isfinite(c[0])]
        r, split, a, b, ri = finite[0] if finite else candidates[0]
        if not np.isfinite(r):
            return dict(none, wells=2, reason="dF changes sign but no root was found between the scanned s2")
        prof, w = self.profile(r)
        if w.wells != 2:
            return dict(none, wells=2, candidates=tuple(c[0] for c in candidates),
                        reason=f"at the root s2 = {r:.5g} of dF, F(m) is not significantly double-welled")
        minima = w.minima
        F_full = np.where(np.isfinite(prof.F), prof.F, np.inf)
        barrier = self._barrier(F_full, minima)
        L_dis, L_ord = _basin_L(self.full, _log_weights(self.full, r), split)
        run = self.runs[ri]
        lo_run, hi_run = float(self.runs[ri][0]), float(self.runs[ri][-1])
        rb, bb, lb = [], [], []
        for d in self.reps:
            rr = self._root_near(d, split, r, a, b, lo_run, hi_run)
            rb.append(rr)
            if np.isfinite(rr):
                lw = _log_weights(d, rr)
                bb.append(self._barrier(_minus_log_density(d, np.exp(lw), self.widths), minima))
                ld, lo = _basin_L(d, lw, split)
                lb.append(lo - ld)
            else:
                bb.append(math.nan)
                lb.append(math.nan)
        rb, bb, lb = np.array(rb), np.array(bb), np.array(lb)
        failures = int(np.sum(~np.isfinite(rb)))
        reason = None
        if failures > MAX_BOOTSTRAP_FAILURES * len(self.reps):
            reason = (f"{failures} of {len(self.reps)} bootstrap replicates have no coexistence in the trusted range: "
                      "its standard errors are unknown")
        return dict(coexistence_s2=float(r), coexistence_s2_sem=float(_boot_sem(rb)), barrier=barrier,
                    barrier_sem=float(_boot_sem(bb, barrier)), latent_heat=float(L_ord - L_dis),
                    latent_heat_sem=float(_boot_sem(lb)), wells=2, reason=reason,
                    candidates=tuple(float(c[0]) for c in finite), split_m=float(split),
                    minima_m=(float(self.centres[minima[0]]), float(self.centres[minima[1]])),
                    saddle_m=float(self.centres[w.saddle]), bootstrap_failures=failures)


def analyse_system(samples: Samples, s2, edges, *, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                   rng: np.random.Generator | int = 0, min_ess: float = MIN_ESS,
                   min_ess_fraction: float = MIN_ESS_FRACTION, min_overlap: float = MIN_OVERLAP,
                   well_z: float = WELL_Z, coexistence: bool = True) -> SystemResult:
    """MBAR, profiles at the target ``s2`` (bins ``edges``) and the coexistence point of one system
    (module docstring, steps 2-7).  A target that fails the effective-sample-size rule, or neighbouring
    states that overlap less than ``min_overlap``, is a :class:`ReweightingError`."""
    if int(n_bootstrap) < 10:
        raise ParameterError(f"n_bootstrap must be an integer >= 10 (the standard errors are bootstrap), "
                             f"got {n_bootstrap!r}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    sys_ = _System(samples, np.asarray(edges, np.float64), int(n_bootstrap), rng, min_ess, min_ess_fraction,
                   min_overlap, well_z)
    targets = np.asarray(s2, np.float64).reshape(-1)
    ess = [sys_.check_target(float(s)) for s in targets]          # refuse before the bootstrap
    sys_.bootstrap()
    profiles = tuple(sys_.profile(float(s), e)[0] for s, e in zip(targets, ess))
    co = sys_.coexistence() if coexistence else dict(
        coexistence_s2=math.nan, coexistence_s2_sem=math.nan, barrier=math.nan, barrier_sem=math.nan,
        latent_heat=math.nan, latent_heat_sem=math.nan, candidates=(), split_m=math.nan, minima_m=(math.nan, math.nan),
        saddle_m=math.nan, bootstrap_failures=0, wells=max(p.wells for p in profiles) if profiles else 1,
        reason="coexistence not requested")
    return SystemResult(profiles=profiles, trusted_s2=sys_.trusted(), overlap_min=sys_.fit.overlap_min,
                        overlap_scalar=sys_.fit.overlap_scalar, ess_threshold=float(sys_.ess_threshold),
                        n_samples=int(samples.L.size), g=samples.g, **co)


# ------------------------------------------------------------------------------------------------
# quenched average over systems and the result
# ------------------------------------------------------------------------------------------------

RESULT_KEYS = ("coexistence_s2", "coexistence_s2_sem", "barrier", "barrier_sem", "latent_heat", "latent_heat_sem",
               "overlap_min")


@dataclasses.dataclass(frozen=True)
class FreeEnergyResult:
    """F(m) at the target s2 and the coexistence point: the quenched average over the systems (one
    MBAR each).  ``profiles``: one :class:`Profile` per target s2, F = -log p(m) of the normalised density
    (not shifted); ``systems``: the
    per-system results; ``sem_method``: how the SEs were obtained."""
    order_parameter: str
    edges: np.ndarray
    profiles: tuple
    coexistence_s2: float
    coexistence_s2_sem: float
    barrier: float
    barrier_sem: float
    latent_heat: float
    latent_heat_sem: float
    overlap_min: float
    wells: int
    reason: str | None
    systems: tuple
    system_labels: tuple
    sem_method: str
    n_bootstrap: int
    thresholds: dict

    @property
    def m(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary: :data:`RESULT_KEYS`, ``profiles`` [{s2, m, F, F_sem, ...}] and extras."""
        out: dict[str, Any] = {k: getattr(self, k) for k in RESULT_KEYS}
        out["profiles"] = [{"s2": p.s2, "m": self.m.tolist(), "F": p.F.tolist(), "F_sem": p.F_sem.tolist(),
                            "ess": p.ess, "wells": p.wells, "minima_m": list(p.minima_m), "saddle_m": p.saddle_m,
                            "delta_F": p.delta_F, "delta_F_sem": p.delta_F_sem, "L_mean": p.L_mean,
                            "L_mean_sem": p.L_mean_sem} for p in self.profiles]
        out.update(wells=self.wells, reason=self.reason, order_parameter=self.order_parameter,
                   statistical_inefficiency=_g_summary(np.concatenate([np.ravel(s.g) for s in self.systems])),
                   barrier_reference="F(saddle) - F(deeper basin minimum)",
                   latent_heat_definition="<L>_ordered - <L>_disordered at coexistence (ordered: larger m)",
                   sem_method=self.sem_method, n_bootstrap=self.n_bootstrap, thresholds=dict(self.thresholds),
                   n_systems=len(self.systems),
                   systems=[dict(system=lab, **s.to_dict()) for lab, s in zip(self.system_labels, self.systems)])
        return out

    def to_dataset(self, parameters: dict[str, Any] | None = None, source: xr.Dataset | None = None) -> xr.Dataset:
        """The result as an annotated Dataset (kind ``analysis.free_energy``) for
        :func:`grokphase.io.save_dataset` and :func:`grokphase.plotting.free_energy.plot_free_energy`."""
        s2 = np.array([p.s2 for p in self.profiles])
        S = len(self.systems)
        stack = lambda key: np.array([getattr(p, key) for p in self.profiles], np.float64)  # noqa: E731
        ds = xr.Dataset(
            {"F": (("s2", "m"), stack("F").reshape(s2.size, -1)),
             "F_sem": (("s2", "m"), stack("F_sem").reshape(s2.size, -1)),
             "ess": ("s2", stack("ess")), "wells": ("s2", np.array([p.wells for p in self.profiles], np.int64)),
             "minima_m": (("s2", "basin"), stack("minima_m").reshape(s2.size, 2)),
             "saddle_m": ("s2", stack("saddle_m")), "delta_F": ("s2", stack("delta_F")),
             "delta_F_sem": ("s2", stack("delta_F_sem")), "L_mean": ("s2", stack("L_mean")),
             "L_mean_sem": ("s2", stack("L_mean_sem")),
             "m_edges": ("edge", np.asarray(self.edges, np.float64)),
             **{f"system_{k}": ("system", np.array([getattr(s, k) for s in self.systems], np.float64))
                for k in ("coexistence_s2", "coexistence_s2_sem", "barrier", "barrier_sem", "latent_heat",
                          "latent_heat_sem", "overlap_min", "split_m", "saddle_m")},
             "system_minima_m": (("system", "basin"), np.array([s.minima_m for s in self.systems], np.float64)),
             "system_wells": ("system", np.array([s.wells for s in self.systems], np.int64))},
            coords={"s2": s2, "m": self.m, "basin": ["disordered", "ordered"], "system": np.arange(S),
                    "system_label": ("system", [str(x) for x in self.system_labels])})
        ds["F"].attrs["description"] = "-log p(m), p the normalised density of m at s2 (MBAR, unbiased state)"
        extra = {k: getattr(self, k) for k in RESULT_KEYS}
        extra.update(wells=self.wells, reason="none" if self.reason is None else self.reason,
                     order_parameter=self.order_parameter, sem_method=self.sem_method,
                     summary_json=json.dumps(_jsonable_summary(self.to_dict())))
        if source is not None:
            extra["source_kind"] = str(source.attrs.get("grokphase_kind", "unknown"))
            extra["source_parameters_json"] = json.dumps(parameters_of(source))
            extra["source_git_revision"] = str(source.attrs.get("git_revision", "unknown"))
        params = {"n_bootstrap": self.n_bootstrap, "bins": int(self.edges.size - 1), "s2": s2.tolist(),
                  **self.thresholds, **(parameters or {})}
        return annotate(ds, kind=KIND, parameters=params, extra=extra)


def _jsonable_summary(d):
    return json.loads(to_json(d))


def _combine(results: Sequence[SystemResult], labels, edges, order_parameter, n_bootstrap,
             thresholds) -> FreeEnergyResult:
    """Quenched average: the mean over systems, SE from their spread (>= 2 systems) or the one system's
    bootstrap SE."""
    S = len(results)
    many = S >= 2

    def avg(values, sems):
        values = np.asarray(values, np.float64)
        if not many:
            return values[0], np.asarray(sems, np.float64)[0]
        return values.mean(axis=0), _sem(values, axis=0)

    profiles = []
    for i in range(len(results[0].profiles)):
        ps = [r.profiles[i] for r in results]
        F, F_sem = avg([p.F for p in ps], [p.F_sem for p in ps])
        F = np.asarray(F, np.float64)
        F_sem = np.where(np.isfinite(F), F_sem, np.inf)
        w = find_wells(np.where(np.isfinite(F), F, np.inf), F_sem, thresholds["well_z"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        dF, dF_sem = avg([p.delta_F for p in ps], [p.delta_F_sem for p in ps])
        Lm, Lm_sem = avg([p.L_mean for p in ps], [p.L_mean_sem for p in ps])
        if w.wells == 2:
            minima, saddle = (float(centres[w.minima[0]]), float(centres[w.minima[1]])), float(centres[w.saddle])
        else:
            minima, saddle = (math.nan, math.nan), math.nan
        profiles.append(Profile(ps[0].s2, F, np.where(np.isfinite(F), F_sem, np.nan),
                                float(min(p.ess for p in ps)), w.wells, minima, saddle, float(dF), float(dF_sem),
                                float(Lm), float(Lm_sem)))
    out = {}
    for key in ("coexistence_s2", "barrier", "latent_heat"):
        v, s = avg([getattr(r, key) for r in results], [getattr(r, key + "_sem") for r in results])
        out[key], out[key + "_sem"] = float(v), float(s)
    reasons = [(lab, r.reason) for lab, r in zip(labels, results) if r.reason]
    if not reasons:
        reason = None
    elif S == 1:
        reason = reasons[0][1]
    else:
        reason = "; ".join(f"system {lab}: {why}" for lab, why in reasons)
    if not np.isfinite(out["coexistence_s2"]) and reason is None:
        reason = "no coexistence"
    omins = [r.overlap_min for r in results if np.isfinite(r.overlap_min)]
    sem_method = (f"spread over {S} systems (std/sqrt(systems)); per system: {n_bootstrap} bootstrap replicates"
                  if many else f"bootstrap: {n_bootstrap} replicates, decorrelated samples resampled within each "
                               "state, MBAR solved again for each")
    return FreeEnergyResult(order_parameter=order_parameter, edges=np.asarray(edges, np.float64),
                            profiles=tuple(profiles),
                            overlap_min=float(min(omins)) if omins else math.nan,
                            wells=int(min(r.wells for r in results)), reason=reason, systems=tuple(results),
                            system_labels=tuple(labels), sem_method=sem_method, n_bootstrap=int(n_bootstrap),
                            thresholds=dict(thresholds), **out)


def _edges(bins, m_all: np.ndarray) -> np.ndarray:
    if bins is None:
        bins = DEFAULT_BINS
    if np.ndim(bins) == 0:
        if isinstance(bins, bool) or int(bins) != bins or int(bins) < 3:
            raise ParameterError(f"bins must be an integer >= 3 or an increasing array of edges, got {bins!r}")
        lo, hi = float(np.min(m_all)), float(np.max(m_all))
        if not hi > lo:
            raise ParameterError(f"the order parameter takes the single value {lo:g}: no profile")
        return np.linspace(lo, hi, int(bins) + 1)
    edges = np.asarray(bins, np.float64).reshape(-1)
    if edges.size < 4 or not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
        raise ParameterError("bin edges must be at least 4 finite, strictly increasing values")
    return edges


def free_energy(samples: Sequence[Samples], s2=None, bins=None, *, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                seed: int = 0, min_ess: float = MIN_ESS, min_ess_fraction: float = MIN_ESS_FRACTION,
                min_overlap: float = MIN_OVERLAP, well_z: float = WELL_Z, order_parameter: str = "m",
                system_labels: Sequence | None = None, coexistence: bool = True) -> FreeEnergyResult:
    """Profiles and coexistence from decorrelated samples, one :class:`Samples` per system (never pooled):
    one MBAR per system, then the quenched average.  ``s2``: target s2 values (default: the simulated
    ones); ``bins``: number of equal bins over the sampled m (default 40) or the edges; ``seed``: of the
    bootstrap (system i uses ``default_rng([seed, i])``)."""
    if not samples:
        raise ParameterError("no systems given")
    for name, v, lo in (("min_ess", min_ess, 0.0), ("min_ess_fraction", min_ess_fraction, 0.0),
                        ("min_overlap", min_overlap, 0.0), ("well_z", well_z, 0.0)):
        if not (np.isfinite(v) and v >= lo):
            raise ParameterError(f"{name} must be a finite number >= {lo:g}, got {v!r}")
    targets = np.unique(np.concatenate([np.unique(s.s2) for s in samples])) if s2 is None else \
        np.asarray(s2, np.float64).reshape(-1)
    if targets.size == 0 or not np.all(np.isfinite(targets) & (targets > 0)):
        raise ParameterError(f"target s2 must be finite and > 0, got {targets}")
    edges = _edges(bins, np.concatenate([profiled(s) for s in samples]))
    labels = tuple(range(len(samples))) if system_labels is None else tuple(system_labels)
    thresholds = {"min_ess": float(min_ess), "min_ess_fraction": float(min_ess_fraction),
                  "min_overlap": float(min_overlap), "well_z": float(well_z),
                  "max_bootstrap_failures": MAX_BOOTSTRAP_FAILURES}
    results = []
    for i, smp in enumerate(samples):
        try:
            results.append(analyse_system(smp, targets, edges, n_bootstrap=n_bootstrap,
                                          rng=np.random.default_rng([int(seed), i]), min_ess=min_ess,
                                          min_ess_fraction=min_ess_fraction, min_overlap=min_overlap,
                                          well_z=well_z, coexistence=coexistence))
        except ReweightingError as err:
            if len(samples) == 1:
                raise
            raise ReweightingError(f"system {labels[i]}: {err}") from None
    return _combine(results, labels, edges, order_parameter, n_bootstrap, thresholds)


def free_energy_from_arrays(L, m, s2_k, m0_k, kappa_k, s2=None, bins=None, *, subsample: bool = True, axis: int = 0,
                            **kw) -> FreeEnergyResult:
    """:func:`free_energy` from trajectories ``L``, ``m`` of shape (systems, K, chains, T) (burn-in
    dropped) and the K states ``s2_k``, ``m0_k``, ``kappa_k``; chains are decorrelated first
    (:func:`decorrelate`; ``subsample=False`` keeps every record).  Several coordinates: ``m`` with a
    trailing coordinate axis, ``m0_k``, ``kappa_k`` (K, D), profiles along coordinate ``axis``."""
    L, m = np.asarray(L, np.float64), np.asarray(m, np.float64)
    if L.ndim != 4 or L.shape != m.shape[:4] or m.ndim not in (4, 5):
        raise ParameterError(f"L and m must have shape (systems, states, chains, times) (m: with a trailing "
                             f"coordinate axis for several coordinates), got {L.shape}, {m.shape}")
    samples = [decorrelate(L[i], m[i], s2_k, m0_k, kappa_k, subsample=subsample, axis=axis) for i in range(L.shape[0])]
    return free_energy(samples, s2, bins, **kw)


# ------------------------------------------------------------------------------------------------
# the result Dataset of an umbrella simulation
# ------------------------------------------------------------------------------------------------

class UmbrellaArrays(NamedTuple):
    """An umbrella result as arrays: L, m (systems, K, chains, T) after burn-in; the K = s2 x window
    states; the system labels and dims; the unit dims (chains); the order parameter's name.  Several
    coordinates (a ``coordinate`` dimension): m (systems, K, chains, T, D), m0_k and kappa_k (K, D),
    ``coordinates`` their names (one coordinate: its name alone)."""
    L: np.ndarray
    m: np.ndarray
    s2_k: np.ndarray
    m0_k: np.ndarray
    kappa_k: np.ndarray
    system_labels: tuple
    system_dims: tuple
    unit_dims: tuple
    order_parameter: str
    coordinates: tuple = ()


def coordinates_of(ds: xr.Dataset) -> tuple[str, ...]:
    """The umbrella coordinates of a result, in the order of its ``coordinate`` dimension (one coordinate:
    the order parameter's name)."""
    if "coordinate" in ds["order_parameter_trajectory"].dims:
        return tuple(str(c) for c in ds["coordinate"].values)
    return (str(ds.attrs.get("umbrella_order_parameter", "m")),)


def coordinate_index(ds: xr.Dataset, coordinate: str | None) -> int:
    """The index of ``coordinate`` (None: the first, the run's primary) among the result's coordinates."""
    names = coordinates_of(ds)
    if coordinate is None:
        return 0
    if coordinate not in names:
        raise ParameterError(f"unknown coordinate {coordinate!r}: this umbrella result has {', '.join(names)}")
    return names.index(coordinate)


def _require_umbrella(ds: xr.Dataset) -> None:
    kind = ds.attrs.get("grokphase_kind", "result")
    try:
        flag = int(ds.attrs.get("umbrella", 0))
    except (TypeError, ValueError):
        flag = 0
    if flag != 1:
        raise ResultFileError(f"this {kind} file is not an umbrella-sampling result (no attribute umbrella = 1): "
                              "free energies need a simulation with umbrella windows")
    for name in REQUIRED:
        if name not in ds.variables:
            raise ResultFileError(f"the umbrella result lacks the variable {name!r}; it is incomplete or was not "
                                  "written by this grokphase")
    for dim in ("s2", "window", "time"):
        if dim not in ds["order_parameter_trajectory"].dims:
            raise ResultFileError(f"order_parameter_trajectory has no {dim!r} dimension (dims: "
                                  f"{ds['order_parameter_trajectory'].dims})")
    m_dims = tuple(d for d in ds["order_parameter_trajectory"].dims if d != "coordinate")
    if m_dims != ds["potential_trajectory"].dims:
        raise ResultFileError("order_parameter_trajectory and potential_trajectory have different dimensions (besides "
                              "the coordinate dimension of several umbrella coordinates)")


def umbrella_arrays(ds: xr.Dataset) -> UmbrellaArrays:
    """The arrays of an umbrella result Dataset (the input contract of issue 19): records at time <=
    ``param_burn_in`` dropped, system dims (``umbrella_system_dims``) first, every other unit dim
    flattened into chains."""
    _require_umbrella(ds)
    m_da, L_da = ds["order_parameter_trajectory"], ds["potential_trajectory"]
    sys_dims = tuple(str(ds.attrs.get("umbrella_system_dims", "")).split())
    for d in sys_dims:
        if d not in m_da.dims:
            raise ResultFileError(f"umbrella_system_dims names {d!r}, which is not a dimension of the trajectories "
                                  f"{m_da.dims}")
    several = "coordinate" in m_da.dims
    units = tuple(d for d in m_da.dims if d not in (*sys_dims, "s2", "window", "time", "coordinate"))
    order = (*sys_dims, "s2", "window", *units, "time")
    burn = float(ds.attrs.get("param_burn_in", 0))
    times = np.asarray(ds["time"].values, np.float64) if "time" in ds.coords else np.arange(m_da.sizes["time"])
    keep = times > burn
    if not keep.any():
        raise ParameterError(f"no record after burn-in ({burn:g} steps; the last record is at {times.max():g})")
    if several:
        m = np.asarray(m_da.transpose(*order, "coordinate").values, np.float64)[..., keep, :]
    else:
        m = np.asarray(m_da.transpose(*order).values, np.float64)[..., keep]
    L = np.asarray(L_da.transpose(*order).values, np.float64)[..., keep]
    S = int(np.prod([m_da.sizes[d] for d in sys_dims])) if sys_dims else 1
    n_s2, J = m_da.sizes["s2"], m_da.sizes["window"]
    C = int(np.prod([m_da.sizes[d] for d in units])) if units else 1
    T = int(keep.sum())
    m, L = m.reshape(S, n_s2 * J, C, T, *m.shape[len(order):]), L.reshape(S, n_s2 * J, C, T)
    s2 = np.asarray(ds["s2"].values, np.float64) if "s2" in ds.coords else None
    if s2 is None or s2.shape != (n_s2,):
        raise ResultFileError("the umbrella result needs a coordinate s2 along its s2 dimension")
    D = m_da.sizes["coordinate"] if several else 1
    shape = (J, D) if several else (J,)
    wdims = ("window", "coordinate") if several else ("window",)
    if ds["window_m0"].dims != wdims or ds["window_kappa"].dims != wdims:
        raise ResultFileError(f"window_m0 and window_kappa need one value per window{' and coordinate' * several} "
                              f"(dims {wdims}), got {ds['window_m0'].dims} and {ds['window_kappa'].dims}")
    m0 = np.asarray(ds["window_m0"].transpose(*wdims).values, np.float64).reshape(shape)
    kappa = np.asarray(ds["window_kappa"].transpose(*wdims).values, np.float64).reshape(shape)
    if sys_dims:
        grids = np.meshgrid(*[np.asarray(ds[d].values) if d in ds.coords else np.arange(m_da.sizes[d])
                              for d in sys_dims], indexing="ij")
        labels = tuple("/".join(str(g.reshape(-1)[i]) for g in grids) for i in range(S))
    else:
        labels = ("all",)
    tile = lambda v: np.tile(v, (n_s2,) + (1,) * (v.ndim - 1))  # noqa: E731
    return UmbrellaArrays(L, m, np.repeat(s2, J), tile(m0), tile(kappa), labels, sys_dims, units,
                          str(ds.attrs.get("umbrella_order_parameter", "m")), coordinates_of(ds))


def free_energy_from_dataset(ds: xr.Dataset, s2=None, bins=None, *, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                             seed: int = 0, coordinate: str | None = None, **kw) -> FreeEnergyResult:
    """Profiles F(m) at ``s2`` (default: the simulated s2), the coexistence point, barrier and latent heat
    of an umbrella-sampling result Dataset (module docstring).  With several umbrella coordinates the
    MBAR states carry the bias summed over them and F is the marginal along ``coordinate`` (default the
    first, the run's primary).  Bad input (not an umbrella result, missing variables) is a
    :class:`~grokphase.errors.ResultFileError`; an s2 that cannot be reweighted a :class:`ReweightingError`."""
    arr = umbrella_arrays(ds)
    axis = coordinate_index(ds, coordinate)
    samples = [decorrelate(arr.L[i], arr.m[i], arr.s2_k, arr.m0_k, arr.kappa_k, axis=axis)
               for i in range(arr.L.shape[0])]
    return free_energy(samples, s2, bins, n_bootstrap=n_bootstrap, seed=seed, order_parameter=arr.coordinates[axis],
                       system_labels=arr.system_labels, **kw)


# ------------------------------------------------------------------------------------------------
# hysteresis check: the two starts of each window
# ------------------------------------------------------------------------------------------------

class StartAgreement(NamedTuple):
    """Per s2 and window the mean m of the chains from each start (``starts``), its SE (from the chains'
    statistical inefficiencies: var(m) g / T per chain), and z = (mean_0 - mean_1)/sqrt(se_0^2 + se_1^2);
    ``disagree`` lists the windows with |z| > ``z_max``.  ``coordinate``: the umbrella coordinate
    compared (m0: the windows' centres along it)."""
    s2: np.ndarray
    m0: np.ndarray
    starts: tuple
    mean: np.ndarray        # (s2, window, start)
    sem: np.ndarray
    z: np.ndarray           # (s2, window)
    z_max: float
    disagree: tuple
    coordinate: str = "m"

    def to_dict(self) -> dict[str, Any]:
        finite = np.abs(self.z[np.isfinite(self.z)])
        return {"starts": list(self.starts), "z_max": self.z_max,
                "max_abs_z": float(finite.max()) if finite.size else None,
                "disagree": [dict(d) for d in self.disagree], "coordinate": self.coordinate}


def start_agreement(ds: xr.Dataset, z_max: float = 3.0, coordinate: str | None = None) -> StartAgreement:
    """Hysteresis check of an umbrella result with a ``start`` dimension (e.g. "prior"/"ordered"): in
    every window both starts must sample the same distribution of m; windows where the means differ by
    more than ``z_max`` combined standard errors are reported (the chains have not forgotten their
    start: a barrier inside the window, or too short a run).  With several umbrella coordinates the
    check is on ``coordinate`` (default the first; :func:`start_agreements`: every one)."""
    _require_umbrella(ds)
    m_da = ds["order_parameter_trajectory"]
    c = coordinate_index(ds, coordinate)
    name = coordinates_of(ds)[c]
    m0_da = ds["window_m0"]
    if "coordinate" in m_da.dims:
        m_da, m0_da = m_da.isel(coordinate=c), m0_da.isel(coordinate=c)
    if "start" not in m_da.dims or m_da.sizes["start"] != 2:
        raise ParameterError("start_agreement needs a 'start' dimension with two starts (e.g. prior and ordered)")
    others = tuple(d for d in m_da.dims if d not in ("s2", "window", "start", "time"))
    burn = float(ds.attrs.get("param_burn_in", 0))
    keep = np.asarray(ds["time"].values, np.float64) > burn
    if not keep.any():
        raise ParameterError(f"no record after burn-in ({burn:g} steps)")
    m = np.asarray(m_da.transpose("s2", "window", "start", *others, "time").values, np.float64)[..., keep]
    n_s2, J = m.shape[:2]
    m = m.reshape(n_s2, J, 2, -1, int(keep.sum()))
    mean = np.empty((n_s2, J, 2))
    se = np.empty((n_s2, J, 2))
    ts = _pymbar().timeseries
    for i in range(n_s2):
        for j in range(J):
            for a in range(2):
                cm, cv = [], []
                for x in m[i, j, a]:
                    T = x.size
                    if T >= 4 and np.ptp(x) > 0:
                        with _quiet():
                            g = max(1.0, float(ts.statistical_inefficiency(x, fast=False)))
                    else:
                        g = float(T)
                    cm.append(x.mean())
                    cv.append(x.var(ddof=1) * g / T if T >= 2 else math.inf)
                mean[i, j, a] = np.mean(cm)
                se[i, j, a] = math.sqrt(np.sum(cv)) / len(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean[..., 0] - mean[..., 1]) / np.sqrt(se[..., 0] ** 2 + se[..., 1] ** 2)
    s2 = np.asarray(ds["s2"].values, np.float64)
    m0 = np.asarray(m0_da.values, np.float64).reshape(-1)
    starts = tuple(str(s) for s in (ds["start"].values if "start" in ds.coords else ("0", "1")))
    bad = tuple({"s2": float(s2[i]), "window": int(j), "m0": float(m0[j]), "z": float(z[i, j]),
                 "mean": [float(mean[i, j, 0]), float(mean[i, j, 1])], "sem": [float(se[i, j, 0]), float(se[i, j, 1])]}
                for i, j in zip(*np.nonzero(~(np.abs(z) <= z_max))))
    return StartAgreement(s2, m0, starts, mean, se, z, float(z_max), bad, name)


def start_agreements(ds: xr.Dataset, z_max: float = 3.0) -> dict[str, Any]:
    """:func:`start_agreement` on every umbrella coordinate of the result (a window agrees when every
    coordinate does), as the JSON summary: the keys of :meth:`StartAgreement.to_dict` over all
    coordinates (``disagree``: every (window, coordinate) with |z| > ``z_max``, each naming its
    coordinate; ``coordinate``: the coordinates checked, space-separated), ``windows`` and
    ``windows_agree`` (windows x s2 where every coordinate agrees) and ``by_coordinate``."""
    parts = [start_agreement(ds, z_max, name) for name in coordinates_of(ds)]
    if len(parts) == 1:
        out = parts[0].to_dict()
        bad = np.zeros(parts[0].z.shape, bool) | ~(np.abs(parts[0].z) <= z_max)
        out.update(windows=int(bad.size), windows_agree=int((~bad).sum()))
        return out
    dicts = [p.to_dict() for p in parts]
    finite = [d["max_abs_z"] for d in dicts if d["max_abs_z"] is not None]
    bad = np.any([~(np.abs(p.z) <= z_max) for p in parts], axis=0)
    return {"starts": dicts[0]["starts"], "z_max": float(z_max), "max_abs_z": max(finite) if finite else None,
            "disagree": [dict(d, coordinate=p.coordinate) for p in parts for d in p.disagree],
            "coordinate": " ".join(p.coordinate for p in parts), "windows": int(bad.size),
            "windows_agree": int((~bad).sum()), "by_coordinate": {p.coordinate: d for p, d in zip(parts, dicts)}}


def free_energy_report(ds: xr.Dataset, *, s2=None, bins=None, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                       coordinate: str | None = None, theory: bool = False, source: str | None = None,
                       theory_points: int = 81) -> tuple[dict[str, Any], xr.Dataset, dict | None]:
    """The whole analysis of one umbrella result, as ``grokphase free-energy`` and an experiment file's
    ``[free_energy]`` table run it: :func:`free_energy_from_dataset` (profiles, coexistence, barrier, latent
    heat), the starts' agreement when the windows ran from two starts (:func:`start_agreements`), and with
    ``theory`` the mean-field F(m) constrained to the same coordinate at every profile's s2
    (:func:`grokphase.analysis.free_energy_theory.theory_profiles`, on ``theory_points`` values of m
    spanning the profiles).  Returns (the JSON summary, the annotated result Dataset — its parameters
    name ``source`` and ``seed`` —, the theory profiles {s2: (m, F)} or None)."""
    result = free_energy_from_dataset(ds, s2=s2, bins=bins, n_bootstrap=n_bootstrap, seed=seed, coordinate=coordinate)
    summary = result.to_dict()
    summary["coordinate"] = result.order_parameter
    if "start" in ds["order_parameter_trajectory"].dims and ds.sizes["start"] == 2:
        summary["start_agreement"] = start_agreements(ds)
    profiles_theory = None
    if theory:
        from grokphase.analysis.free_energy_theory import theory_profiles
        m_all = np.concatenate([np.asarray(p["m"], np.float64) for p in summary["profiles"]])
        grid = np.linspace(float(np.min(m_all)), float(np.max(m_all)), int(theory_points))
        profiles_theory = theory_profiles(ds, [p["s2"] for p in summary["profiles"]], grid,
                                          coordinate=result.order_parameter)
        summary["theory_profiles"] = [{"s2": s, "m": mm.tolist(), "F": FF.tolist()}
                                      for s, (mm, FF) in profiles_theory.items()]
    out = result.to_dataset(parameters={"source": source, "seed": seed}, source=ds)
    return summary, out, profiles_theory
