r"""Teacher-student simulations (THEORY.md §3, paper Sec. 2.1 / 3.1 and App. C).

Data: x ~ N(0, I_d), teacher y = H1(w*.x) + eps H3(w*.x) with a random unit w* per data set (eq. 1);
``n`` training and ``n_test`` (3000) test points per data set.  Student: f(x) = sum_i a_i erf(w_i.x)
(:class:`~grokphase.sims.models.TwoLayerNet`), sampled with preconditioned Langevin dynamics at
temperature s2 (the posterior with priors w ~ N(0, sw2/d I), a_i ~ N(0, sa2/N)).

The single-index family (THEORY.md §6, issue 18): ``activation`` (erf, relu, tanh, gelu, silu; in Python
also a JAX callable) and ``target`` (a spec "2:1,4:0.3": y = sum_k c_k He_k(w*.x)).  Every model records,
per target degree k (dimension ``degree``), ``learned`` = <f, Hhat_k>/yhat_k (yhat_k = c_k sqrt(k!); the
exact population projection sum_i a_i g_k(q_i, |w_i|^2), :func:`neuron_overlaps`) and its test- and
training-set estimates ``learned_test``, ``learned_train``; the linear_/cubic_ records below exist for the
paper's target He1 + eps He3 (with any activation).

Observables at every record time (per network):

* ``linear_learned`` = <f, Hhat1> and ``cubic_learned`` = <f, Hhat3>/(sqrt6 eps): the *population*
  projections, exact functions of the weights for Gaussian inputs (THEORY.md §3):
  <f, Hhat1> = sum_i a_i 2 q_i / sqrt(pi (1 + 2|w_i|^2)),
  <f, Hhat3> = -sum_i a_i 4 q_i^3 / (sqrt(6 pi) (1 + 2|w_i|^2)^{3/2}),  q_i = w_i.w*.
  They are comparable with the theory's 1 - b and 1 - c/eps (the targets' coefficients are 1 and
  sqrt6 eps).  The same projections measured as in the paper, over the test points
  (``*_test``) and over the training points (``*_train``).
* ``train_mse``, ``test_mse`` (mean squared error), ``w_norm2`` (mean |w_i|^2 over neurons).

Accumulated after burn-in over every record time: the histogram of q over all neurons, time
averages of every recorded scalar, the second order parameter t = |w_perp|^2 = |w|^2 - q^2 of every
neuron (THEORY.md §3b) as the sum of t per q bin (``t_sum_q``: with ``q_hist`` it gives the mean t of
the neurons beyond and inside any |q| threshold on the q grid, e.g. the droplet threshold below) and
as a coarse 2-D histogram on (q, t) (``qt_hist``, ``qt_q_bins`` x ``t_bins`` bins over
[-q_max, q_max] x [0, t_max]; bounded memory, one scatter-add of N entries per record), and the time-averaged test and training outputs (the posterior
mean predictor of each network; averaged over a data set's initialisations it is the ensemble-mean
predictor, whose test MSE is reported as ``ensemble_test_mse``).

Droplet fraction: the fraction of neurons with |q| beyond the finite-d theory's free-energy barrier
at the same parameters (:attr:`FiniteDSolution.q_barrier`), or beyond ``DEFAULT_DROPLET_THRESHOLD``
where the theory's p(q) has no barrier.  The threshold used is stored per s2, with the theory's mass
of p(q) beyond the same threshold (``theory_droplet_fraction``; at small d the Gaussian bulk alone
puts several per cent beyond 0.4, so compare with this, not with zero).

The package, by responsibility: :mod:`~grokphase.sims.teacher_student.config` (the
:class:`TeacherStudentSim` config and its options), :mod:`~grokphase.sims.teacher_student.task` (teacher,
projections and the per-network task), :mod:`~grokphase.sims.teacher_student.starts` (the droplet-saddle
start), :mod:`~grokphase.sims.teacher_student.dataset` (the result Dataset and summary points) and
:mod:`~grokphase.sims.teacher_student.run` (the model's part of the shared run protocols of
:mod:`grokphase.sims.protocols`, and :func:`run_teacher_student`).
"""

from grokphase.sims.teacher_student.config import (ANNEALS, DEFAULT_DROPLET_THRESHOLD, DEGREE_RECORDS, DTYPES,
                                                   FAMILY_DEFAULTS, FAMILY_SCALAR_RECORDS, LADDER_DEFAULTS,
                                                   OPTIMIZERS, ORDERED_DROPLETS, ORDERED_THEORIES, SCALAR_RECORDS,
                                                   SQRT6, STARTS, TeacherStudentSim, TSHyper)
from grokphase.sims.teacher_student.dataset import (KIND, annotate_result, build_dataset, droplet_thresholds,
                                                    single_index_params, summary_points)
from grokphase.sims.teacher_student.run import (MODEL, build_ladder_members, build_members, member_keys,
                                                run_teacher_student, stage_hyper)
from grokphase.sims.teacher_student.starts import DropletSaddle, conditional_readout, droplet_saddle, ordered_start
from grokphase.sims.teacher_student.task import (family_projections, hermite, hermite_he, hermite_teacher, make_task,
                                                 neuron_overlaps, population_projections, teacher)
# the old module's private name, still imported by tests (the implementation: grokphase.stats)
from grokphase.stats import ratio_mean_sem as _ratio_mean_sem  # noqa: F401

__all__ = ["ANNEALS", "DEFAULT_DROPLET_THRESHOLD", "DEGREE_RECORDS", "DTYPES", "FAMILY_DEFAULTS",
           "FAMILY_SCALAR_RECORDS", "KIND", "LADDER_DEFAULTS", "MODEL", "OPTIMIZERS",
           "ORDERED_DROPLETS", "ORDERED_THEORIES", "SCALAR_RECORDS", "SQRT6", "STARTS", "DropletSaddle", "TSHyper",
           "TeacherStudentSim", "annotate_result", "build_dataset", "build_ladder_members", "build_members",
           "conditional_readout", "droplet_saddle", "droplet_thresholds", "family_projections", "hermite",
           "hermite_he", "hermite_teacher", "make_task", "member_keys", "neuron_overlaps", "ordered_start",
           "population_projections", "run_teacher_student", "single_index_params", "stage_hyper", "summary_points",
           "teacher"]
