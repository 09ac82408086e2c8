"""``grokphase diagnose RESULT.nc`` (R-hat, ESS, tau_int, MCSE and the MSER-5 equilibration estimate of every
observable, s2 point and data set of a simulation result) and ``grokphase export RESULT.nc --arviz OUT.nc``
(its trajectories as an ArviZ InferenceData), :mod:`grokphase.analysis.diagnostics` (issue 20)."""

from __future__ import annotations

import math

from grokphase.cli.common import _emit, _positive
from grokphase.cli.preflight import check_file
from grokphase.cli.sims import _int_ge


def add_parsers(groups) -> None:
    from grokphase.analysis.diagnostics import DEFAULT_MIN_ESS, DEFAULT_RHAT
    p = groups.add_parser(
        "diagnose", help="R-hat, ESS, tau_int, MCSE and equilibration of a simulation result's chains",
        description="Convergence diagnostics of every observable trajectory, s2 point and data set of a "
                    "simulation result (records after its burn-in): rank-normalised split-R-hat across the inits "
                    "of each data set (never across data sets: each is its own posterior), bulk and tail ESS, "
                    "the integrated autocorrelation time, the Monte Carlo standard error and the MSER-5 "
                    "equilibration estimate next to the burn-in used.  Points over --rhat or under --min-ess "
                    "are flagged with the reason.")
    p.add_argument("result", metavar="RESULT.nc", help="a teacher-student or modular Langevin simulation result")
    p.add_argument("--rhat", type=_rhat, default=DEFAULT_RHAT,
                   help=f"flag a point whose R-hat exceeds this (default {DEFAULT_RHAT:g})")
    p.add_argument("--min-ess", type=_positive, default=DEFAULT_MIN_ESS,
                   help=f"flag a point whose bulk or tail ESS is below this (default {DEFAULT_MIN_ESS:g})")
    p.add_argument("--burn-in", type=_steps, default=None, metavar="STEPS",
                   help="discard the records at steps <= STEPS (default: the run's own burn-in)")
    p.add_argument("--all", action="store_true", help="list every point in the text summary, not only flagged ones")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="trace and rank plots of the flagged points (of the first observable when none is)")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")
    p.set_defaults(func=cmd_diagnose)

    p = groups.add_parser(
        "export", help="a simulation result's trajectories as an ArviZ InferenceData (netCDF)",
        description="Write the records after the burn-in as an arviz.InferenceData: one posterior variable per "
                    "observable, s2 and data set (<observable>__s2_<s2>__dataset_<k>), chains = the inits of "
                    "that data set, so az.summary and az.plot_trace work on a grokphase run without pooling "
                    "data sets.")
    p.add_argument("result", metavar="RESULT.nc", help="a teacher-student or modular Langevin simulation result")
    p.add_argument("--arviz", required=True, metavar="OUT.nc", help="the InferenceData file to write (netCDF)")
    p.add_argument("--burn-in", type=_steps, default=None, metavar="STEPS",
                   help="discard the records at steps <= STEPS (default: the run's own burn-in)")
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary on stdout")
    p.set_defaults(func=cmd_export)


def _rhat(text: str) -> float:
    import argparse
    value = _positive(text)
    if value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number > 1, got {text!r}")
    return value


_steps = _int_ge(0)                 # burn-in steps: an integer >= 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _where(pt: dict) -> str:
    extra = "".join(f" {k} {pt[k]}" for k in ("alpha", "branch", "start", "window") if k in pt)
    return f"s2 {pt['s2']:<8g} data set {pt['dataset']}{extra}"


def _lines(summary: dict, show_all: bool) -> list[str]:
    pts = summary["points"]
    flagged = [p for p in pts if p["flagged"]]
    lines = [f"{summary['result']}: {len(pts)} points ({summary['observables']} observables), {summary['chains']} "
             f"chains ({summary['chain_dim']}) per data set, {summary['draws']} records each after a burn-in of "
             f"{summary['burn_in']} steps; thresholds R-hat <= {summary['rhat_max']:g}, bulk and tail ESS >= "
             f"{summary['min_ess']:g}",
             f"{len(flagged)} flagged" + (":" if flagged else "")]
    header = (f"  {'observable':<24} {'where':<28} {'R-hat':>7} {'ESS bulk':>8} {'ESS tail':>8} {'tau_int':>8} "
              f"{'mean':>10} {'MCSE':>9} {'MSER-5':>7}")
    shown = pts if show_all else flagged
    if shown:
        lines.append(header)
    for p in shown:
        eq = _fmt(p["equilibration"], ".0f") + ("*" if p["burn_in_short"] else "")
        lines.append(f"  {p['observable']:<24} {_where(p):<28} {_fmt(p['rhat'], '7.3f')} {_fmt(p['ess_bulk'], '8.0f')} "
                     f"{_fmt(p['ess_tail'], '8.0f')} {_fmt(p['tau_int'], '8.3g')} {_fmt(p['mean'], '10.4g')} "
                     f"{_fmt(p['mcse'], '9.2g')} {eq:>7}" + (f"  {p['reason']}" if p["flagged"] else ""))
    short = sum(p["burn_in_short"] for p in pts)
    if short:
        lines.append(f"note: at {short} point(s) the MSER-5 equilibration estimate exceeds the burn-in of "
                     f"{summary['burn_in']} steps (marked * in the table)")
    if not show_all and not flagged:
        lines.append("every point meets the thresholds (--all lists them)")
    return lines


def cmd_diagnose(args) -> int:
    from grokphase.analysis.diagnostics import diagnose, diagnostics_points
    from grokphase.io import load_dataset
    ds = load_dataset(args.result)
    diag = diagnose(ds, burn_in=args.burn_in, rhat_max=args.rhat, min_ess=args.min_ess)
    summary = {"result": args.result, "points": diagnostics_points(diag), "burn_in": int(diag.attrs["burn_in"]),
               "record_spacing": int(diag.attrs["record_spacing"]), "chains": int(diag.attrs["chains"]),
               "chain_dim": str(diag.attrs["chain_dim"]), "draws": int(diag.attrs["draws"]),
               "observables": int(diag.sizes["observable"]), "rhat_max": float(args.rhat),
               "min_ess": float(args.min_ess)}
    summary["flagged"] = sum(p["flagged"] for p in summary["points"])
    if args.plot:
        from grokphase.plotting.diagnostics import plot_diagnostics
        plot_diagnostics(ds, diag, args.plot)
        summary["plot"] = args.plot
    _emit(args, summary, _lines(summary, args.all))
    return 0


def cmd_export(args) -> int:
    from grokphase.analysis.diagnostics import to_inference_data, write_inference_data
    from grokphase.io import load_dataset
    check_file(args.arviz, "--arviz", {"nc"}, "netCDF")
    ds = load_dataset(args.result)
    idata = to_inference_data(ds, burn_in=args.burn_in, source=args.result)
    write_inference_data(idata, args.arviz)
    post = idata.posterior
    summary = {"arviz": args.arviz, "variables": len(post.data_vars), "chains": int(post.sizes["chain"]),
               "draws": int(post.sizes["draw"]), "burn_in": int(post.attrs["burn_in"])}
    _emit(args, summary, [f"wrote {args.arviz}: {summary['variables']} posterior variables (observable x s2 x data "
                          f"set), {summary['chains']} chains x {summary['draws']} draws after a burn-in of "
                          f"{summary['burn_in']} steps"])
    return 0
