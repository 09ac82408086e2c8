"""The periodic Gibbs refresh of the readout (issue 20, ``readout = "refresh"``,
:class:`grokphase.sims.driver.Task` ``gibbs_per_call``): exact on the two-block Gaussian posterior of
tests/test_samplers.py (section 4) and the same teacher-student answers as MALA."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokphase  # noqa: F401  (float64 enabled)
from grokphase.errors import ParameterError
from grokphase.sims.driver import Members, Task, run_ensemble
from grokphase.sims.models import TwoLayerNet
from grokphase.sims.teacher_student.config import TeacherStudentSim
from grokphase.sims.teacher_student.run import run_teacher_student
from grokphase.sims.teacher_student.task import make_task

from test_langevin import DATA_KEY, INIT_KEY, NOISE_SEED, _mean_se
from test_samplers import PC_KU, PC_KV, PC_S2, PC_SCHEDULE, Z_REJECT, Z_TOL, PCHyper, _pc_closed_form, _pc_task

# ---------------------------------------------------------------------------------------------
# the periodic Gibbs refresh (readout = "refresh"): MALA on both blocks of the two-block Gaussian above,
# and block v redrawn from its exact conditional given u at the start of every record interval (20 steps)


def _refresh_task(var_factor: float) -> Task:
    """_pc_task's MALA with a refresh of v from N(mean_v|u, var_factor * Lambda_v^-1) (1: the exact conditional)."""
    base = _pc_task(False)

    def gibbs(z, data, hyper, key):
        xu, xv, y = data["xu"], data["xv"], data["y"]
        lam = jnp.eye(PC_KV) + xv.T @ xv / hyper.s2
        chol = jnp.linalg.cholesky(lam)
        mean = jax.scipy.linalg.cho_solve((chol, True), xv.T @ (y - xu @ z["u"]) / hyper.s2)
        xi = jax.random.normal(key, (PC_KV,), jnp.float64)
        return {**z, "v": mean + math.sqrt(var_factor) * jax.scipy.linalg.solve_triangular(chol.T, xi, lower=False)}

    return base._replace(gibbs=gibbs, gibbs_per_call=True)


def test_periodic_refresh_keeps_the_exact_posterior():
    """Refresh + MALA at a small step (eta h_max = 0.05, so that the 20 MALA steps between refreshes barely move
    the stiff block v): mean and covariance are the exact posterior's within Z_TOL SE; a refresh from a conditional
    with 4x the variance gives v a covariance more than Z_REJECT SE off (the refresh is applied, and matters)."""
    cf = _pc_closed_form(_pc_task(False))
    M = 200
    noise = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(NOISE_SEED), i))(jnp.arange(M))
    f = lambda v: np.full(M, v, np.float64)  # noqa: E731
    eta = cf["eta"] * 0.05 / 1.2
    members = Members(np.tile(np.asarray(jax.random.PRNGKey(DATA_KEY)), (M, 1)),
                      np.tile(np.asarray(jax.random.PRNGKey(INIT_KEY)), (M, 1)),
                      np.asarray(noise), PCHyper(f(PC_S2), f(eta), f(cf["v_scale"])))
    covs = {}
    for factor in (1.0, 4.0):
        out = run_ensemble(_refresh_task(factor), members, PC_SCHEDULE)
        after = out.record_steps > PC_SCHEDULE.burn_in
        z = out.records["z"][:, after, :]
        dz = z - cf["mean"]
        covs[factor] = (z.mean(1) - cf["mean"], np.einsum("mti,mtj->mij", dz, dz) / dz.shape[1])
    bias, se = _mean_se(covs[1.0][0])
    assert np.all(np.abs(bias / se) < Z_TOL), bias / se
    est, se_c = _mean_se(covs[1.0][1])
    iu = np.triu_indices(PC_KU + PC_KV)
    assert np.all(np.abs((est - cf["cov"]) / se_c)[iu] < Z_TOL), ((est - cf["cov"]) / se_c)[iu]
    wrong, se_w = _mean_se(covs[4.0][1])
    dv = np.abs(np.diag(wrong - cf["cov"]) / np.diag(se_w))[PC_KU:]
    assert dv.max() > Z_REJECT, dv


def test_teacher_student_refresh_agrees_and_is_recorded():
    """readout = refresh on the teacher-student model: the same learned fractions as plain MALA within combined
    SE (8 data sets x 2 inits), the option in the result's parameters, the CLI flag accepted."""
    common = dict(N=16, d=8, n=24, s2=(0.2,), datasets=8, inits=2, steps=4000, burn_in=1000, record_every=20,
                  lr=0.05, n_test=100, mala=True)
    mala = run_teacher_student(TeacherStudentSim(**common))
    ref = run_teacher_student(TeacherStudentSim(**common, readout="refresh"))
    for var in ("linear_learned", "cubic_learned"):
        diff = float(ref[var].values[0] - mala[var].values[0])
        se = math.hypot(float(ref[f"{var}_sem"].values[0]), float(mala[f"{var}_sem"].values[0]))
        assert abs(diff) < Z_TOL * se, (var, diff, se)
    assert json.loads(ref.attrs["parameters_json"])["readout"] == "refresh"
    with pytest.raises(ParameterError, match="user model"):
        make_task(TeacherStudentSim(N=8, d=4, n=8, s2=(0.2,), readout="refresh"), TwoLayerNet(8, activation=jnp.tanh))
