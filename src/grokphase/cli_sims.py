"""Simulation commands of the CLI: ``sim teacher-student``, ``compare teacher-student`` and
``run FILE.toml`` (experiment definitions).  Registered by :func:`grokphase.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from grokphase.errors import ParameterError, ResultFileError


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


def add_parsers(groups, positive, finite) -> None:
    sim = groups.add_parser("sim", help="Langevin ensemble simulations")
    ssub = sim.add_subparsers(dest="command", required=True, parser_class=type(sim))
    p = ssub.add_parser(
        "teacher-student", help="Langevin ensembles of erf networks on the cubic teacher (paper App. C)",
        description="Train datasets x inits networks per sigma^2 with preconditioned Langevin dynamics and record "
                    "the learned fractions, losses, droplet fraction and the q histogram.  Model options describe "
                    "the beta = 1 configuration (paper App. C); --beta/--alpha apply the Table-1 scaling (sizes "
                    "rounded to integers).")
    g = p.add_argument_group("model (beta = 1 configuration)")
    g.add_argument("--N", type=positive, default=700.0)
    g.add_argument("--n", type=positive, default=3000.0)
    g.add_argument("--d", type=positive, default=150.0)
    g.add_argument("--sa2", type=positive, default=None, help="readout prior (default 8/N)")
    g.add_argument("--sw2", type=positive, default=0.5)
    g.add_argument("--eps", type=finite, default=-0.3)
    g.add_argument("--s2", default="0.1,0.15,0.2,0.25,0.3", metavar="S1,S2,...",
                   help="sigma^2 values at beta = 1 (scaled by alpha/beta); default 0.1,0.15,0.2,0.25,0.3")
    p.add_argument("--beta", type=positive, default=1.0)
    p.add_argument("--alpha", type=positive, default=None, help="default alpha = beta")
    _add_run_options(p, positive)
    p.add_argument("--plot", metavar="FILE.png", default=None, help="plot trajectories and learned fractions")
    p.add_argument("--out", metavar="FILE.nc", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim_teacher_student)

    p = ssub.add_parser(
        "modular", help="modular-addition networks: Langevin (with the Gamma penalty) or AdamW / GD",
        description="Train seeds networks per sigma^2 (Langevin) or per training fraction alpha (any optimiser) "
                    "on modular addition and record accuracies, the target component, Fourier spectra, IPR, "
                    "the phase constraint, the droplet fraction, and the times to memorise and to grok.")
    p.add_argument("--P", type=_int_ge(2), default=59, help="modulus (need not be prime here)")
    p.add_argument("--N", type=_int_ge(1), default=256)
    p.add_argument("--alpha", default="1", metavar="A1,A2,...", help="training fraction(s) in (0, 1] (default 1)")
    p.add_argument("--s2", default="0.2", metavar="S1,S2,...", help="Langevin temperature(s) (default 0.2)")
    p.add_argument("--sa2", type=positive, default=None, help="readout prior (paper parametrisation; default 0.002/N)")
    p.add_argument("--gamma", type=float, default=0.0, help="sextic Fourier penalty (Langevin; default 0)")
    p.add_argument("--parametrisation", choices=("paper", "gromov"), default=None,
                   help="default: paper for Langevin, gromov for the optimisers")
    p.add_argument("--optimizer", choices=("langevin", "adamw", "gd"), default="langevin")
    p.add_argument("--lr", type=positive, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seeds", type=_int_ge(1), default=1, help="networks per point (own data split and init)")
    p.add_argument("--seed", type=_int_ge(0), default=0)
    p.add_argument("--steps", type=_int_ge(1), default=1000)
    p.add_argument("--burn-in", type=_int_ge(0), default=0)
    p.add_argument("--record-every", type=_int_ge(1), default=10)
    p.add_argument("--log-times", action="store_true")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--anneal", choices=("none", "down", "up", "both"), default="none",
                   help="sweep the s2 values carrying the state from one to the next: down = cooling (from the "
                        "prior), up = heating (from the ordered droplet start), both = the two branches side by side")
    p.add_argument("--start", choices=("auto", "prior", "ordered"), default="auto",
                   help="initial state: the prior, or the theory's droplet saddle (each neuron a cosine at one "
                        "frequency with |w_k|^2 = Phi_+); auto = prior, except ordered for a heating branch")
    p.add_argument("--readout", choices=("gibbs", "langevin"), default="gibbs",
                   help="Langevin only: draw the readout exactly from its Gaussian conditional posterior before "
                        "every step (gibbs, default) or move it by Langevin like the input layer")
    p.add_argument("--replica-exchange", action="store_true",
                   help="parallel tempering: one replica per s2 (sorted), --seeds independent ladders; every "
                        "--swap-every steps neighbours swap states with the Metropolis rule; records swap "
                        "acceptance, round trips and the replica trajectory, and warns when the ladder is too sparse")
    p.add_argument("--swap-every", type=_int_ge(1), default=10, help="steps between swap rounds (default 10)")
    p.add_argument("--ordered-droplets", choices=("all", "theory", "coldest"), default="all",
                   help="ordered start: every neuron a droplet (all), the theory's number of droplet neurons "
                        "per mode at that s2 (theory), the rest prior draws, or every run/rung as a heating branch "
                        "starts: the theory's droplets at the lowest s2 (coldest)")
    p.add_argument("--theory-convention", choices=("paper", "network"), default="paper",
                   help="normalisation of the theory used for Phi_+ (droplet rule, ordered start) and the droplet count")
    p.add_argument("--devices", type=_int_ge(1), default=None)
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="plot trajectories (and both branches)")
    p.add_argument("--out", metavar="FILE.nc", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim_modular)

    cmp = groups.add_parser("compare", help="simulations against the theory")
    csub = cmp.add_subparsers(dest="command", required=True, parser_class=type(cmp))
    p = csub.add_parser("teacher-student", help="paper Fig. 2: simulated -log p(q) and learned fractions vs theory",
                        description="Compare teacher-student simulation files (one beta each) with the finite-d "
                                    "theory at exactly the simulated sizes (solved unless --theory is given).")
    p.add_argument("--sim", nargs="+", required=True, metavar="SIM.nc")
    p.add_argument("--theory", default=None, metavar="THEORY.nc",
                   help="a saved `grokphase theory teacher-student --s2-sweep ... --betas ...` result")
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

    p = groups.add_parser("run", help="run an experiment definition (TOML), e.g. sims/fig2_quick.toml",
                          description="Run every simulation of an experiment file, then its comparison and "
                                      "figure.  Finished simulations are reused and interrupted ones resume.")
    p.add_argument("file", metavar="FILE.toml")
    p.add_argument("--devices", type=_int_ge(1), default=None)
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


def _add_run_options(p, positive) -> None:
    g = p.add_argument_group("ensemble and dynamics")
    g.add_argument("--datasets", type=_int_ge(1), default=4, help="independent data sets per sigma^2 (default 4)")
    g.add_argument("--inits", type=_int_ge(1), default=2, help="initialisations per data set (default 2)")
    g.add_argument("--seed", type=_int_ge(0), default=0)
    g.add_argument("--steps", type=_int_ge(1), default=20000)
    g.add_argument("--burn-in", type=_int_ge(0), default=None, help="default steps/4")
    g.add_argument("--lr", type=positive, default=2e-3, help="learning rate (dimensionless: preconditioned)")
    g.add_argument("--record-every", type=_int_ge(1), default=100)
    g.add_argument("--log-times", action="store_true", help="log-spaced record times (20 per decade from "
                                                            "--record-every to --steps)")
    g.add_argument("--optimizer", choices=("langevin", "sgd", "adam", "adamw"), default="langevin")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    g.add_argument("--devices", type=_int_ge(1), default=None,
                   help="share each ensemble chunk over K devices (on CPU: K host devices)")
    g.add_argument("--ensemble-chunk", type=_int_ge(1), default=None,
                   help="networks per chunk (default: what fits in --memory-gb)")
    g.add_argument("--memory-gb", type=positive, default=2.0)
    g.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="periodic checkpoints; re-run to resume")
    g.add_argument("--checkpoint-every", type=positive, default=60.0, metavar="SECONDS")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument("--replica-exchange", action="store_true",
                   help="parallel tempering across the s2 ladder: each (dataset, init) is one ladder with one "
                        "replica per s2; swap statistics and round trips are recorded, a sparse ladder is reported")
    g.add_argument("--swap-every", type=_int_ge(1), default=10, help="steps between swap rounds (default 10)")
    g.add_argument("--anneal", choices=("none", "down", "up", "both"), default="none",
                   help="sweep the s2 values carrying the state from one to the next: down = cooling (from the "
                        "prior), up = heating (from the ordered droplet start), both = the two branches side by side")
    g.add_argument("--start", choices=("auto", "prior", "ordered"), default="auto",
                   help="initial state: the prior, or the theory's droplet saddle (neurons at w.w* = +-q* with "
                        "|w_perp|^2 = t*, readout drawn from its conditional posterior); auto = prior, except "
                        "ordered for a heating branch")
    g.add_argument("--ordered-droplets", choices=("all", "theory"), default="all",
                   help="ordered start: every neuron at the droplet saddle (all) or the theory's number of droplet "
                        "neurons at that s2 (theory), the rest prior draws")
    g.add_argument("--ordered-theory", choices=("finite-d", "limit"), default="finite-d",
                   help="theory of the ordered start's q*, t* and droplet fraction: finite-d at the simulated sizes "
                        "(default) or the scaling limit")
    g.add_argument("--ordered-approximation", choices=("exact", "concentrated"), default="exact",
                   help="exact (q, t) theory (t* below sw2, default) or the concentrated one (t* = sw2)")


def request_host_devices(k: int | None) -> None:
    """Ask XLA for K host (CPU) devices without intra-op threading; effective only before JAX
    initialises its backend (the CLI calls this first thing).  Harmless on GPU machines."""
    if k is None:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={k}"
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false"
    os.environ["XLA_FLAGS"] = flags.strip()


def configure_devices(k: int | None):
    """The devices to shard ensembles over: the first K (``None``: every device)."""
    request_host_devices(k)
    import jax

    if k is None:
        return jax.devices()

    devs = jax.devices()
    if len(devs) < k:
        raise ParameterError(f"--devices {k}: only {len(devs)} device(s) available (on CPU the host device count "
                             "must be set before JAX starts; run the command in a fresh process)")
    return devs[:k]


def _sim_from_options(opts: dict[str, Any]):
    """TeacherStudentSim from CLI/TOML options (beta = 1 configuration + scaling)."""
    from grokphase.axes import parse_list
    from grokphase.sims.teacher_student import TeacherStudentSim
    from grokphase.theory.teacher_student import TeacherStudentParams

    s2 = opts.get("s2", "0.1,0.15,0.2,0.25,0.3")
    s2 = parse_list(s2, "--s2") if isinstance(s2, str) else np.atleast_1d(np.asarray(s2, dtype=float))
    if s2.size == 0 or np.any(~np.isfinite(s2)) or np.any(s2 <= 0):
        raise ParameterError(f"--s2 values must be > 0, got {s2.tolist()}")
    base = TeacherStudentParams(N=float(opts.get("N", 700.0)), n=float(opts.get("n", 3000.0)),
                                d=float(opts.get("d", 150.0)), s2=0.14, sa2=opts.get("sa2"),
                                sw2=float(opts.get("sw2", 0.5)), eps=float(opts.get("eps", -0.3)))
    steps = int(opts.get("steps", 20000))
    burn_in = opts.get("burn_in")
    burn_in = steps // 4 if burn_in is None else int(burn_in)
    lr = float(opts.get("lr", 2e-3))
    if not (math.isfinite(lr) and lr > 0):
        raise ParameterError(f"lr must be a finite number > 0, got {lr!r}")
    return TeacherStudentSim.from_scaling(
        base, beta=float(opts.get("beta", 1.0)), alpha=opts.get("alpha"), s2=s2,
        datasets=int(opts.get("datasets", 4)), inits=int(opts.get("inits", 2)), seed=int(opts.get("seed", 0)),
        steps=steps, burn_in=burn_in, lr=lr, record_every=int(opts.get("record_every", 100)),
        log_times=bool(opts.get("log_times", False)), optimizer=str(opts.get("optimizer", "langevin")),
        weight_decay=float(opts.get("weight_decay", 0.0)), dtype=str(opts.get("dtype", "float32")),
        replica_exchange=bool(opts.get("replica_exchange", False)), swap_every=int(opts.get("swap_every", 10)),
        anneal=str(opts.get("anneal", "none")), start=str(opts.get("start", "auto")),
        ordered_droplets=str(opts.get("ordered_droplets", "all")),
        ordered_theory=str(opts.get("ordered_theory", "finite-d")),
        ordered_approximation=str(opts.get("ordered_approximation", "exact")))


def _run_sim(sim, *, devices, opts: dict[str, Any], progress: bool):
    from grokphase.sims.teacher_student import run_teacher_student

    return run_teacher_student(sim, devices=devices, ensemble_chunk=opts.get("ensemble_chunk"),
                               memory_budget=float(opts.get("memory_gb", 2.0)) * 1e9,
                               checkpoint_dir=opts.get("checkpoint_dir"),
                               checkpoint_every=float(opts.get("checkpoint_every", 60.0)), progress=progress)


def cmd_sim_teacher_student(args) -> int:
    from grokphase.cli import _finish
    from grokphase.sims.teacher_student import summary_points

    opts = {k: v for k, v in vars(args).items() if v is not None}
    sim = _sim_from_options(opts)
    devices = configure_devices(args.devices)
    ds = _run_sim(sim, devices=devices, opts=opts, progress=not args.no_progress)
    points = summary_points(ds)
    summary = {"points": points, "N": sim.N, "n": sim.n, "d": sim.d, "sa2": sim.sa2_value,
               "networks_per_s2": sim.datasets * sim.inits, "seconds": ds.attrs["seconds"],
               "network_steps_per_second": ds.attrs["network_steps_per_second"]}
    if ds.attrs.get("protocol") == "replica exchange":
        summary["replica_exchange"] = replica_summary(ds)
    lines = [f"teacher-student Langevin: N={sim.N} d={sim.d} n={sim.n} sa2={sim.sa2_value:.4g}, "
             f"{sim.datasets}x{sim.inits} networks per s2, {sim.steps} steps (lr {sim.lr:g})"]
    for pt in points:
        branch = f"{pt['branch']} " if "branch" in pt else ""
        lines.append(f"  {branch}s2={pt['s2']:.4g}  linear {pt['linear_learned']:.4f}±{pt['linear_learned_sem']:.4f}  "
                     f"cubic {pt['cubic_learned']:.4f}±{pt['cubic_learned_sem']:.4f}  droplets "
                     f"{pt['droplet_fraction']:.4f}±{pt['droplet_fraction_sem']:.4f}  train/test MSE "
                     f"{pt['train_mse']:.4f}/{pt['test_mse']:.4f}")
    return _finish(args, ds, summary, lines)


def run_modular_options(opts: dict[str, Any], *, devices, progress: bool):
    """Run one modular simulation per training fraction; returns the Dataset (alpha a dimension when
    several are given) and the JSON points."""
    import xarray as xr

    from grokphase.axes import parse_list
    from grokphase.sims.modular import ModularSim, run_modular, summary_points

    def values(key, default):
        v = opts.get(key, default)
        return parse_list(v, f"--{key}") if isinstance(v, str) else np.atleast_1d(np.asarray(v, dtype=float))

    alphas = values("alpha", "1")
    if np.any(alphas <= 0) or np.any(alphas > 1):
        raise ParameterError(f"--alpha values must be in (0, 1], got {alphas.tolist()}")
    optimizer = str(opts.get("optimizer", "langevin"))
    par = opts.get("parametrisation") or ("paper" if optimizer == "langevin" else "gromov")
    results, points = [], []
    for alpha in alphas:
        sim = ModularSim(P=int(opts.get("P", 59)), N=int(opts.get("N", 256)), alpha=float(alpha),
                         s2=tuple(values("s2", "0.2")), sa2=opts.get("sa2"), gamma=float(opts.get("gamma", 0.0)),
                         parametrisation=par, optimizer=optimizer, lr=float(opts.get("lr", 1e-3)),
                         weight_decay=float(opts.get("weight_decay", 0.0)), seeds=int(opts.get("seeds", 1)),
                         seed=int(opts.get("seed", 0)), steps=int(opts.get("steps", 1000)),
                         burn_in=int(opts.get("burn_in", 0)), record_every=int(opts.get("record_every", 10)),
                         log_times=bool(opts.get("log_times", False)), dtype=str(opts.get("dtype", "float32")),
                         anneal=str(opts.get("anneal", "none")), start=str(opts.get("start", "auto")),
                         readout=str(opts.get("readout", "gibbs")),
                         replica_exchange=bool(opts.get("replica_exchange", False)),
                         swap_every=int(opts.get("swap_every", 10)),
                         ordered_droplets=str(opts.get("ordered_droplets", "all")),
                         theory_convention=str(opts.get("theory_convention", "paper")))
        ds = run_modular(sim, devices=devices, checkpoint_dir=opts.get("checkpoint_dir"), progress=progress)
        results.append(ds)
        points.extend(summary_points(ds))
    if len(results) == 1:
        return results[0], points
    ds = xr.concat([r.expand_dims(alpha=[float(a)]) for r, a in zip(results, alphas)], dim="alpha",
                   combine_attrs="override")
    ds.attrs["param_alpha"] = alphas
    return ds, points


def cmd_sim_modular(args) -> int:
    from grokphase.cli import _finish

    opts = {k: v for k, v in vars(args).items() if v is not None}
    devices = configure_devices(args.devices)
    ds, points = run_modular_options(opts, devices=devices, progress=not args.no_progress)
    lines = [f"modular addition P={args.P} N={args.N} ({opts.get('optimizer')})"]
    for pt in points:
        branch = f"{pt['branch']} " if "branch" in pt else ""
        lines.append(f"  {branch}alpha={pt['alpha']:.3g} s2={pt['s2']:.4g}: train/test acc {pt['train_acc']:.3f}/"
                     f"{pt['test_acc']:.3f}, target component {pt['target_component']:.4f}, IPR {pt['ipr']:.3f}, "
                     f"droplets {pt['droplet_fraction']:.3f}, t_memorise {pt['t_memorise']}, t_grok {pt['t_grok']}")
    summary = {"points": points}
    if ds.attrs.get("protocol") == "replica exchange":
        summary["replica_exchange"] = replica_summary(ds)
        r = summary["replica_exchange"]
        lines.append(f"  replica exchange: swap acceptance per pair {', '.join(f'{x:.3f}' for x in r['acceptance'])}; "
                     f"{r['round_trips']} round trips" + (f"; WARNING: {r['warning']}" if r["warning"] else ""))
    return _finish(args, ds, summary, lines)


def replica_summary(ds) -> dict:
    """Swap acceptance per neighbour pair, round trips and the ladder warning of a replica-exchange result."""
    warning = str(ds.attrs.get("ladder_warning", "none"))
    return {"acceptance": [float(x) for x in ds["swap_acceptance_pooled"].values],
            "pair_s2_low": [float(x) for x in ds["pair_s2_low"].values],
            "round_trips": int(ds["round_trips"].values.sum()), "ladder_ok": bool(ds.attrs.get("ladder_ok", 0)),
            "warning": "" if warning == "none" else warning}


def cmd_compare_teacher_student(args) -> int:
    from grokphase.analysis import compare_summary, compare_teacher_student
    from grokphase.cli import _finish
    from grokphase.io import load_dataset

    sims = [load_dataset(p, "sims.teacher_student") for p in args.sim]
    theory = load_dataset(args.theory, "theory.teacher_student.sweep") if args.theory else None
    cmp = compare_teacher_student(sims, theory)
    summary = compare_summary(cmp)
    lines = [f"{'beta':>6} {'s2':>7} {'cubic sim':>17} {'theory':>8} {'z':>6} {'linear sim':>17} {'theory':>8} {'z':>6}"]
    for r in summary["points"]:
        lines.append(f"{r['beta']:6.4g} {r['s2']:7.4g} {r['sim_cubic_learned']:8.4f}±{r['sim_cubic_learned_sem']:.4f} "
                     f"{r['theory_cubic_learned']:8.4f} {r['z_cubic']:6.2f} {r['sim_linear_learned']:8.4f}±"
                     f"{r['sim_linear_learned_sem']:.4f} {r['theory_linear_learned']:8.4f} {r['z_linear']:6.2f}")
    return _finish(args, cmp, summary, lines)


def modular_comparison(sims, conventions=("paper", "network"), plot=None) -> tuple:
    """compare_modular + its summary, and with ``plot`` the comparison figure and the diagnostics
    figure of the first simulation (``<plot stem>_diagnostics.png``)."""
    from grokphase.analysis import compare_modular, compare_modular_summary
    from grokphase.plotting import plot_modular_compare, plot_modular_sim

    cmp = compare_modular(sims, conventions)
    summary = compare_modular_summary(cmp)
    if plot:
        plot_modular_compare(cmp, plot)
        diag = Path(plot).with_name(Path(plot).stem + "_diagnostics" + Path(plot).suffix)
        plot_modular_sim(sims[0], diag)
        summary["plot"], summary["diagnostics_plot"] = str(plot), str(diag)
    return cmp, summary


def _modular_lines(summary: dict) -> list[str]:
    convs = summary["conventions"]
    head = f"{'P':>4} {'branch':>11} {'s2':>7} {'target sim':>16} " + " ".join(f"{c:>8} {'z':>6}" for c in convs) \
        + f" {'droplets':>8}"
    lines = [head]
    for r in summary["points"]:
        lines.append(f"{r['P']:4g} {r['branch']:>11} {r['s2']:7.4g} {r['sim_target_component']:8.4f}±"
                     f"{r['sim_target_component_sem']:.4f} " + " ".join(
                         f"{r[f'theory_{c}_target_component']:8.4f} {r[f'z_{c}']:6.1f}" for c in convs)
                     + f" {r['sim_droplet_fraction']:8.3f}")
    return lines


def cmd_compare_modular(args) -> int:
    from grokphase.cli import _emit
    from grokphase.io import load_dataset, save_dataset

    sims = [load_dataset(p, "sims.modular") for p in args.sim]
    convs = ("paper", "network") if args.convention == "both" else (args.convention,)
    cmp, summary = modular_comparison(sims, convs, args.plot)
    if args.out:
        save_dataset(cmp, args.out)
        summary["out"] = args.out
    _emit(args, summary, _modular_lines(summary))
    return 0


def _load_toml(path: str) -> dict:
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ParameterError(f"experiment file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"experiment file {path} is not valid TOML: {err}") from None


_SIM_KEYS = {"N", "n", "d", "sa2", "sw2", "eps", "s2", "beta", "alpha", "datasets", "inits", "seed", "steps",
             "burn_in", "lr", "record_every", "log_times", "optimizer", "weight_decay", "dtype", "ensemble_chunk",
             "memory_gb", "checkpoint_every", "name", "replica_exchange", "swap_every", "anneal", "start",
             "ordered_droplets", "ordered_theory", "ordered_approximation"}


def _experiment_devices(spec: dict, devices_k: int | None):
    """--devices K wins; else the file's ``host_devices`` (CPU host devices, ignored on a GPU)."""
    if devices_k is not None:
        return configure_devices(devices_k)
    request_host_devices(spec.get("host_devices"))
    import jax

    return configure_devices(spec.get("host_devices") if jax.default_backend() == "cpu" else None)


def _entries(path: str, sims: list, common: dict, allowed: set):
    """(name, options) of every [[sim]] table, with [common] defaults; unknown options are errors."""
    for i, entry in enumerate(sims):
        opts = {**common, **entry}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ParameterError(f"{path}: unknown option(s) {', '.join(unknown)} in [[sim]] #{i + 1}")
        yield str(opts.pop("name", f"sim{i}")), opts


def _reusable(target: Path, kind: str, matches, name: str):
    """The saved result at ``target`` if it is readable, of ``kind`` and ``matches(ds)``; else None."""
    from grokphase.io import load_dataset

    if not target.exists():
        return None
    try:
        old = load_dataset(target, kind)
    except ResultFileError:
        return None
    if not matches(old):
        return None
    print(f"[{name}] reusing {target}", file=sys.stderr)
    return old


def run_experiment(path: str, *, devices_k: int | None = None, progress: bool = True,
                   only: str | None = None) -> dict:
    """Run an experiment file: ``[[sim]]`` tables (options of ``grokphase sim teacher-student``, with
    ``[common]`` defaults), then ``[compare]`` (``plot``, ``out``).  ``host_devices = K`` shares each
    ensemble over K CPU host devices when no accelerator is present.  Outputs go to ``out_dir`` (relative
    to the current directory); a simulation whose result file exists with the same parameters is
    reused, an interrupted one resumes from its checkpoints."""
    from grokphase.analysis import compare_summary, compare_teacher_student
    from grokphase.io import load_dataset, parameters_of, save_dataset
    from grokphase.plotting import plot_result

    spec = _load_toml(path)
    model = spec.get("model", "teacher-student")
    if model not in ("teacher-student", "modular"):
        raise ParameterError(f"{path}: unknown model {model!r} (teacher-student or modular)")
    sims = spec.get("sim")
    if not isinstance(sims, list) or not sims:
        raise ParameterError(f"{path}: needs at least one [[sim]] table")
    common = spec.get("common", {})
    out_dir = Path(spec.get("out_dir", os.path.join("results", Path(path).stem)))
    if model == "modular":
        if only is not None:
            raise ParameterError("--only selects teacher-student [[sim]] entries; modular files run whole")
        return _run_modular_experiment(path, spec, sims, common, out_dir, devices_k, progress)
    if only is not None:
        sims = [e for i, e in enumerate(sims) if str(e.get("name", f"sim{i}")).startswith(only)]
        if not sims:
            raise ParameterError(f"{path}: no [[sim]] name starts with {only!r}")
        keep = {str(e["name"]) for e in sims if "name" in e}
        h = spec.get("hysteresis")
        if h is not None:
            tables = [t for t in (h if isinstance(h, list) else [h])
                      if all(t[k] in keep for k in ("cooling", "heating", "replica") if k in t)]
            spec = {**spec, "hysteresis": tables or None}
    devices = _experiment_devices(spec, devices_k)
    results, files = [], []
    for name, opts in _entries(path, sims, common, _SIM_KEYS):
        sim = _sim_from_options(opts)
        target = out_dir / f"{name}.nc"
        ds = _reusable(target, "sims.teacher_student", lambda old: parameters_of(old) == _jsonable_params(sim), name)
        if ds is None:
            opts["checkpoint_dir"] = str(out_dir / "checkpoints")
            ds = _run_sim(sim, devices=devices, opts=opts, progress=progress)
            save_dataset(ds, target)
        results.append(ds)
        files.append(str(target))
    summary: dict[str, Any] = {"simulations": files}
    cspec = spec.get("compare")
    if cspec is not None:
        theory = cspec.get("theory")
        theory = load_dataset(theory, "theory.teacher_student.sweep") if theory else None
        cmp = compare_teacher_student(results, theory)
        out = Path(cspec.get("out", out_dir / "compare.nc"))
        save_dataset(cmp, out)
        summary.update(compare_summary(cmp))
        summary["compare"] = str(out)
        if cspec.get("plot"):
            plot_result(cmp, cspec["plot"])
            summary["plot"] = str(cspec["plot"])
    if spec.get("perp_norm") is not None:
        summary["perp_norm"] = perp_norm_comparison(results, spec["perp_norm"], out_dir)
    if spec.get("hysteresis") is not None:
        names = [name for name, _ in _entries(path, sims, common, _SIM_KEYS)]
        summary["hysteresis"] = ts_hysteresis_tables(path, spec["hysteresis"], dict(zip(names, results)), out_dir)
        summary.setdefault("plots", []).extend(h["plot"] for h in summary["hysteresis"] if h.get("plot"))
    return summary


def ts_hysteresis_tables(path: str, hspec, by_name: dict, out_dir: Path) -> list[dict]:
    """The ``[hysteresis]`` table(s) of a teacher-student experiment file: ``cooling``, ``heating``,
    ``replica`` name [[sim]] entries (an annealing run supplies both branches), ``approximation``
    (exact or concentrated theory), ``out``, ``plot``.  A list of tables ([[hysteresis]]) gives one
    analysis each (e.g. one per beta)."""
    from grokphase.hysteresis import hysteresis_teacher_student
    from grokphase.io import save_dataset
    from grokphase.plotting_hysteresis import plot_hysteresis_teacher_student

    tables = hspec if isinstance(hspec, list) else [hspec]
    out = []
    for i, h in enumerate(tables):
        missing = [h[k] for k in ("cooling", "heating", "replica") if k in h and h[k] not in by_name]
        if missing:
            raise ParameterError(f"{path}: [hysteresis] names unknown [[sim]] entries: {', '.join(missing)}")
        hyst = hysteresis_teacher_student({k: by_name[h[k]] for k in ("cooling", "heating", "replica") if k in h},
                                          approximation=h.get("approximation", "exact"))
        target = Path(h.get("out", out_dir / (f"hysteresis{i}.nc" if len(tables) > 1 else "hysteresis.nc")))
        save_dataset(hyst, target)
        entry = {"out": str(target), **json.loads(hyst.attrs["summary_json"])}
        if h.get("plot"):
            plot_hysteresis_teacher_student(hyst, h["plot"])
            entry["plot"] = str(h["plot"])
        out.append(entry)
    return out


_MODULAR_KEYS = {"P", "N", "alpha", "s2", "sa2", "gamma", "parametrisation", "optimizer", "lr", "weight_decay",
                 "seeds", "seed", "steps", "burn_in", "record_every", "log_times", "dtype", "anneal", "start",
                 "readout", "name", "plot", "replica_exchange", "swap_every", "ordered_droplets", "theory_convention"}


def _run_modular_experiment(path, spec, sims, common, out_dir: Path, devices_k, progress) -> dict:
    """Modular experiment files: each [[sim]] (options of ``grokphase sim modular``) is saved to
    out_dir/NAME.nc (reused when its parameters match) and plotted to its ``plot`` file if given."""
    from grokphase.io import save_dataset
    from grokphase.plotting import plot_result

    devices = _experiment_devices(spec, devices_k)
    files, points, plots, results, names = [], [], [], [], []
    for name, opts in _entries(path, sims, common, _MODULAR_KEYS):
        names.append(name)
        plot = opts.pop("plot", None)
        target = out_dir / f"{name}.nc"
        key = json.dumps(opts, sort_keys=True, default=str)
        ds = _reusable(target, "sims.modular", lambda old: old.attrs.get("experiment_options") == key, name)
        if ds is None:
            ds, _ = run_modular_options(opts, devices=devices, progress=progress)
            ds.attrs["experiment_options"] = key
            save_dataset(ds, target)
        from grokphase.sims.modular import summary_points

        if "alpha" in ds.dims:
            for j in range(ds.sizes["alpha"]):
                points.extend(summary_points(ds.isel(alpha=j).assign_attrs(param_alpha=float(ds["alpha"].values[j]))))
        else:
            points.extend(summary_points(ds))
        files.append(str(target))
        results.append(ds)
        if plot:
            plot_result(ds, plot)
            plots.append(str(plot))
    summary = {"simulations": files, "points": points, "plots": plots}
    reps = {name: replica_summary(ds) for name, ds in zip(names, results) if ds.attrs.get("protocol") == "replica exchange"}
    if reps:
        summary["replica_exchange"] = reps
    hspec = spec.get("hysteresis")
    if hspec:
        from grokphase.plotting_hysteresis import hysteresis_modular, plot_hysteresis_modular

        by_name = dict(zip(names, results))
        keys = ("cooling", "heating", "replica", "replica_ordered")
        missing = [hspec[k] for k in keys if k in hspec and hspec[k] not in by_name]
        if missing:
            raise ParameterError(f"{path}: [hysteresis] names unknown [[sim]] entries: {', '.join(missing)}")
        hyst = hysteresis_modular({k: by_name[hspec[k]] for k in keys if k in hspec},
                                  convention=hspec.get("convention", "network"))
        out = Path(hspec.get("out", out_dir / "hysteresis.nc"))
        save_dataset(hyst, out)
        summary["hysteresis"] = {"out": str(out), **json.loads(hyst.attrs["summary_json"])}
        if hspec.get("plot"):
            plot_hysteresis_modular(hyst, hspec["plot"])
            plots.append(str(hspec["plot"]))
    cspec = spec.get("compare")
    if cspec:
        from grokphase.io import save_dataset as save

        convs = cspec.get("conventions", ["paper", "network"])
        cmp, csum = modular_comparison(results, tuple(convs), cspec.get("plot"))
        out = Path(cspec.get("out", out_dir / "compare.nc"))
        save(cmp, out)
        summary["modular_compare"] = {**csum, "out": str(out)}
        plots.extend(p for p in (csum.get("plot"), csum.get("diagnostics_plot")) if p)
    return summary


def _jsonable_params(sim) -> dict:
    import json

    from grokphase.io import _jsonable

    return json.loads(json.dumps(_jsonable(sim.parameters())))


def cmd_run(args) -> int:
    from grokphase.cli import _emit

    summary = run_experiment(args.file, devices_k=args.devices, progress=not args.no_progress, only=args.only)
    lines = [f"simulations: {', '.join(summary['simulations'])}"]
    if summary.get("plots"):
        lines.append(f"wrote {', '.join(summary['plots'])}")
    for r in (summary.get("points", []) if "compare" in summary else []):
        lines.append(f"  beta={r['beta']:.4g} s2={r['s2']:.4g}: cubic {r['sim_cubic_learned']:.4f}"
                     f"±{r['sim_cubic_learned_sem']:.4f} (theory {r['theory_cubic_learned']:.4f}, z={r['z_cubic']:.2f}); "
                     f"linear {r['sim_linear_learned']:.4f}±{r['sim_linear_learned_sem']:.4f} "
                     f"(theory {r['theory_linear_learned']:.4f}, z={r['z_linear']:.2f})")
    if "plot" in summary:
        lines.append(f"wrote {summary['plot']}")
    if "modular_compare" in summary:
        lines.extend(_modular_lines(summary["modular_compare"]))
    if "perp_norm" in summary:
        from grokphase.perp_norm import perp_norm_lines

        lines.extend(perp_norm_lines(summary["perp_norm"]))
    hyst = summary.get("hysteresis")
    if isinstance(hyst, list):                      # teacher-student: one summary per [[hysteresis]] table
        for h in hyst:
            lines.extend(ts_hysteresis_lines(h))
    elif isinstance(hyst, dict):                    # modular
        lines.extend(modular_hysteresis_lines(hyst))
    _emit(args, summary, lines)
    return 0


def modular_hysteresis_lines(h: dict) -> list[str]:
    """Text lines of a modular hysteresis summary: target component per protocol against the
    finite-P theory, the replica ladders' acceptance, and the loop window."""
    lines = [f"hysteresis P={h['P']:g} N={h['N']:g} gamma={h['gamma']:g} ({h['convention']} theory; "
             f"s1 = {h['gmfl1_s2']:.4g}) -> {h['out']}"]
    for p, e in h["protocols"].items():
        vals = ", ".join(f"{s:.4g}: {c:.3f}±{se:.3f} (th {t:.3f})" for s, c, se, t in
                         zip(e["s2"], e["target_component"], e["target_component_sem"], e["theory_target_component"]))
        lines.append(f"  {p:15s} {vals}; rms distance {e['rms_distance']:.4f}")
        if "swap_acceptance" in e:
            lines.append(f"  {'':15s} swap acceptance {min(e['swap_acceptance']):.3f}-{max(e['swap_acceptance']):.3f}; "
                         f"{e['round_trips']} round trips; warning: {e['ladder_warning']}")
    sh = h.get("superheating")
    if sh:
        pts = ", ".join(f"{r:.3f} s1: {c:.4f} (eq {e:.4f}, bound {'-' if b is None else f'{b:.4f}'})"
                        for r, c, e, b in zip(sh["s2_over_s1"], sh["heating"], sh["equilibrium"], sh["marginal_bound"]))
        lines.append(f"  superheating: heating above s1 {pts}; ordered (> 3 SE above equilibrium"
                     f"{' and cooling' if 'cooling' in sh else ''}) up to "
                     f"{'-' if sh['max_ordered_s2_over_s1'] is None else format(sh['max_ordered_s2_over_s1'], '.3f')} s1; "
                     f"within the bound: {sh['within_bound']}")
    if h.get("loop"):
        lines.append(f"  loop window (heating - cooling > 3 SE): s2 {h['loop']['window_s2']}")
    return lines


def ts_hysteresis_lines(h: dict) -> list[str]:
    """Text lines of one teacher-student hysteresis summary."""
    s2c = h["s2_c_limit"]
    lines = [f"hysteresis N={h['N']:g} d={h['d']:g} n={h['n']:g} ({h['approximation']} theory; limit s2_c "
             f"{s2c['exact']:.4g} exact, {s2c['concentrated']:.4g} concentrated) -> {h['out']}"]
    th = dict(zip(h["theory"]["s2"], h["theory"]["cubic_learned"]))
    for p, e in h["protocols"].items():
        vals = ", ".join(f"{s:.4g}: {c:.4f}±{se:.4f} (th {th[s]:.4f})"
                         for s, c, se in zip(e["s2"], e["cubic_learned"], e["cubic_learned_sem"]))
        lines.append(f"  {p:8s} cubic {vals}; rms distance {e['rms_distance']:.4f}")
        if p == "replica":
            lines.append(f"           swap acceptance {', '.join(f'{a:.3f}' for a in e['swap_acceptance'])}; "
                         f"{e['round_trips']} round trips; warning: {e['ladder_warning']}")
    if "loop" in h:
        lines.append(f"  loop (heating - cooling > {h['loop']['threshold_z']:g} SE): {h['loop']['loop_seen']} at "
                     f"s2 {h['loop']['s2_open']}")
    return lines


def perp_norm_comparison(results, pspec: dict, out_dir: Path) -> dict:
    """The ``[perp_norm]`` table of an experiment file (``out``, ``plot``): compare_perp_norm of all
    its simulations, saved and summarised."""
    from grokphase.io import save_dataset
    from grokphase.perp_norm import compare_perp_norm, perp_norm_summary, plot_perp_norm

    cmp = compare_perp_norm(results)
    out = Path(pspec.get("out", out_dir / "perp_norm.nc"))
    save_dataset(cmp, out)
    summary = {**perp_norm_summary(cmp), "out": str(out)}
    if pspec.get("plot"):
        plot_perp_norm(cmp, pspec["plot"])
        summary["plot"] = str(pspec["plot"])
    return summary


def cmd_compare_perp_norm(args) -> int:
    from grokphase.cli import _emit
    from grokphase.io import load_dataset, save_dataset
    from grokphase.perp_norm import compare_perp_norm, perp_norm_lines, perp_norm_summary, plot_perp_norm

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
