"""A vectorised erf for the simulations' activations.

On CPU, XLA evaluates float64 ``erf`` with the scalar libm routine (about 0.06 G elements/s here),
which dominated float64 steps of the erf network.  :func:`erf` uses the Cephes rational
approximations instead (erf on |x| < 1, 1 - erfc beyond, erfc clipped at |x| = 6 where it is below
float64 resolution), branch-free with one division per element: 0.23 G elements/s and a maximum
error of about 4e-16 (tested against SciPy).  Its derivative is the exact 2/sqrt(pi) exp(-x^2)
(``custom_jvp``).  Float32 inputs use XLA's own (already vectorised) erf.  Measured effect on a
float64 teacher-student step: 1.2-1.4x (benchmarks/README.md).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# Cephes ndtr.c coefficients: erf(x) = x T(x^2)/U(x^2) for |x| < 1, erfc(x) = exp(-x^2) P(x)/Q(x)
_ERF_T = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
          7.00332514112805075473E3, 5.55923013010394962768E4)
_ERF_U = (3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
          2.26290000613890934246E4, 4.92673942608635921086E4)
_ERFC_P = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
           4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
           9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_ERFC_Q = (1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
           9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
           1.65666309194161350182E3, 5.57535340817727675546E2)


def _polevl(x, coef, monic=False):
    r = x + coef[0] if monic else jnp.full_like(x, coef[0])
    for c in coef[1:]:
        r = r * x + c
    return r


def erf_vectorised(x):
    """float64 erf to ~4e-16, branch-free (no custom derivative; see :func:`erf`)."""
    ax = jnp.abs(x)
    small = ax < 1.0
    z = x * x
    axc = jnp.clip(ax, 1.0, 6.0)             # erfc(6) = 2e-17: 1 - erfc rounds to 1 beyond
    num = jnp.where(small, x * _polevl(z, _ERF_T), _polevl(axc, _ERFC_P))
    den = jnp.where(small, _polevl(z, _ERF_U, True), _polevl(axc, _ERFC_Q, True))
    r = num / den
    return jnp.where(small, r, jnp.sign(x) * (1.0 - jnp.exp(-axc * axc) * r))


@jax.custom_jvp
def _erf64(x):
    return erf_vectorised(x)


@_erf64.defjvp
def _erf64_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _erf64(x), t * (jnp.asarray(TWO_OVER_SQRT_PI, x.dtype) * jnp.exp(-x * x))


def erf(x):
    """erf for the networks: the vectorised rational form in float64, XLA's erf otherwise."""
    return _erf64(x) if jnp.asarray(x).dtype == jnp.float64 else jax.scipy.special.erf(x)
