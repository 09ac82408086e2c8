"""A third model added only through the registry (docs/adding-a-model.md), and the option schema.

The model: a two-layer network with *linear* activation in its infinite-width (GP) limit, i.e.
Bayesian linear regression f(x) = beta . x with the linear NNGP kernel K(x, x') = sa2 sw2 x.x'/d
(beta ~ N(0, sa2 sw2/d I)), learning the linear teacher y = w* . x, |w*| = 1.  Its theory is closed
form: the posterior of beta is Gaussian with precision A/s2, A = X^T X + (s2 d/(sa2 sw2)) I, and
mean A^{-1} X^T y, so the learned fraction m = beta . w* has posterior mean w*^T A^{-1} X^T y.  The
simulation samples that posterior with the package's Langevin step (:func:`grokphase.sims.langevin.
langevin`, preconditioned: beta = c z, c^2 = sa2 sw2/d); on a Gaussian target the Euler-Maruyama
chain's stationary mean is exact (only its variance carries the O(lr) bias), so the time-averaged m
must agree with the closed form within its standard error over independent chains.

Nothing outside this file knows the model: it is registered here, and ``grokphase run`` (API and
CLI), ``grokphase sim linear-gp`` and the TOML schema find it through the registry.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr

import grokphase  # noqa: F401  (float64)
from grokphase.cli import main
from grokphase.errors import ParameterError
from grokphase.experiments import registry
from grokphase.experiments.models import modular as modular_model
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.experiments.options import Option, options_of, resolve
from grokphase.experiments.runner import run_experiment
from grokphase.io import annotate, load_dataset
from grokphase.sims.langevin import langevin
from grokphase.sims.modular import ModularSim
from grokphase.theory.teacher_student import TeacherStudentParams

# ------------------------------------------------------------------------------------------------
# the third model: everything a model provides, in one place
# ------------------------------------------------------------------------------------------------

NAME = "linear-gp"
KIND = "sims.linear_gp"


@dataclasses.dataclass(frozen=True)
class LinearGPSim:
    """Bayesian linear regression on the linear teacher, sampled by Langevin (``chains`` per s2)."""

    d: int = 8
    n: int = 32
    s2: tuple = (0.5,)
    sa2: float = 1.0
    sw2: float = 1.0
    chains: int = 16
    seed: int = 0
    steps: int = 4000
    burn_in: int = 500
    lr: float = 0.02

    def __post_init__(self):
        for k in ("d", "n", "chains", "steps"):
            if getattr(self, k) < 1:
                raise ParameterError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0 <= self.burn_in < self.steps:
            raise ParameterError(f"burn_in must be in [0, steps), got {self.burn_in}")
        for k in ("sa2", "sw2", "lr"):
            if not getattr(self, k) > 0:
                raise ParameterError(f"{k} must be > 0, got {getattr(self, k)}")
        if not all(v > 0 for v in self.s2):
            raise ParameterError(f"s2 must be > 0, got {self.s2}")


def data(sim: LinearGPSim):
    kx, kw = jax.random.split(jax.random.PRNGKey(sim.seed))
    X = jax.random.normal(kx, (sim.n, sim.d))
    w = jax.random.normal(kw, (sim.d,))
    w = w / jnp.linalg.norm(w)
    return np.asarray(X), np.asarray(w), np.asarray(X @ w)


def theory_learned_fraction(sim: LinearGPSim) -> np.ndarray:
    """Closed form: posterior mean of beta . w* for each s2, on the run's own training set."""
    X, w, y = data(sim)
    out = []
    for s2 in sim.s2:
        A = X.T @ X + (s2 * sim.d / (sim.sa2 * sim.sw2)) * np.eye(sim.d)
        out.append(float(w @ np.linalg.solve(A, X.T @ y)))
    return np.asarray(out)


def simulate(sim: LinearGPSim) -> np.ndarray:
    """Time-averaged learned fraction after burn-in, shape (s2, chains)."""
    X, w, y = (jnp.asarray(a) for a in data(sim))
    c = math.sqrt(sim.sa2 * sim.sw2 / sim.d)

    def chain(s2, key):
        tx = langevin(sim.lr, s2, 1.0)
        loss = lambda z: 0.5 * jnp.sum((y - c * (X @ z)) ** 2)    # noqa: E731
        z0 = jax.random.normal(jax.random.fold_in(key, 0), (sim.d,))

        def step(carry, t):
            z, state, acc = carry
            g = jax.grad(loss)(z)
            upd, state = tx.update(g, state, z, key=jax.random.fold_in(key, t + 1))
            z = optax.apply_updates(z, upd)
            acc = acc + jnp.where(t >= sim.burn_in, c * (z @ w), 0.0)
            return (z, state, acc), None

        (_, _, acc), _ = jax.lax.scan(step, (z0, tx.init(z0), 0.0), jnp.arange(sim.steps))
        return acc / (sim.steps - sim.burn_in)

    keys = jax.random.split(jax.random.PRNGKey(sim.seed + 1), len(sim.s2) * sim.chains).reshape(len(sim.s2), sim.chains, 2)
    run_all = jax.jit(jax.vmap(jax.vmap(chain, in_axes=(None, 0)), in_axes=(0, 0)))
    return np.asarray(run_all(jnp.asarray(sim.s2), keys))


OPTIONS = options_of(LinearGPSim)


def sim_from_options(opts, where="options") -> LinearGPSim:
    return LinearGPSim(**resolve({k: v for k, v in opts.items() if k in OPTIONS}, OPTIONS, where, strict=False))


def run(opts, *, devices, progress, checkpoint_dir=None, where="options") -> xr.Dataset:
    sim = sim_from_options(opts, where)
    m = simulate(sim)
    ds = xr.Dataset({"learned_fraction": (("s2", "chain"), m),
                     "learned_fraction_mean": (("s2",), m.mean(axis=1)),
                     "learned_fraction_sem": (("s2",), m.std(axis=1, ddof=1) / math.sqrt(sim.chains)),
                     "theory_learned_fraction": (("s2",), theory_learned_fraction(sim))},
                    coords={"s2": np.asarray(sim.s2)})
    return annotate(ds, kind=KIND, parameters=dataclasses.asdict(sim), seeds=sim.seed)


def summary_points(ds: xr.Dataset) -> list[dict]:
    return [{"s2": float(s), "learned_fraction": float(ds["learned_fraction_mean"].values[i]),
             "learned_fraction_sem": float(ds["learned_fraction_sem"].values[i]),
             "theory_learned_fraction": float(ds["theory_learned_fraction"].values[i])}
            for i, s in enumerate(ds["s2"].values)]


def make_spec() -> registry.ModelSpec:
    return registry.ModelSpec(
        name=NAME, description="linear-activation network in its GP limit (Bayesian linear regression)",
        result_kind=KIND, options=OPTIONS, run=run,
        cache_config=lambda opts: dataclasses.asdict(sim_from_options(opts)),
        summary_points=summary_points, sim_config=LinearGPSim,
        theory={"learned_fraction": theory_learned_fraction}, points=summary_points)


@pytest.fixture()
def linear_model():
    spec = registry.register(make_spec())
    yield spec
    registry.unregister(NAME)


def _check_against_theory(points, z_max=4.0):
    """Each point within z_max standard errors of the closed form; the SE small enough that a 10 %
    error in the formula would be seen."""
    assert points
    for pt in points:
        assert pt["learned_fraction_sem"] < 0.025 * abs(pt["theory_learned_fraction"]), pt
        z = (pt["learned_fraction"] - pt["theory_learned_fraction"]) / pt["learned_fraction_sem"]
        assert abs(z) < z_max, pt


# ------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------


def test_closed_form_against_an_independent_formula():
    """The theory in function space (GP regression with the linear kernel): E[f(w*)] = k*^T (K + s2 I)^{-1} y
    with k* = K(w*, X): the same number as the weight-space formula."""
    sim = LinearGPSim(s2=(0.3, 1.0))
    X, w, y = data(sim)
    for s2, th in zip(sim.s2, theory_learned_fraction(sim)):
        K = sim.sa2 * sim.sw2 * (X @ X.T) / sim.d
        kstar = sim.sa2 * sim.sw2 * (X @ w) / sim.d
        assert np.isclose(kstar @ np.linalg.solve(K + s2 * np.eye(sim.n), y), th, rtol=1e-10)


def test_third_model_runs_through_the_experiment_runner(linear_model, tmp_path):
    toml = tmp_path / "linear.toml"
    toml.write_text(f'model = "{NAME}"\nout_dir = "{tmp_path / "out"}"\n[common]\nd = 8\nn = 32\n'
                    '[[sim]]\nname = "a"\ns2 = [0.25, 1.0]\n[[sim]]\nname = "b"\ns2 = [0.5]\nseed = 3\n')
    summary = run_experiment(str(toml), progress=False)
    assert [p.rsplit("/", 1)[-1] for p in summary["simulations"]] == ["a.nc", "b.nc"]
    _check_against_theory(summary["points"])
    ds = load_dataset(summary["simulations"][0], KIND)
    assert ds.attrs["param_d"] == 8
    # the same file again reuses both results (nothing recomputed: the files are not rewritten)
    mtimes = [tmp_path.joinpath("out", f).stat().st_mtime_ns for f in ("a.nc", "b.nc")]
    again = run_experiment(str(toml), progress=False)
    assert again["points"] == summary["points"]
    assert mtimes == [tmp_path.joinpath("out", f).stat().st_mtime_ns for f in ("a.nc", "b.nc")]


def test_third_model_from_the_command_line(linear_model, tmp_path, capsys):
    out = tmp_path / "lin.nc"
    assert main(["sim", NAME, "--s2", "0.5,2", "--seed", "1", "--no-progress", "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == NAME
    _check_against_theory(summary["points"])
    assert load_dataset(out, KIND).sizes["chain"] == LinearGPSim.chains
    toml = tmp_path / "lin.toml"
    toml.write_text(f'model = "{NAME}"\nout_dir = "{tmp_path / "o"}"\n[[sim]]\ns2 = 1.5\n')
    assert main(["run", str(toml), "--json", "--no-progress"]) == 0
    _check_against_theory(json.loads(capsys.readouterr().out)["points"])
    # its options are type-checked from the dataclass like the built-in models'
    toml.write_text(f'model = "{NAME}"\n[[sim]]\nchains = 2.5\n')
    assert main(["run", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "chains must be an integer" in err and err.count("\n") == 1


def test_registry_errors(linear_model, tmp_path):
    with pytest.raises(ParameterError, match="already registered"):
        registry.register(make_spec())
    toml = tmp_path / "x.toml"
    toml.write_text('model = "no-such-model"\n[[sim]]\n')
    with pytest.raises(ParameterError, match="unknown model 'no-such-model'.*linear-gp.*modular.*teacher-student"):
        run_experiment(str(toml))


def test_unregistered_model_is_gone(tmp_path):
    assert NAME not in registry.models()
    assert {"teacher-student", "modular"} <= set(registry.models())


def test_defaults_come_from_the_dataclasses():
    """One source of truth: the [[sim]] schema's defaults are the configuration dataclasses' defaults."""
    for name in ("N", "n", "d", "sw2", "eps"):
        assert ts_model.OPTIONS[name].default == getattr(TeacherStudentParams, name)
    for name in ("P", "N", "gamma", "lr", "steps", "seeds", "readout"):
        assert modular_model.OPTIONS[name].default == getattr(ModularSim, name)
    sim = ts_model.sim_from_options({})
    assert (sim.N, sim.n, sim.d, sim.burn_in) == (700, 3000, 150, sim.steps // 4)


@pytest.mark.parametrize("key, value, message", [
    ("steps", "twenty", "steps must be an integer"),
    ("steps", 20.9, "steps must be an integer"),
    ("inits", True, "inits must be an integer"),
    ("beta", [1, 2], "beta must be a number"),
    ("log_times", 1, "log_times must be true or false"),
    ("optimizer", 3, "optimizer must be a string"),
    ("s2", ["a"], "s2 must be a list of finite numbers"),
    ("width", 3, "unknown option"),
])
def test_wrong_types_are_errors_that_name_the_key(key, value, message):
    with pytest.raises(ParameterError, match=message):
        resolve({key: value}, ts_model.OPTIONS, "file.toml: [[sim]] #1")


def test_integral_floats_are_accepted():
    """TOML writes 2e4 as a float: an integral float is an integer, a fractional one is not."""
    assert resolve({"steps": 2e4}, ts_model.OPTIONS, "x")["steps"] == 20000


def test_option_kinds_follow_the_annotations():
    kinds = {k: (o.kind, o.optional) for k, o in options_of(LinearGPSim).items()}
    assert kinds["d"] == ("int", False) and kinds["s2"] == ("floats", False) and kinds["lr"] == ("float", False)
    assert ts_model.OPTIONS["sa2"].optional and ts_model.OPTIONS["sa2"].kind == "float"
    with pytest.raises(ValueError):
        Option("x", "complex")
