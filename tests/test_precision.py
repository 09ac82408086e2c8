"""The matmul-precision policy of the simulations (issue 21, :mod:`grokphase.sims.precision`).

* ``highest`` is the default, left out of ``parameters()`` (earlier runs keep their hashes) and recorded
  in the result's attributes;
* on a CPU XLA computes every float32 dot in float32 whatever its precision attribute says, so
  ``highest``, ``high`` and ``default`` (JAX's unconfigured precision, what runs used before the option
  existed) give bit-identical results; the attribute itself is checked in the lowered StableHLO;
* the emulated formats round the network's matmul inputs: the forward output and the readout's gradient of
  a tiny network equal an independent NumPy computation whose inputs are rounded by bit manipulation
  (round to nearest, ties to even), and differ from the unrounded network's;
* the CLI flag and experiment tables accept the option and refuse a bad value with a message naming it.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import grokphase  # noqa: F401  (float64)
from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.experiments.runner import run_experiment
from grokphase.io import load_dataset
from grokphase.sims.models import TwoLayerNet
from grokphase.sims.modular import ModularSim, run_modular
from grokphase.sims.precision import MATMUL_PRECISIONS, rounded_matmul
from grokphase.sims.teacher_student import TeacherStudentSim, TSHyper, make_task, run_teacher_student

ALLOWED = "highest, high, default, tf32, bf16"
SMALL = dict(N=16, n=40, d=8, s2=(0.3,), datasets=2, inits=1, steps=20, burn_in=5, record_every=5, n_test=50,
             lr=0.05, droplet_threshold=0.4)


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """x rounded to ``bits`` explicit mantissa bits, nearest with ties to even, by integer arithmetic on the
    IEEE bit pattern (float32 or float64; finite normal numbers; a carry into the exponent is correct)."""
    x = np.asarray(x)
    uint, total = (np.uint32, 23) if x.dtype == np.float32 else (np.uint64, 52)
    drop = total - bits
    b = x.view(uint).astype(np.uint64)
    lsb = (b >> np.uint64(drop)) & np.uint64(1)
    b = (b + np.uint64((1 << (drop - 1)) - 1) + lsb) >> np.uint64(drop) << np.uint64(drop)
    return b.astype(uint).view(x.dtype)


def test_numpy_rounding_ties_to_even():
    ulp = 2.0 ** -10
    x = np.array([1.0, 1 + ulp / 2, 1 + 1.5 * ulp, 1 + 0.49 * ulp, -(1 + 0.51 * ulp), 2 - ulp / 4], np.float32)
    want = np.array([1.0, 1.0, 1 + 2 * ulp, 1.0, -(1 + ulp), 2.0], np.float32)
    np.testing.assert_array_equal(round_mantissa(x, 10), want)
    np.testing.assert_array_equal(round_mantissa(x.astype(np.float64), 10), want.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("policy,bits", [("tf32", 10), ("bf16", 7)])
def test_emulated_forward_and_gradient_match_numpy(dtype, policy, bits):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5)).astype(dtype)
    w = (0.6 * rng.normal(size=(5, 6))).astype(dtype)
    a = rng.normal(size=6).astype(dtype)
    y = rng.normal(size=7).astype(dtype)
    theta = {"w": jnp.asarray(w), "a": jnp.asarray(a)}
    net, plain = TwoLayerNet(6, rounding=policy), TwoLayerNet(6)
    f = np.asarray(net.apply({"params": theta}, jnp.asarray(x)))
    f_plain = np.asarray(plain.apply({"params": theta}, jnp.asarray(x)))

    r = lambda v: round_mantissa(v, bits).astype(np.float64)  # noqa: E731
    feats = erf(r(x) @ r(w))
    f_np = r(feats.astype(dtype)) @ r(a)
    tol = 1e-12 if dtype == np.float64 else 3e-6
    scale = np.max(np.abs(f_np))
    assert np.max(np.abs(f - f_np)) <= tol * scale
    # the rounding is visible: at least 30x the agreement above (2^-bits relative per input)
    assert np.max(np.abs(f_plain - f_np)) > 30 * tol * scale
    assert np.max(np.abs(f_plain - erf(x.astype(np.float64) @ w) @ a)) <= tol * scale

    # backward: d/da 1/2 |f - y|^2 = round(features)^T round(f - y) (the cotangent is rounded as well)
    grad = jax.grad(lambda th: 0.5 * jnp.sum((net.apply({"params": th}, jnp.asarray(x)) - y) ** 2))(theta)
    g_np = r(feats.astype(dtype)).T @ r((f - y).astype(dtype))
    np.testing.assert_allclose(np.asarray(grad["a"]), g_np, rtol=0, atol=tol * np.max(np.abs(g_np)) * 10)


def test_rounded_matmul_vjp_rounds_both_backward_inputs():
    a = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    b = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)))
    g = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)))
    _, vjp = jax.vjp(rounded_matmul("bf16"), a, b)
    da, db = vjp(g)
    r = lambda v: round_mantissa(np.asarray(v), 7)  # noqa: E731
    np.testing.assert_allclose(np.asarray(da), r(g) @ r(b).T, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(db), r(a).T @ r(g), rtol=1e-13)


def _lowered_loss_gradient(policy: str) -> str:
    sim = TeacherStudentSim(**{**SMALL, "matmul_precision": policy})
    task = make_task(sim)
    one = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
    hyper = TSHyper(one(0.3), one(sim.sa2_value), one(sim.sw2), one(sim.eps), one(0.05), one(0.0))
    data = task.make_data(jax.random.PRNGKey(0), hyper)
    theta = task.init(jax.random.PRNGKey(1), data, hyper)
    return jax.jit(jax.grad(task.loss)).lower(theta, data).as_text()


def test_precision_reaches_the_traced_program():
    """The task's functions carry the policy into any jit that traces them: every dot of the loss and its
    gradient has the precision attribute (no DEFAULT left), and the emulation adds reduce_precision ops."""
    highest = _lowered_loss_gradient("highest")
    assert highest.count("precision = [HIGHEST, HIGHEST]") >= 3 and "DEFAULT" not in highest
    high = _lowered_loss_gradient("high")
    assert high.count("precision = [HIGH, HIGH]") >= 3 and "HIGHEST" not in high
    tf32 = _lowered_loss_gradient("tf32")
    assert "reduce_precision" in tf32 and "format = e8m10" in tf32 and "DEFAULT" not in tf32
    assert "reduce_precision" not in highest


@pytest.fixture(scope="module")
def ts_runs():
    return {p: run_teacher_student(TeacherStudentSim(**{**SMALL, "matmul_precision": p}))
            for p in ("highest", "default")}


def test_default_policy_is_highest_and_keeps_hashes():
    plain, explicit = TeacherStudentSim(**SMALL), TeacherStudentSim(**{**SMALL, "matmul_precision": "highest"})
    assert plain.matmul_precision == "highest" and plain.parameters() == explicit.parameters()
    assert "matmul_precision" not in plain.parameters()
    assert TeacherStudentSim(**{**SMALL, "matmul_precision": "bf16"}).parameters()["matmul_precision"] == "bf16"
    assert "matmul_precision" not in ModularSim(P=5, N=4).parameters()
    assert ModularSim(P=5, N=4, matmul_precision="tf32").parameters()["matmul_precision"] == "tf32"
    assert set(MATMUL_PRECISIONS) == set(ALLOWED.split(", "))


def test_cpu_precisions_bit_identical_and_recorded(ts_runs):
    """On a CPU "default" (JAX's unconfigured precision: the arithmetic of every run before the option)
    equals "highest" bit for bit (also checked once against the commit before the option: identical files)."""
    hi, de = ts_runs["highest"], ts_runs["default"]
    for name in hi.data_vars:
        np.testing.assert_array_equal(hi[name].values, de[name].values, err_msg=name)
    assert [ds.attrs["matmul_precision"] for ds in (hi, de)] == ["highest", "default"]
    assert "matmul_precision" not in json.loads(hi.attrs["parameters_json"])


def test_modular_emulation_takes_effect_and_is_recorded():
    """bf16 rounding reaches the modular run (its closed-form loss and readout matmuls): the trajectory
    moves by about the rounding, not more."""
    base = dict(P=5, N=6, s2=(0.2,), seeds=1, steps=20, burn_in=5, record_every=5, lr=0.05)
    hi = run_modular(ModularSim(**base))
    bf = run_modular(ModularSim(**base, matmul_precision="bf16"))
    assert (hi.attrs["matmul_precision"], bf.attrs["matmul_precision"]) == ("highest", "bf16")
    diff = np.abs(hi["target_component_trajectory"].values - bf["target_component_trajectory"].values)
    assert 0 < np.max(diff) < 0.05


def test_bad_values_refused_with_the_allowed_ones(tmp_path, capsys):
    for make in (lambda: TeacherStudentSim(**{**SMALL, "matmul_precision": "tf16"}),
                 lambda: ModularSim(P=5, N=4, matmul_precision="fast"),
                 lambda: ts_model.sim_from_options({"matmul_precision": "float16"}, "table")):
        with pytest.raises(ParameterError, match="matmul_precision") as err:
            make()
        assert ALLOWED in str(err.value)
    toml = tmp_path / "bad.toml"
    toml.write_text('model = "teacher-student"\nout_dir = "%s"\n[[sim]]\nname = "x"\nbeta = 0.125\nsteps = 10\n'
                    'matmul_precision = "tf16"\n' % (tmp_path / "out"))
    with pytest.raises(ParameterError, match="matmul_precision"):
        run_experiment(str(toml), progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nc"))
    with pytest.raises(SystemExit) as exit_:
        main(["sim", "teacher-student", "--matmul-precision", "fast"])
    assert exit_.value.code == 2 and "--matmul-precision" in capsys.readouterr().err


def test_cli_and_toml_accept_the_option(tmp_path):
    out = tmp_path / "ts.nc"
    assert main(["sim", "teacher-student", "--N", "16", "--n", "40", "--d", "8", "--s2", "0.3", "--datasets", "2",
                 "--inits", "1", "--steps", "20", "--record-every", "5", "--matmul-precision", "bf16",
                 "--no-progress", "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.attrs["matmul_precision"] == "bf16" and ds.attrs["param_matmul_precision"] == "bf16"
    sim = ts_model.sim_from_options({"beta": 0.125, "matmul_precision": "tf32"}, "table")
    assert sim.matmul_precision == "tf32"
