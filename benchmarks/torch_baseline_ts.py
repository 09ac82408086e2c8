"""PyTorch eager baseline for the teacher-student Langevin benchmark (``bench_sims_ts.py``).

A batched implementation over the ensemble, written the way a careful PyTorch user would: one
``torch.bmm`` per matmul over all M networks, a hand-written backward pass (no autograd tape), and
in-place element-wise operations.  The dynamics are the engine's preconditioned Langevin step in the
unit variables z (theta = prior_std * z):

    z <- z - lr * (dL/dz + s2 z) + sqrt(2 lr s2) xi,   L = 1/2 sum_mu (sum_i a_i erf(w_i.x_mu) - y_mu)^2,

with w = sqrt(sw2/d) z_w, a = sqrt(sa2/N) z_a.  The noise comes from ``torch.randn`` (a different
stream from the engine's), except in :meth:`TorchEnsemble.step` with explicit ``noise``, which the
benchmark uses to check one step against the engine with identical noise.

Threads are set by the caller (``torch.set_num_threads``) and recorded in the results.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchEnsemble:
    """M independent networks, state ``zw`` (M, d, N), ``za`` (M, N); data ``x`` (M, n, d), ``y`` (M, n).

    ``std_w``, ``std_a``, ``lr``, ``s2`` are per-network (length-M) arrays; the ensemble may mix them.
    """

    def __init__(self, x, y, zw, za, std_w, std_a, lr, s2, dtype="float32", seed=0):
        t = DTYPES[dtype]
        self.dtype = t
        self.x = torch.as_tensor(np.asarray(x), dtype=t).contiguous()
        self.xt = self.x.transpose(1, 2).contiguous()          # (M, d, n) for the backward matmul
        self.y = torch.as_tensor(np.asarray(y), dtype=t).contiguous()
        self.zw = torch.as_tensor(np.array(zw), dtype=t).contiguous()
        self.za = torch.as_tensor(np.array(za), dtype=t).contiguous()
        col = lambda v: torch.as_tensor(np.asarray(v), dtype=t)  # noqa: E731
        self.std_w = col(std_w)[:, None, None]
        self.std_a = col(std_a)[:, None]
        lr, s2 = col(lr), col(s2)
        self.lr_w, self.lr_a = lr[:, None, None], lr[:, None]
        self.s2_w, self.s2_a = s2[:, None, None], s2[:, None]
        scale = torch.sqrt(2.0 * lr * s2)
        self.noise_w, self.noise_a = scale[:, None, None], scale[:, None]
        self.gen = torch.Generator().manual_seed(seed)
        self.bad = torch.zeros(self.x.shape[0], dtype=torch.bool)   # any non-finite loss so far
        self.steps = 0

    def grads(self):
        """(loss (M,), dL/dz_w (M, d, N), dL/dz_a (M, N)) at the current state."""
        w = self.zw * self.std_w
        a = self.za * self.std_a
        h = torch.bmm(self.x, w)                                   # (M, n, N)
        phi = torch.special.erf(h)
        r = torch.bmm(phi, a.unsqueeze(-1)).squeeze(-1)            # f (M, n)
        r.sub_(self.y)
        loss = 0.5 * (r * r).sum(dim=1)
        ga = torch.bmm(r.unsqueeze(1), phi).squeeze(1).mul_(self.std_a)
        # dL/dh = r_mu a_i 2/sqrt(pi) exp(-h^2), in place over h
        dh = h.square_().neg_().exp_()
        dh.mul_(r.unsqueeze(-1) * TWO_OVER_SQRT_PI).mul_(a.unsqueeze(1))
        gw = torch.bmm(self.xt, dh).mul_(self.std_w)
        return loss, gw, ga

    def step(self, noise=None):
        """One Langevin step; ``noise`` = (xi_w, xi_a) tensors to use instead of torch.randn."""
        loss, gw, ga = self.grads()
        self.bad |= ~torch.isfinite(loss)
        if noise is None:
            xi_w = torch.randn(self.zw.shape, generator=self.gen, dtype=self.dtype)
            xi_a = torch.randn(self.za.shape, generator=self.gen, dtype=self.dtype)
        else:
            xi_w, xi_a = (torch.as_tensor(np.asarray(v), dtype=self.dtype) for v in noise)
        # z + (-lr (g + s2 z) + sqrt(2 lr s2) xi), the engine's order of operations
        self.zw.add_((gw.add_(self.zw * self.s2_w)).mul_(-self.lr_w).add_(xi_w * self.noise_w))
        self.za.add_((ga.add_(self.za * self.s2_a)).mul_(-self.lr_a).add_(xi_a * self.noise_a))
        self.steps += 1
        return loss

    @torch.inference_mode()
    def advance(self, n_steps: int):
        for _ in range(int(n_steps)):
            self.step()
        return self

    def loss(self):
        with torch.inference_mode():
            return self.grads()[0]

    def state(self):
        return self.zw.numpy().copy(), self.za.numpy().copy()
