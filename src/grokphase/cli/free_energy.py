"""``grokphase free-energy RESULT.nc``: free-energy profiles F(m), the coexistence point, barrier and latent
heat of an umbrella-sampling result by MBAR (:mod:`grokphase.analysis.free_energy`, THEORY.md §7)."""

from __future__ import annotations



from grokphase.cli.common import _emit, _positive
from grokphase.cli.sims import _int_ge
from grokphase.cli.text import free_energy_lines
from grokphase.io import load_dataset, save_dataset


def add_parser(groups) -> None:
    from grokphase.analysis.free_energy import DEFAULT_BINS, DEFAULT_BOOTSTRAP
    p = groups.add_parser(
        "free-energy", help="F(m), coexistence s2, barrier and latent heat of an umbrella-sampling result (MBAR)",
        description="MBAR over every simulated s2 x window (one MBAR per system, quenched average over systems): "
                    "the free energy F(m) = -log p(m) of the order parameter at each --s2, the s2 where the two "
                    "basins' free energies are equal, the barrier there and the latent heat, with standard errors.")
    p.add_argument("result", metavar="RESULT.nc", help="an umbrella-sampling simulation result")
    p.add_argument("--s2", type=_positive, nargs="+", default=None, metavar="S2",
                   help="target s2 values of the profiles (default: the simulated ones); each must be reachable "
                        "by reweighting (effective sample size rule)")
    p.add_argument("--bins", type=_int_ge(3), default=DEFAULT_BINS,
                   help=f"bins of m over the sampled range (default {DEFAULT_BINS})")
    p.add_argument("--bootstrap", type=_int_ge(10), default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap replicates per system for the standard errors (default {DEFAULT_BOOTSTRAP})")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--coordinate", metavar="NAME", default=None,
                   help="with several umbrella coordinates: the one F is drawn along (the marginal of the others; "
                        "default the run's first, its primary); the start check covers every coordinate")
    p.add_argument("--theory", action="store_true",
                   help="also the mean-field theory's F(m) at every target s2 on the profile's m range (modular: "
                        "finite-P theory in the simulated network's normalisation; teacher-student: the paper's "
                        "erf model, exact finite-d theory at the simulated sizes): JSON theory_profiles, dashed "
                        "lines in --plot")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="draw F(m) at every target s2")
    p.add_argument("--out", metavar="PROFILE.nc", default=None, help="save the profiles and results (netCDF)")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")
    p.set_defaults(func=cmd_free_energy)


def cmd_free_energy(args) -> int:
    from grokphase.analysis.free_energy import free_energy_report
    ds = load_dataset(args.result)
    summary, out, theory = free_energy_report(ds, s2=args.s2, bins=args.bins, n_bootstrap=args.bootstrap,
                                              seed=args.seed, coordinate=args.coordinate, theory=args.theory,
                                              source=args.result)
    if args.out:
        save_dataset(out, args.out)
        summary["out"] = args.out
    if args.plot:
        from grokphase.plotting.free_energy import plot_free_energy
        plot_free_energy(out, args.plot, theory=theory)
        summary["plot"] = args.plot
    _emit(args, summary, free_energy_lines(summary))
    return 0
