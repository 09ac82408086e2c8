"""The analysis layer: reads simulation results (and solves the theory at their sizes) and returns
comparison Datasets and summaries.  It draws no figures (:mod:`grokphase.plotting`) and runs no
simulations.

Modules: :mod:`~grokphase.analysis.compare` (simulations against the theory, both models),
:mod:`~grokphase.analysis.appd` (App. D, grokking in time), :mod:`~grokphase.analysis.perp_norm`
(|w_perp|^2 as a second order parameter), :mod:`~grokphase.analysis.hysteresis` (cooling, heating
and replica branches against the theory), :mod:`~grokphase.analysis.replica` (replica-exchange
summaries).
"""

from grokphase.analysis.compare import (MODULAR_CONVENTIONS, N_SUBENSEMBLES, compare_modular,  # noqa: F401
                                        compare_modular_summary, compare_summary, compare_teacher_student,
                                        lr_bias_estimate, modular_theory_curves, network_densities,
                                        nngp_target_component, q_density, random_feature_target_component,
                                        theory_for_sim)
from grokphase.analysis.replica import replica_summary  # noqa: F401
