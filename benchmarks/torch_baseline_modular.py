"""PyTorch eager baseline for the modular-addition Langevin benchmark (``bench_sims_modular.py``).

M networks f_p(n, m) = sum_i a_pi (u_in + v_im)^2 (u = w[:P], v = w[P:], the engine's SquareNet
with scale 1) on the full P x P table, batched over the ensemble the way a careful PyTorch user
would write the full-batch step: the hidden pre-activations of all P^2 pairs by broadcasting,
h[n, m] = u[n] + v[m] (no index tensors; for the full table this is the same as ``index_select``
without the gather), ``torch.bmm`` for the three (P^2, N) x (N, P)-sized products, a hand-written
backward pass (dL/dw by summing dL/dh over rows and columns, no scatter) with in-place element-wise
operations, and the sextic Fourier penalty Gamma and its gradient by ``torch.fft``.
``backward="autograd"`` computes the same gradient with ``torch.autograd`` instead (slower, kept to
show it).

The dynamics are the engine's preconditioned Langevin step in the unit variables z
(theta = prior_std * z; prior std 1 for w, sqrt(sa2/N) for a):

    z <- z - lr (dU/dz + s2 z) + sqrt(2 lr s2) xi,   U = L + s2 Gamma[w],
    L = 1/2 sum_{n,m,p} (f_p(n, m) - y_p(n, m))^2,   y_p(n, m) = delta_{p,(n+m) mod P} - 1/P,
    Gamma = sum_i sum_{k in Z_P} P (gamma/6) (|u_ik|^6 + |v_ik|^6),   u_ik = (1/P) sum_n u_in e^{2 pi i k n/P}.

Gamma's gradient (per column, U = fft(u)): |u_k|^2 = |U_k|^2/P^2, so Gamma_u = gamma/(6 P^5) sum_k |U_k|^6
and dGamma/du_n = gamma/P^5 Re sum_k |U_k|^4 conj(U_k) e^{-2 pi i k n/P} = (gamma/P^4) irfft(|U|^4 U)_n.

The noise comes from ``torch.randn`` (a different stream from the engine's), except in
:meth:`TorchModularEnsemble.step` with explicit ``noise``, which the benchmark uses to check one
step against the engine with identical noise.  Threads are set by the caller
(``torch.set_num_threads``) and recorded in the results.
"""

from __future__ import annotations

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def targets(P: int, dtype=torch.float32) -> torch.Tensor:
    """y (P^2, P), row n P + m: delta_{p,(n+m) mod P} - 1/P."""
    n, m = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    y = np.eye(P)[((n + m) % P).ravel()] - 1.0 / P
    return torch.as_tensor(y, dtype=dtype)


def gamma_grad(w: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """dGamma/dw for w (M, 2P, N) (the 2P input weights along dim 1), gamma (M,) -> (M, 2P, N)."""
    P = w.shape[1] // 2
    U = torch.fft.rfft(w.view(w.shape[0], 2, P, w.shape[2]), dim=2)     # (M, 2, P//2+1, N): u and v
    G = torch.fft.irfft(U * U.abs().square().square(), n=P, dim=2)
    return (G * (gamma / P ** 4)[:, None, None, None]).reshape(w.shape)


def gamma_value(w: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Gamma (M,) by rfft with the multiplicities m_k (1 for k = 0, 2 for 0 < k < P/2; P is odd here)."""
    P = w.shape[1] // 2
    U = torch.fft.rfft(w.view(w.shape[0], 2, P, w.shape[2]), dim=2)
    mk = torch.full((P // 2 + 1,), 2.0, dtype=w.dtype)
    mk[0] = 1.0
    if P % 2 == 0:
        mk[-1] = 1.0
    s6 = ((U.abs().square() / P ** 2) ** 3 * mk[:, None]).sum(dim=(1, 2, 3))
    return P * gamma / 6.0 * s6


class TorchModularEnsemble:
    """State ``zw`` (M, 2P, N), ``za`` (M, N, P) (the engine's layout); per-network std_a, lr, s2, gamma
    (length-M arrays; std_w = 1 in the paper parametrisation)."""

    def __init__(self, P, zw, za, std_a, lr, s2, gamma, dtype="float32", seed=0, backward="hand"):
        t = DTYPES[dtype]
        self.P, self.dtype, self.backward = P, t, backward
        self.y = targets(P, t)
        self.zw = torch.as_tensor(np.array(zw), dtype=t).contiguous()
        self.za = torch.as_tensor(np.array(za), dtype=t).contiguous()
        col = lambda v: torch.as_tensor(np.asarray(v), dtype=t)  # noqa: E731
        self.std_a = col(std_a)[:, None, None]
        lr, s2 = col(lr), col(s2)
        self.gamma_s2 = col(gamma) * s2                    # the potential holds s2 * Gamma
        self.lr, self.s2 = lr[:, None, None], s2[:, None, None]
        self.noise_scale = torch.sqrt(2.0 * lr * s2)[:, None, None]
        self.gen = torch.Generator().manual_seed(seed)
        self.bad = torch.zeros(self.zw.shape[0], dtype=torch.bool)   # any non-finite potential so far
        self.steps = 0

    def _hidden(self, w):
        M, P, N = w.shape[0], self.P, w.shape[2]
        return (w[:, :P, None, :] + w[:, None, P:, :]).view(M, P * P, N)          # h[n P + m] = u_n + v_m

    def grads(self):
        """(potential U (M,), dU/dz_w (M, 2P, N), dU/dz_a (M, N, P)) at the current state."""
        if self.backward == "autograd":
            return self._grads_autograd()
        M, P, N = self.zw.shape[0], self.P, self.zw.shape[2]
        a = self.za * self.std_a
        h = self._hidden(self.zw)                                               # std_w = 1
        q = h.square()
        r = torch.bmm(q, a).sub_(self.y)                                        # f - y, (M, P^2, P)
        loss = 0.5 * r.square().sum(dim=(1, 2))
        ga = torch.bmm(q.transpose(1, 2), r).mul_(self.std_a)                  # (M, N, P)
        dh = torch.bmm(r, a.transpose(1, 2)).mul_(h).mul_(2.0).view(M, P, P, N)  # dL/dh
        gw = torch.cat([dh.sum(dim=2), dh.sum(dim=1)], dim=1)                   # rows: u (sum over m), v
        gw.add_(gamma_grad(self.zw, self.gamma_s2))
        return loss, gw, ga

    def _grads_autograd(self):
        with torch.enable_grad():
            zw = self.zw.detach().requires_grad_(True)
            za = self.za.detach().requires_grad_(True)
            h = self._hidden(zw)
            r = torch.bmm(h.square(), za * self.std_a) - self.y
            loss = 0.5 * r.square().sum(dim=(1, 2))
            pot = loss + gamma_value(zw, self.gamma_s2)
            gw, ga = torch.autograd.grad(pot.sum(), (zw, za))
        return loss.detach(), gw, ga

    def step(self, noise=None):
        """One Langevin step; ``noise`` = (xi_w, xi_a) arrays to use instead of torch.randn."""
        loss, gw, ga = self.grads()
        self.bad |= ~torch.isfinite(loss)
        if noise is None:
            xi_w = torch.randn(self.zw.shape, generator=self.gen, dtype=self.dtype)
            xi_a = torch.randn(self.za.shape, generator=self.gen, dtype=self.dtype)
        else:
            xi_w, xi_a = (torch.as_tensor(np.array(v), dtype=self.dtype) for v in noise)
        # z + (-lr (g + s2 z) + sqrt(2 lr s2) xi), the engine's order of operations
        self.zw.add_(gw.add_(self.zw * self.s2).mul_(-self.lr).add_(xi_w * self.noise_scale))
        self.za.add_(ga.add_(self.za * self.s2).mul_(-self.lr).add_(xi_a * self.noise_scale))
        self.steps += 1
        return loss

    def advance(self, n_steps: int):
        with torch.inference_mode(self.backward != "autograd"):
            for _ in range(int(n_steps)):
                self.step()
        return self

    def state(self):
        return self.zw.numpy().copy(), self.za.numpy().copy()
