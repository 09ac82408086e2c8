r"""Modular-addition simulations (THEORY.md §4, paper Sec. 2.2 / 3.2; Gromov, arXiv 2301.02679).

Model: f_p(n, m) = scale * sum_i a_pi (w_{i,n} + w_{i,P+m})^2, the square-activation network on
two-hot inputs x_nm (ones at n and P + m) computed without one-hot matrices (:class:`SquareNet`).
Two parametrisations:

* ``paper``: w ~ N(0, 1), a_pi ~ N(0, sa2/N), scale = 1 (THEORY.md §4);
* ``gromov``: f = W2 (W1 x)^2 / (D N) with D = 2P and unit Gaussian W1, W2 (Gromov's mean-field
  network): scale = 1/(D N), prior standard deviations 1.  It is the paper's network with
  a = W2/(D N), i.e. sa2 = 1/(D^2 N) at initialisation.

Data: all P^2 pairs (alpha = 1) or a random fraction alpha of them (seeded per data set) for
training, the rest for testing; targets y_p = delta_{p,(n+m) mod P} - 1/P.

Training: Langevin (the posterior of THEORY.md §4, optionally with the sextic Fourier penalty
Gamma = sum_k P (gamma/6)(|w_k|^6 + |v_k|^6) computed by FFT, entering the potential as s2 Gamma),
or Optax optimisers (full-batch GD, AdamW) for grokking in time.

The package, by responsibility: :mod:`~grokphase.sims.modular.config` (the :class:`ModularSim` config
and its options), :mod:`~grokphase.sims.modular.task` (the network, the data and the per-network task),
:mod:`~grokphase.sims.modular.readout` (the exact Gibbs readout and the whole-table sums),
:mod:`~grokphase.sims.modular.starts` (the droplet-saddle start), :mod:`~grokphase.sims.modular.dataset`
(the result Dataset and summary points) and :mod:`~grokphase.sims.modular.run` (the model's part of
the shared run protocols of :mod:`grokphase.sims.protocols`, and :func:`run_modular`).
"""

from grokphase.sims.modular.config import (ANNEALS, BRANCHES, DTYPES, IPR_BINS, OPTIMIZERS, ORDERED_DROPLETS,
                                           PARAMETRISATIONS, READOUTS, SCALAR_RECORDS, STARTS, THEORY_CONVENTIONS,
                                           ModHyper, ModularSim)
from grokphase.sims.modular.dataset import KIND, build_dataset, first_crossing, summary_points
# _draw_from_gram: the old module's private name, still used by benchmarks/bench_gibbs_readout.py
from grokphase.sims.modular.readout import _draw_from_gram  # noqa: F401
from grokphase.sims.modular.readout import full_table_Fy, full_table_gram, full_table_loss, gibbs_readout
from grokphase.sims.modular.run import (MODEL, build_ladder_members, build_members, run_modular, stage_hyper,
                                        unit_keys)
from grokphase.sims.modular.starts import ordered_start, theory_droplets_per_mode, theory_phi_plus
from grokphase.sims.modular.task import SquareNet, all_pairs, make_task, one_hot_forward, targets

__all__ = ["ANNEALS", "BRANCHES", "DTYPES", "IPR_BINS", "KIND", "MODEL", "OPTIMIZERS", "ORDERED_DROPLETS",
           "PARAMETRISATIONS", "READOUTS", "SCALAR_RECORDS", "STARTS", "THEORY_CONVENTIONS", "ModHyper",
           "ModularSim", "SquareNet", "all_pairs", "build_dataset", "build_ladder_members", "build_members",
           "first_crossing", "full_table_Fy", "full_table_gram", "full_table_loss", "gibbs_readout", "make_task",
           "one_hot_forward", "ordered_start", "run_modular", "stage_hyper", "summary_points", "targets",
           "theory_droplets_per_mode", "theory_phi_plus", "unit_keys"]
