"""Simulation commands: ``grokphase sim MODEL``, ``compare MODEL``, ``run FILE.toml``."""

from __future__ import annotations

import argparse
import math

from grokphase.analysis.compare import FINITE_N_KIND, compare_summary, compare_teacher_student
from grokphase.theory.results import check_corrections
from grokphase.analysis.converge import diagnostic_thresholds
from grokphase.analysis.diagnostics import attach_diagnostics, diagnose, diagnostics_points, flagged_points
from grokphase.analysis.perp_norm import compare_perp_norm, perp_norm_lines, perp_norm_summary
from grokphase.analysis.replica import replica_summary
from grokphase.cli.common import _emit, _finish, _finite, _positive, add_device_options, missing_variable
from grokphase.cli.text import (_modular_lines, diagnostics_footer, free_energy_lines, modular_hysteresis_lines,
                                star, ts_hysteresis_lines)
from grokphase.errors import ParameterError, ResultFileError
from grokphase.experiments.devices import configure_devices
from grokphase.experiments.models import modular as modular_model
from grokphase.experiments.models import teacher_student as ts_model
from grokphase.experiments.options import COMMAND_LINE
from grokphase.experiments.registry import get_model, models
from grokphase.experiments.runner import convergence_targets, run_experiment, run_options, until_converged_report
from grokphase.io import load_dataset, save_dataset
from grokphase.plotting.perp_norm import plot_perp_norm
from grokphase.sims.teacher_student import summary_points

def _int_ge(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}")
        return value

    return parse


def show_defaults(parser, options) -> None:
    """Append each option's default, read from the model's schema (the configuration dataclasses), to its
    help; the parser's own default stays None so that a missing option takes the dataclass default."""
    for action in parser._actions:
        opt = options.get(action.dest)
        if opt is None or opt.default is None or action.default not in (None, False):
            continue
        value = ",".join(f"{v:g}" for v in opt.default) if isinstance(opt.default, tuple) else opt.default
        action.help = f"{action.help + ' ' if action.help else ''}(default {value})"


#: models whose ``sim`` parser is written out here (richer help); every other registered model gets one
#: derived from its option schema by :func:`add_model_parser`
HAND_WRITTEN = ("teacher-student", "modular")
_ARG_TYPES = {"int": int, "float": float, "str": str, "floats": str}


def add_model_parser(ssub, model) -> None:
    """``grokphase sim NAME`` for a registered model: one ``--option`` per schema entry."""
    p = ssub.add_parser(model.name, help=model.description, description=model.description)
    for opt in model.options.values():
        flag = "--" + opt.name.replace("_", "-")
        if opt.kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=opt.help)
        else:
            p.add_argument(flag, type=_ARG_TYPES[opt.kind], default=None, help=opt.help,
                           metavar="V1,V2,..." if opt.kind == "floats" else None)
    show_defaults(p, model.options)
    add_device_options(p)
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", metavar="FILE.png", default=None)
    p.add_argument("--out", metavar="FILE.nc", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim_model, model=model.name)


def cmd_sim_model(args) -> int:
    """``grokphase sim NAME`` of a registered model: run, summarise its points, save / plot / print."""
    model = get_model(args.model)
    opts = {k: v for k, v in vars(args).items() if k in model.options and v is not None}
    if model.check is not None:
        model.check(opts, COMMAND_LINE, given=set(opts))       # before any device is set up
    devices = configure_devices(args.devices)
    ds = model.run(opts, devices=devices, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
                   where=COMMAND_LINE)
    points = model.summary_points(ds)
    lines = [f"{model.name}: {len(points)} point(s)"]
    lines += ["  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in pt.items())
              for pt in points]
    return _finish(args, ds, {"model": model.name, "points": points}, lines)


def _add_sampler_numerics(p) -> None:
    """``--mala``, ``--prior-exact`` and ``--matmul-precision``, shared by both models' simulation commands."""
    p.add_argument("--mala", action="store_true",
                   help="Metropolis-adjusted Langevin: accept/reject every step (no O(lr) bias; the acceptance "
                        "rate is reported); one more gradient per step")
    p.add_argument("--prior-exact", action="store_true",
                   help="Langevin noise variance 2 lr s2 (1 - lr s2/2): exact on the Gaussian prior (with --mala a "
                        "pCN-Langevin proposal, whose acceptance does not fall with the number of weights; "
                        "teacher-student --mala --prior-exact --lr 0.3 at beta = 1/2: ~2.8x plain's ESS per "
                        "CPU-second)")
    p.add_argument("--matmul-precision", choices=("highest", "high", "default", "tf32", "bf16"),
                   help="float32 matmuls: highest (default; never TF32 on GPUs), high, default (JAX's precision), "
                        "or tf32 / bf16 emulated on any device by rounding the network's matmul inputs")


def add_parsers(groups, positive=_positive, finite=_finite) -> None:
    sim = groups.add_parser("sim", help="Langevin ensemble simulations")
    ssub = sim.add_subparsers(dest="command", required=True, parser_class=type(sim))
    p = ssub.add_parser(
        "teacher-student", help="Langevin ensembles of erf networks on the cubic teacher (paper App. C)",
        description="Train datasets x inits networks per sigma^2 with preconditioned Langevin dynamics and record "
                    "the learned fractions, losses, droplet fraction and the q histogram.  Model options describe "
                    "the beta = 1 configuration (paper App. C); --beta/--alpha apply the Table-1 scaling (sizes "
                    "rounded to integers).")
    g = p.add_argument_group("model (beta = 1 configuration)")
    g.add_argument("--N", type=positive)
    g.add_argument("--n", type=positive)
    g.add_argument("--d", type=positive)
    g.add_argument("--sa2", type=positive, help="readout prior (default 8/N)")
    g.add_argument("--sw2", type=positive)
    g.add_argument("--eps", type=finite, help="the paper's target He1 + eps He3 (or give --target)")
    g.add_argument("--activation", metavar="NAME",
                   help="the student's activation: erf, relu, tanh, gelu or silu")
    g.add_argument("--target", metavar="K:C,...",
                   help="Hermite target y = sum_k c_k He_k(w*.x) as degree:coefficient pairs, e.g. \"2:1,4:0.3\" "
                        "(degrees 0..8; default He1 + eps He3)")
    g.add_argument("--s2", metavar="S1,S2,...",
                   help="sigma^2 values at beta = 1 (scaled by alpha/beta)")
    p.add_argument("--beta", type=positive)
    p.add_argument("--alpha", type=positive, help="default alpha = beta")
    _add_run_options(p, positive)
    p.add_argument("--plot", metavar="FILE.png", default=None, help="plot trajectories and learned fractions")
    p.add_argument("--out", metavar="FILE.nc", default=None)
    p.add_argument("--json", action="store_true")
    show_defaults(p, ts_model.OPTIONS)
    p.set_defaults(func=cmd_sim_teacher_student)

    p = ssub.add_parser(
        "modular", help="modular-addition networks: Langevin (with the Gamma penalty) or AdamW / GD",
        description="Train seeds networks per sigma^2 (Langevin) or per training fraction alpha (any optimiser) "
                    "on modular addition and record accuracies, the target component, Fourier spectra, IPR, "
                    "the phase constraint, the droplet fraction, and the times to memorise and to grok.")
    p.add_argument("--P", type=_int_ge(2), help="modulus (need not be prime here)")
    p.add_argument("--N", type=_int_ge(1))
    p.add_argument("--alpha", metavar="A1,A2,...", help="training fraction(s) in (0, 1]")
    p.add_argument("--s2", metavar="S1,S2,...", help="Langevin temperature(s)")
    p.add_argument("--sa2", type=positive, help="readout prior (paper parametrisation; default 0.002/N)")
    p.add_argument("--gamma", type=float, help="sextic Fourier penalty (Langevin)")
    p.add_argument("--parametrisation", choices=("paper", "gromov"),
                   help="default: paper for Langevin, gromov for the optimisers")
    p.add_argument("--optimizer", choices=("langevin", "adamw", "gd"))
    p.add_argument("--lr", type=positive)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seeds", type=_int_ge(1), help="networks per point (own data split and init)")
    p.add_argument("--seed", type=_int_ge(0))
    p.add_argument("--steps", type=_int_ge(1))
    p.add_argument("--burn-in", type=_int_ge(0))
    p.add_argument("--record-every", type=_int_ge(1))
    p.add_argument("--log-times", action="store_true")
    _add_until_converged_options(p, positive)
    p.add_argument("--dtype")
    p.add_argument("--anneal", choices=("none", "down", "up", "both"),
                   help="sweep the s2 values carrying the state from one to the next: down = cooling (from the "
                        "prior), up = heating (from the ordered droplet start), both = the two branches side by side")
    p.add_argument("--start", choices=("auto", "prior", "ordered"),
                   help="initial state: the prior, or the theory's droplet saddle (each neuron a cosine at one "
                        "frequency with |w_k|^2 = Phi_+); auto = prior, except ordered for a heating branch")
    p.add_argument("--readout", choices=("gibbs", "langevin"),
                   help="Langevin only: draw the readout exactly from its Gaussian conditional posterior before "
                        "every step (gibbs, default) or move it by Langevin like the input layer")
    _add_sampler_numerics(p)
    p.add_argument("--replica-exchange", action="store_true",
                   help="parallel tempering: one replica per s2 (sorted), --seeds independent ladders; every "
                        "--swap-every steps neighbours swap states with the Metropolis rule; records swap "
                        "acceptance, round trips and the replica trajectory, and warns when the ladder is too sparse")
    p.add_argument("--swap-every", type=_int_ge(1), help="steps between swap rounds")
    p.add_argument("--ordered-droplets", choices=("all", "theory", "coldest"),
                   help="ordered start: every neuron a droplet (all), the theory's number of droplet neurons "
                        "per mode at that s2 (theory), the rest prior draws, or every run/rung as a heating branch "
                        "starts: the theory's droplets at the lowest s2 (coldest)")
    p.add_argument("--theory-convention", choices=("paper", "network"),
                   help="normalisation of the theory used for Phi_+ (droplet rule, ordered start) and the droplet count")
    _add_umbrella_options(p, "the target component m = (f, y)/(y, y) on the whole table",
                          "target_component, ipr (the mean per-neuron Fourier IPR of the first-layer weights)")
    p.add_argument("--memory-gb", type=positive, help="memory budget of one network, GB (checked before the run)")
    add_device_options(p)
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="plot trajectories (and both branches)")
    p.add_argument("--out", metavar="FILE.nc", default=None)
    p.add_argument("--json", action="store_true")
    show_defaults(p, modular_model.OPTIONS)
    p.set_defaults(func=cmd_sim_modular)

    for name, model in models().items():       # any other registered model: options from its schema
        if name not in HAND_WRITTEN:
            add_model_parser(ssub, model)

    cmp = groups.add_parser("compare", help="simulations against the theory")
    csub = cmp.add_subparsers(dest="command", required=True, parser_class=type(cmp))
    p = csub.add_parser("teacher-student", help="paper Fig. 2: simulated -log p(q) and learned fractions vs theory",
                        description="Compare teacher-student simulation files (one beta each) with the finite-d "
                                    "theory at exactly the simulated sizes (solved unless --theory is given).")
    p.add_argument("--sim", nargs="+", required=True, metavar="SIM.nc")
    p.add_argument("--theory", default=None, metavar="THEORY.nc",
                   help="a saved `grokphase theory teacher-student --s2-sweep ... --betas ...` result")
    p.add_argument("--finite-n", nargs="+", default=None, metavar="RESULT.nc",
                   help="`grokphase theory finite-n` results (the same N, n, d, sa2, sw2, eps as a simulation): the "
                        "finite-n mean-field theory as a third curve, mean +- SE over data sets, with z-scores")
    p.add_argument("--corrections", default=None, metavar="NAME",
                   help="'ridge': the renormalised-ridge (finite-n) theory at the simulated sizes as another curve, "
                        "with z-scores (docs/finite_size.md section 4)")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--out", default=None, metavar="FILE.nc")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare_teacher_student)
    p = csub.add_parser("modular", help="modular Langevin branches vs the modular theory (target component, droplets)",
                        description="Compare modular Langevin simulation files (whole table, gamma > 0; plain runs or "
                                    "--anneal branches; one file per P for a finite-size trend) with the theory at "
                                    "exactly the simulated (N, P, sa2, gamma), in the paper's and the "
                                    "network-consistent normalisation of the self-consistency.  --plot also writes "
                                    "FILE_diagnostics.png (accuracies, IPR vs time, spectra heat maps, phase "
                                    "constraint) of the first file.")
    p.add_argument("--sim", nargs="+", required=True, metavar="SIM.nc")
    p.add_argument("--convention", choices=("both", "paper", "network"), default="both")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--out", default=None, metavar="FILE.nc")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare_modular)

    p = groups.add_parser("run", help="run an experiment file (TOML) or a shipped experiment by name, e.g. "
                                      "sims/fig2_quick.toml, fig2_quick, tiny/fig2",
                          description="Run every simulation of an experiment file, then its comparison and "
                                      "figure.  Finished simulations are reused and interrupted ones resume.")
    p.add_argument("file", metavar="FILE.toml|NAME",
                   help="a path, or the name of a definition under sims/ (the checkout you are in, else the "
                        "definitions installed with grokphase)")
    add_device_options(p)
    p.add_argument("--only", metavar="PREFIX", default=None,
                   help="teacher-student files: run only the [[sim]] entries whose name starts with PREFIX (and "
                        "the [[hysteresis]] tables that use only those), e.g. the CPU-sized part of a file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = csub.add_parser("perp-norm", help="t = |w_perp|^2 of droplet and bulk neurons vs the exact and concentrated "
                                          "theories (THEORY.md §3b)",
                        description="Compare teacher-student simulation files (recorded with t = |w_perp|^2) with "
                                    "the exact and the concentrated finite-d theory at the simulated sizes: mean t of "
                                    "droplet and bulk neurons, droplet and learned fractions, EK controls (same N, d, "
                                    "u, r at larger n) and the transition the simulations imply under each theory.")
    p.add_argument("--sim", nargs="+", required=True, metavar="SIM.nc")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--out", default=None, metavar="FILE.nc")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare_perp_norm)


def _add_umbrella_options(p, order_parameter: str, coordinates: str | None = None) -> None:
    g = p.add_argument_group("umbrella sampling (free-energy profiles by MBAR, THEORY.md §7)")
    g.add_argument("--umbrella-m0", metavar="M1,M2,...",
                   help=f"window centres of harmonic biases (kappa/2)(m - m0)^2 on {order_parameter}; every window "
                        "is one more ensemble axis (needs --umbrella-kappa)")
    g.add_argument("--umbrella-kappa", metavar="K or K1,K2,...",
                   help="window stiffness in log-posterior units: one value or one per window (with --umbrella-range: "
                        "overrides the planned one)")
    g.add_argument("--umbrella-start", choices=("prior", "ordered", "both"),
                   help="windows start from the prior, from the ordered (droplet-saddle) start, or both (a start "
                        "dimension, to check for hysteresis)")
    g.add_argument("--umbrella-range", metavar="LO,HI",
                   help="planned windows over [LO, HI]: kappa and the spacing from short unbiased pilot runs "
                        "(kappa >= 4/Var(m) of the disordered phase, neighbours within 2 window standard deviations)")
    g.add_argument("--umbrella-windows", metavar="J or J1,J2,...",
                   help="with --umbrella-range: the number of windows; with several --umbrella-coordinates one count "
                        "per coordinate (with --umbrella-m0: how many of the centres belong to each coordinate)")
    g.add_argument("--umbrella-coordinates", metavar="NAME1,NAME2,...",
                   help=f"the coordinates the windows bias ({coordinates or 'this model has one'}; default: "
                        f"{order_parameter}); with two, --umbrella-m0 "
                        "(with --umbrella-windows counts), --umbrella-kappa (one per coordinate) and --umbrella-range "
                        "(LO1,HI1,LO2,HI2) are given per coordinate and the windows are their product grid")


def _add_until_converged_options(p, positive) -> None:
    g = p.add_argument_group("run until converged (docs/diagnostics.md)")
    g.add_argument("--until-converged", action="store_true", default=None,
                   help="extend the run by --block-steps through its checkpoints until every point has R-hat <= --rhat "
                        "and bulk/tail ESS >= --min-ess, or --max-steps; the result says which rule stopped it")
    g.add_argument("--block-steps", type=_int_ge(1), help="steps added per block (default --steps)")
    g.add_argument("--max-steps", type=_int_ge(1), help="the most steps (default 10 x --steps)")
    g.add_argument("--rhat", type=positive, help="largest split-R-hat accepted (default 1.01)")
    g.add_argument("--min-ess", type=positive, help="smallest bulk and tail ESS accepted (default 400)")


def _add_run_options(p, positive) -> None:
    g = p.add_argument_group("ensemble and dynamics")
    g.add_argument("--datasets", type=_int_ge(1), help="independent data sets per sigma^2")
    g.add_argument("--inits", type=_int_ge(1), help="initialisations per data set")
    g.add_argument("--seed", type=_int_ge(0))
    g.add_argument("--steps", type=_int_ge(1))
    g.add_argument("--burn-in", type=_int_ge(0), help="default steps/4")
    g.add_argument("--lr", type=positive, help="learning rate (dimensionless: preconditioned)")
    g.add_argument("--record-every", type=_int_ge(1))
    g.add_argument("--log-times", action="store_true", help="log-spaced record times (20 per decade from "
                                                            "--record-every to --steps)")
    _add_until_converged_options(p, positive)
    g.add_argument("--optimizer", choices=("langevin", "sgd", "adam", "adamw"))
    g.add_argument("--readout", choices=("langevin", "gibbs", "refresh"),
                   help="Langevin only: move the readout by Langevin with the first layer (default), draw it "
                        "exactly from its Gaussian conditional before every step (gibbs; dual form when N > n), "
                        "or both: move it with the first layer and redraw it exactly at the start of every "
                        "record interval (refresh)")
    _add_sampler_numerics(g)
    g.add_argument("--readout-lr-scale", type=positive,
                   help="Langevin only: the readout's step is lr times this (default 1; a constant block "
                        "preconditioner letting the first layer step further than the readout's stiff likelihood "
                        "allows; the learned fractions mix with the readout, so < 1 was slower at beta = 1/2: "
                        "docs/samplers.md)")
    g.add_argument("--rao-blackwell", action="store_true",
                   help="Langevin only: record the learned fractions (and mean outputs) at the readout's "
                        "conditional mean E[a | w]: their conditional expectations given the first layer, the "
                        "same posterior means with the readout's noise integrated out (higher ESS; the MSEs "
                        "stay the sampled network's; not with umbrella windows; docs/samplers.md)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--dtype", help="float32 or float64")
    add_device_options(g)
    g.add_argument("--ensemble-chunk", type=_int_ge(1),
                   help="networks per chunk (default: what fits in --memory-gb)")
    g.add_argument("--memory-gb", type=positive, help="memory budget of an ensemble chunk, GB; one network over it "
                                                       "is refused before the run")
    g.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="periodic checkpoints; re-run to resume")
    g.add_argument("--checkpoint-every", type=positive, metavar="SECONDS")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument("--replica-exchange", action="store_true",
                   help="parallel tempering across the s2 ladder: each (dataset, init) is one ladder with one "
                        "replica per s2; swap statistics and round trips are recorded, a sparse ladder is reported")
    g.add_argument("--swap-every", type=_int_ge(1), help="steps between swap rounds")
    g.add_argument("--anneal", choices=("none", "down", "up", "both"),
                   help="sweep the s2 values carrying the state from one to the next: down = cooling (from the "
                        "prior), up = heating (from the ordered droplet start), both = the two branches side by side")
    g.add_argument("--start", choices=("auto", "prior", "ordered"),
                   help="initial state: the prior, or the theory's droplet saddle (neurons at w.w* = +-q* with "
                        "|w_perp|^2 = t*, readout drawn from its conditional posterior); auto = prior, except "
                        "ordered for a heating branch")
    g.add_argument("--ordered-droplets", choices=("all", "theory"),
                   help="ordered start: every neuron at the droplet saddle (all) or the theory's number of droplet "
                        "neurons at that s2 (theory), the rest prior draws")
    g.add_argument("--ordered-theory", choices=("finite-d", "limit"),
                   help="theory of the ordered start's q*, t* and droplet fraction: finite-d at the simulated sizes "
                        "(default) or the scaling limit")
    g.add_argument("--ordered-approximation", choices=("exact", "concentrated"),
                   help="exact (q, t) theory (t* below sw2, default) or the concentrated one (t* = sw2)")
    _add_umbrella_options(p, "the learned fraction of one target degree (--umbrella-degree)")
    p.add_argument("--umbrella-degree", type=_int_ge(0),
                   help="umbrella windows: the target degree whose learned fraction is the order parameter (default "
                        "the highest: 3 for He1 + eps He3)")


def _point_prefix(pt: dict) -> str:
    """A summary point's branch (annealing) or start and window (umbrella) for the text output."""
    out = f"{pt['branch']} " if "branch" in pt else ""
    if "start" in pt:
        out += f"{pt['start']} start "
    if "window" in pt:
        show = lambda v: ",".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v:g}"  # noqa: E731
        out += f"window {pt['window']} (m0 {show(pt['window_m0'])}, kappa {show(pt['window_kappa'])}) "
    return out


def _with_diagnostics(ds, summary: dict, lines: list[str]):
    """``ds`` with its convergence diagnostics attached (:mod:`grokphase.analysis.diagnostics`, default
    thresholds); every summary point gains ``diagnostics`` ({observable: {rhat, ess_bulk, tau_int, mcse}},
    the worst over data sets), the summary the flagged points with their reasons, the text a line per
    flagged observable (its count and worst numbers).  A run that cannot be diagnosed (one init, not
    Langevin, ...) says why."""
    try:
        diag = diagnose(ds, **diagnostic_thresholds(ds))
    except (ResultFileError, ParameterError) as exc:
        summary["diagnostics"] = {"unavailable": str(exc)}
        lines.append(f"  diagnostics unavailable: {exc}")
        return ds
    rows = diagnostics_points(diag)
    std = {"s2", "dataset", "observable", "rhat", "ess_bulk", "ess_tail", "tau_int", "mcse", "mean", "equilibration",
           "burn_in", "flagged", "reason", "burn_in_short", "equilibration_at_limit"}
    worst = {"rhat": max, "ess_bulk": min, "tau_int": max, "mcse": max}
    for pt in summary.get("points", []):
        mine = [r for r in rows if math.isclose(r["s2"], float(pt["s2"]), rel_tol=1e-12)
                and all(k not in pt or str(pt[k]) == str(v) for k, v in r.items() if k not in std)]
        per: dict = {}
        for r in mine:
            d = per.setdefault(r["observable"], {})
            for k, pick in worst.items():
                if r[k] is not None:
                    d[k] = r[k] if d.get(k) is None else pick(d[k], r[k])
        pt["diagnostics"] = per
    flagged = flagged_points(diag)
    summary["diagnostics"] = {"rhat_max": float(diag.attrs["rhat_max"]), "min_ess": float(diag.attrs["min_ess"]),
                              "burn_in": int(diag.attrs["burn_in"]), "checked": len(rows),
                              "flagged": [{"s2": p.s2, "dataset": p.dataset, "observable": p.observable,
                                           "reason": p.reason, **p.where} for p in flagged]}
    lines.append(f"  diagnostics: {len(flagged)} of {len(rows)} (observable, s2, data set) flagged "
                 f"(R-hat > {diag.attrs['rhat_max']:g} or ESS < {diag.attrs['min_ess']:g}; grokphase diagnose for all)")
    for obs in dict.fromkeys(p.observable for p in flagged):      # one line per observable, worst numbers
        mine = [r for r in rows if r["observable"] == obs and r["flagged"]]
        rh = [r["rhat"] for r in mine if r["rhat"] is not None]
        ess = [r["ess_bulk"] for r in mine if r["ess_bulk"] is not None]
        lines.append(f"    {obs}: {len(mine)} flagged" + (f", worst R-hat {max(rh):.3f}" if rh else "")
                     + (f", smallest bulk ESS {min(ess):.0f}" if ess else ""))
    return attach_diagnostics(ds, diag)


def cmd_sim_teacher_student(args) -> int:
    opts = {k: v for k, v in vars(args).items() if v is not None}
    sim = ts_model.sim_from_options(opts, COMMAND_LINE, given=set(opts))
    if args.plot and sim.umbrella:
        raise ParameterError("--plot: an umbrella run has no figure of its own (the free-energy analysis reads its "
                             "result); remove it")
    ts_model.check_memory(sim, opts, COMMAND_LINE)
    convergence_targets(ts_model.OPTIONS, opts, COMMAND_LINE)
    devices = configure_devices(args.devices)
    ds = run_options(ts_model.run, ts_model.OPTIONS, opts, devices=devices, progress=not args.no_progress,
                     checkpoint_dir=args.checkpoint_dir, where=COMMAND_LINE)
    points = summary_points(ds)
    summary = {"points": points, "N": sim.N, "n": sim.n, "d": sim.d, "sa2": sim.sa2_value,
               "networks_per_s2": sim.datasets * sim.inits, "seconds": ds.attrs["seconds"],
               "network_steps_per_second": ds.attrs["network_steps_per_second"]}
    if ds.attrs.get("protocol") == "replica exchange":
        summary["replica_exchange"] = replica_summary(ds)
    if not sim.paper_model:
        summary.update(activation=sim.activation_name, target=sim.hermite_target.spec)
    model = "" if sim.paper_model else f" ({sim.activation_name}, target {sim.hermite_target.spec})"
    sampler = (("pCN-" if sim.prior_exact else "") + ("MALA" if sim.mala else "Langevin")
               + (", Gibbs readout" if sim.readout == "gibbs" else "")
               + (f", readout redrawn every {sim.record_every} steps" if sim.readout == "refresh" else "")
               + (f", readout step x{sim.readout_lr_scale:g}" if sim.readout_lr_scale != 1.0 else "")
               + (", Rao-Blackwellised records" if sim.rao_blackwell else ""))
    steps = int(ds.attrs.get("steps_run", sim.steps))         # until converged: the steps actually run
    lines = [f"teacher-student {sampler}{model}: N={sim.N} d={sim.d} n={sim.n} sa2={sim.sa2_value:.4g}, "
             f"{sim.datasets}x{sim.inits} networks per s2, {steps} steps (lr {sim.lr:g})"]
    for pt in points:
        branch = _point_prefix(pt)
        if "linear_learned" in pt:
            learned = (f"linear {pt['linear_learned']:.4f}±{pt['linear_learned_sem']:.4f}  "
                       f"cubic {pt['cubic_learned']:.4f}±{pt['cubic_learned_sem']:.4f}")
        else:
            learned = "  ".join(f"He{k} {v:.4f}±{pt['learned_sem'][k]:.4f}" for k, v in pt["learned"].items())
        lines.append(f"  {branch}s2={pt['s2']:.4g}  {learned}  droplets "
                     f"{pt['droplet_fraction']:.4f}±{pt['droplet_fraction_sem']:.4f}  train/test MSE "
                     f"{pt['train_mse']:.4f}/{pt['test_mse']:.4f}"
                     + (f"  acceptance {pt['metropolis_acceptance']:.3f}" if "metropolis_acceptance" in pt else ""))
    until_converged_report(ds, summary, lines)
    ds = _with_diagnostics(ds, summary, lines)
    return _finish(args, ds, summary, lines)


def cmd_sim_modular(args) -> int:
    opts = {k: v for k, v in vars(args).items() if v is not None}
    sims = modular_model.sims_from_options(opts, COMMAND_LINE, given=set(opts))
    modular_model.check_memory(sims, opts, COMMAND_LINE)
    convergence_targets(modular_model.OPTIONS, opts, COMMAND_LINE)
    devices = configure_devices(args.devices)
    ds = run_options(modular_model.run, modular_model.OPTIONS, opts, devices=devices, progress=not args.no_progress,
                     checkpoint_dir=args.checkpoint_dir, where=COMMAND_LINE)
    points = modular_model.points(ds)
    lines = [f"modular addition P={sims[0].P} N={sims[0].N} ({sims[0].optimizer})"]
    for pt in points:
        branch = _point_prefix(pt)
        lines.append(f"  {branch}alpha={pt['alpha']:.3g} s2={pt['s2']:.4g}: train/test acc {pt['train_acc']:.3f}/"
                     f"{pt['test_acc']:.3f}, target component {pt['target_component']:.4f}, IPR {pt['ipr']:.3f}, "
                     f"droplets {pt['droplet_fraction']:.3f}, t_memorise {pt['t_memorise']}, t_grok {pt['t_grok']}")
    summary = {"points": points}
    if ds.attrs.get("protocol") == "replica exchange":
        summary["replica_exchange"] = replica_summary(ds)
        r = summary["replica_exchange"]
        lines.append(f"  replica exchange: swap acceptance per pair {', '.join(f'{x:.3f}' for x in r['acceptance'])}; "
                     f"{r['round_trips']} round trips" + (f"; WARNING: {r['warning']}" if r["warning"] else ""))
    until_converged_report(ds, summary, lines)
    ds = _with_diagnostics(ds, summary, lines)
    return _finish(args, ds, summary, lines)


def cmd_compare_teacher_student(args) -> int:

    sims = [load_dataset(p, "sims.teacher_student") for p in args.sim]
    theory = load_dataset(args.theory, "theory.teacher_student.sweep") if args.theory else None
    finite_n = {path: load_dataset(path, FINITE_N_KIND) for path in (args.finite_n or [])}
    try:
        cmp = compare_teacher_student(sims, theory, finite_n=finite_n,
                                      corrections=check_corrections(args.corrections))
    except KeyError as err:
        files = {**dict(zip(args.sim, sims)), **({args.theory: theory} if theory is not None else {}), **finite_n}
        raise missing_variable(err, files) or err from None
    summary = compare_summary(cmp)
    if "degrees" in summary:                         # another activation or target (issue 18)
        return _finish(args, cmp, summary, single_index_compare_lines(summary))
    lines = [f"z = (sim - theory) / SEM vs the {summary['z_against']} (theory columns)",
             f"{'beta':>6} {'s2':>7} {'cubic sim':>17} {'theory':>8} {'z':>6} {'linear sim':>17} {'theory':>8} {'z':>6}"]
    for r in summary["points"]:
        lines.append(f"{r['beta']:6.4g} {r['s2']:7.4g} {r['sim_cubic_learned']:8.4f}±{r['sim_cubic_learned_sem']:.4f} "
                     f"{r['theory_cubic_learned']:8.4f} {r['z_cubic']:6.2f}{star(r, 'z_cubic')}{r['sim_linear_learned']:8.4f}±"
                     f"{r['sim_linear_learned_sem']:.4f} {r['theory_linear_learned']:8.4f} {r['z_linear']:6.2f}"
                     f"{star(r, 'z_linear')}")
    if finite_n:
        lines += finite_n_compare_lines(summary["points"])
    if "ridge_cubic_learned" in cmp:
        lines += ["renormalised-ridge (finite-n) theory at the simulated sizes (z against it):",
                  f"{'beta':>6} {'s2':>7} {'cubic ridge':>12} {'z':>6} {'linear ridge':>13} {'z':>6}"]
        lines += [f"{r['beta']:6.4g} {r['s2']:7.4g} {r['ridge_cubic_learned']:12.4f} {r['z_ridge_cubic']:6.2f} "
                  f"{r['ridge_linear_learned']:13.4f} {r['z_ridge_linear']:6.2f}" for r in summary["points"]]
    return _finish(args, cmp, summary, lines + diagnostics_footer(summary["points"]))


def finite_n_compare_lines(points) -> list[str]:
    """The finite-n theory column of a teacher-student comparison: per point its mean +- SE over data sets
    and z = (sim - finite n)/sqrt(SEM_sim^2 + SEM_fin^2)."""
    points = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in points]   # JSON rows: null
    lines = ["finite-n mean-field theory (mean ± SE over converged data sets; z against it, both errors):",
             f"{'beta':>6} {'s2':>7} {'cubic finite-n':>17} {'z':>6} {'linear finite-n':>17} {'z':>6} {'sets':>5}"]
    for r in points:
        if not math.isfinite(r.get("finite_n_cubic_learned", math.nan)):
            lines.append(f"{r['beta']:6.4g} {r['s2']:7.4g}   (no finite-n solution at this sigma^2)")
            continue
        lines.append(f"{r['beta']:6.4g} {r['s2']:7.4g} {r['finite_n_cubic_learned']:8.4f}±{r['finite_n_cubic_learned_sem']:<8.4f} "
                     f"{r['z_finite_n_cubic']:6.2f} {r['finite_n_linear_learned']:8.4f}±{r['finite_n_linear_learned_sem']:<8.4f} "
                     f"{r['z_finite_n_linear']:6.2f} {int(r['finite_n_datasets']):5d}")
        if math.isfinite(r.get("finite_n_cubic_corrected", math.nan)):
            lines.append(f"{'+ 1/N':>14} {r['finite_n_cubic_corrected']:8.4f}±{r['finite_n_cubic_corrected_sem']:<8.4f} "
                         f"{r['z_finite_n_cubic_corrected']:6.2f} {r['finite_n_linear_corrected']:8.4f}±"
                         f"{r['finite_n_linear_corrected_sem']:<8.4f} {r['z_finite_n_linear_corrected']:6.2f}   "
                         "(finite n + one loop)")
    paired = [r for r in points if math.isfinite(r.get("paired_finite_n_cubic_diff", math.nan))]
    if paired:
        lines.append("paired over the simulation's own data sets: mean ± SE of sim - theory per data set, z")
        for r in paired:
            for what, label in (("", "finite n"), ("_corrected", "finite n + 1/N")):
                if not math.isfinite(r.get(f"paired_finite_n_cubic{what}_diff", math.nan)):
                    continue
                lines.append(f"{r['beta']:6.4g} {r['s2']:7.4g} {label:>15}: cubic "
                             f"{r[f'paired_finite_n_cubic{what}_diff']:+.4f}±{r[f'paired_finite_n_cubic{what}_diff_sem']:.4f} "
                             f"(z {r[f'z_paired_finite_n_cubic{what}']:.2f}), linear "
                             f"{r[f'paired_finite_n_linear{what}_diff']:+.4f}±{r[f'paired_finite_n_linear{what}_diff_sem']:.4f} "
                             f"(z {r[f'z_paired_finite_n_linear{what}']:.2f})")
    return lines


def single_index_compare_lines(summary: dict) -> list[str]:
    """Text of a single-index comparison: per beta and s2, per target degree sim ± SEM, theory, z."""
    lines = [f"{summary['activation']} network, target {summary['target']}: learned fraction per degree, "
             f"z = (sim - theory) / SEM vs the {summary['z_against']}"]
    for r in summary["points"]:
        parts = [f"He{k} {r['sim_learned'][k]:.4f}±{r['sim_learned_sem'][k]:.4f} (theory "
                 f"{r['theory_learned'][k]:.4f}, z={r['z_learned'][k]:.2f}{star(r, f'z_learned_{k}').strip()})"
                 for k in r["sim_learned"]]
        lines.append(f"  beta={r['beta']:.4g} s2={r['s2']:.4g}: " + "; ".join(parts))
    return lines + diagnostics_footer(summary["points"])


def cmd_compare_modular(args) -> int:

    sims = [load_dataset(p, "sims.modular") for p in args.sim]
    convs = ("paper", "network") if args.convention == "both" else (args.convention,)
    cmp, summary = modular_model.modular_comparison(sims, convs, args.plot)
    if args.out:
        save_dataset(cmp, args.out)
        summary["out"] = args.out
    _emit(args, summary, _modular_lines(summary))
    return 0


def cmd_run(args) -> int:

    summary = run_experiment(args.file, devices_k=args.devices, progress=not args.no_progress, only=args.only)
    lines = [f"simulations: {', '.join(summary['simulations'])}"]
    if summary.get("plots"):
        lines.append(f"wrote {', '.join(summary['plots'])}")
    lines.extend(f"diagnostics of {f}: {d}" for f, d in summary.get("diagnostics", {}).items())
    vs = f" vs {summary.get('z_against', 'theory')}"
    if "compare" in summary and "degrees" in summary:       # a single-index comparison (issue 18)
        lines.extend(single_index_compare_lines(summary))
    for r in (summary.get("points", []) if "compare" in summary and "degrees" not in summary else []):
        lines.append(f"  beta={r['beta']:.4g} s2={r['s2']:.4g}: cubic {r['sim_cubic_learned']:.4f}"
                     f"±{r['sim_cubic_learned_sem']:.4f} (theory {r['theory_cubic_learned']:.4f}, "
                     f"z={r['z_cubic']:.2f}{star(r, 'z_cubic').strip()}{vs}); linear {r['sim_linear_learned']:.4f}"
                     f"±{r['sim_linear_learned_sem']:.4f} (theory {r['theory_linear_learned']:.4f}, "
                     f"z={r['z_linear']:.2f}{star(r, 'z_linear').strip()}{vs})")
    if "compare" in summary and "degrees" not in summary:
        lines.extend(diagnostics_footer(summary.get("points", [])))
    if "plot" in summary:
        lines.append(f"wrote {summary['plot']}")
    if "modular_compare" in summary:
        lines.extend(_modular_lines(summary["modular_compare"]))
    if "perp_norm" in summary:

        lines.extend(perp_norm_lines(summary["perp_norm"]))
    hyst = summary.get("hysteresis")
    if isinstance(hyst, list):                      # teacher-student: one summary per [[hysteresis]] table
        for h in hyst:
            lines.extend(ts_hysteresis_lines(h))
    elif isinstance(hyst, dict):                    # modular
        lines.extend(modular_hysteresis_lines(hyst))
    if summary.get("free_energy"):                  # the [free_energy] table: the command's own text per run
        for entry in summary["free_energy"]:
            lines.append(f"free energy of {entry['sim']} -> {entry['out']}")
            lines.extend("  " + line for line in free_energy_lines(entry))
    _emit(args, summary, lines)
    return 0


def cmd_compare_perp_norm(args) -> int:

    sims = [load_dataset(p, "sims.teacher_student") for p in args.sim]
    cmp = compare_perp_norm(sims)
    summary = perp_norm_summary(cmp)
    if args.out:
        save_dataset(cmp, args.out)
        summary["out"] = args.out
    if args.plot:
        plot_perp_norm(cmp, args.plot)
        summary["plot"] = args.plot
    _emit(args, summary, perp_norm_lines(summary))
    return 0
