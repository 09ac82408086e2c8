"""``grokphase reproduce NAME --scale tiny|quick|paper``: the paper's figures from the experiment
definitions (:mod:`grokphase.experiments.reproduce`)."""

from __future__ import annotations

from grokphase.cli.common import _emit
from grokphase.cli.common import add_device_options
from grokphase.experiments.devices import request_host_devices
from grokphase.experiments.reproduce import FIGURES, SCALES, reproduce


def add_parser(groups) -> None:

    p = groups.add_parser(
        "reproduce", help="reproduce the paper's figures from theory/reproduce.toml and sims/ (cached)",
        description="Runs the theory and simulations a figure needs (each step cached by a hash of its "
                    "configuration under --cache-dir: a second call recomputes nothing, a changed parameter "
                    "only what depends on it) and writes NAME_SCALE.png and .pdf to --out-dir.")
    p.add_argument("names", nargs="+", metavar="NAME", choices=(*FIGURES, "all"),
                   help=f"one or more of {', '.join(FIGURES)}, or all")
    p.add_argument("--scale", choices=SCALES, default="quick",
                   help="quick: a 2-core CPU, minutes per figure (default); paper: the paper's sizes (GPU); "
                        "tiny: seconds (tests)")
    p.add_argument("--out-dir", default="figures", help="where the figures go (default figures/)")
    p.add_argument("--cache-dir", default=None, help="step cache (default results/reproduce/SCALE)")
    p.add_argument("--defs", default=None, metavar="DIR",
                   help="folder holding theory/reproduce.toml and sims/ (default: the checkout you are in, else the "
                        "definitions installed with grokphase)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_options(p, devices=False)
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure's numbers")
    p.set_defaults(func=cmd_reproduce)


def _lines(name: str, s: dict) -> list[str]:
    out = [f"{name} ({s['scale']}): {', '.join(s['figures'])}  [{s['seconds']:.1f} s]"]
    if name == "fig1":
        for model in ("ts", "modular"):
            out.append(f"  {model}: " + ", ".join(f"{k} {v}" for k, v in s[model]["phase_counts"].items()))
    elif name == "fig2":
        vs = s.get("z_against", "theory")
        for r in s.get("points", []):
            out.append(f"  beta={r['beta']:.4g} s2={r['s2']:.4g}: cubic {r['sim_cubic_learned']:.4f}"
                       f"±{r['sim_cubic_learned_sem']:.4f} (theory {r['theory_cubic_learned']:.4f}, "
                       f"z={r['z_cubic']:.2f} vs {vs})")
    elif name == "fig3":
        out.append(f"  GMFL-I below s2 = {s['gmfl1_s2']:.4f}, GMFL-II below {s['gmfl2_s2']:.4f}")
    elif name in ("fig4", "fig5", "fig6"):
        for w in s.get("widths", []):
            out.append("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in w.items()))
    else:
        for k, v in s.items():
            if k not in ("name", "scale", "figures", "seconds", "data") and not isinstance(v, (dict, list)):
                out.append(f"  {k}: {v}")
    return out


def cmd_reproduce(args) -> int:

    request_host_devices(2)    # before JAX starts; runs use what each experiment file asks for
    out = reproduce(args.names, scale=args.scale, out_dir=args.out_dir, cache_dir=args.cache_dir, defs=args.defs,
                    progress=not args.no_progress)
    lines = [line for name, s in out.items() for line in _lines(name, s)]
    _emit(args, out, lines)
    return 0
