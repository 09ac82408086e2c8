"""Text reports of the commands' summaries (``--json`` prints the summaries themselves)."""

from __future__ import annotations

import math


def star(row: dict, key: str) -> str:
    """'*' after a z-score whose chains fail the convergence diagnostics (the row's ``unreliable``)."""
    return "*" if key in row.get("unreliable", {}) else " "


def diagnostics_footer(points: list[dict]) -> list[str]:
    """The note under a comparison table: what a '*' means, and files that could not be diagnosed."""
    out = []
    if any(r.get("unreliable") for r in points):
        out.append("* the chains of this point fail the convergence diagnostics (R-hat > 1.01 or ESS < 400): "
                   "the z-score is unreliable ('unreliable' in --json; grokphase diagnose FILE for the details)")
    for note in dict.fromkeys(r["diagnostics"] for r in points if r.get("diagnostics")):
        out.append(f"note: {note}")
    return out


def _modular_lines(summary: dict) -> list[str]:
    convs = summary["conventions"]
    head = f"{'P':>4} {'branch':>11} {'s2':>7} {'target sim':>16} " + " ".join(f"{c:>8} {'z':>6}" for c in convs) \
        + f" {'droplets':>8}"
    lines = ["z = (sim - theory) / SEM vs the finite-P theory at the simulated (N, P, sa2, gamma), in the "
             + " and the ".join(f"{c} normalisation (columns '{c}', 'z')" for c in convs), head]
    for r in summary["points"]:
        lines.append(f"{r['P']:4g} {r['branch']:>11} {r['s2']:7.4g} {r['sim_target_component']:8.4f}±"
                     f"{r['sim_target_component_sem']:.4f} " + " ".join(
                         f"{r[f'theory_{c}_target_component']:8.4f} {r[f'z_{c}']:6.1f}{star(r, 'target_component')}"
                         for c in convs)
                     + f" {r['sim_droplet_fraction']:8.3f}")
    return lines + diagnostics_footer(summary["points"])


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


def _fmt_sem(value: float, sem: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "none"
    return f"{value:.{digits}g} ± {sem:.2g}" if sem is not None and math.isfinite(sem) else f"{value:.{digits}g} ± ?"


def free_energy_lines(d: dict) -> list[str]:
    """The text summary of a free-energy analysis (``grokphase free-energy`` and the [free_energy] table)."""
    lines = [f"free energy along {d['order_parameter']} ({d['n_systems']} system(s); SE: {d['sem_method']}); "
             f"smallest neighbour overlap {d['overlap_min']:.3g}"]
    for p in d["profiles"]:
        wells = (f"2 wells at m = {p['minima_m'][0]:.4g}, {p['minima_m'][1]:.4g} (saddle {p['saddle_m']:.4g}), "
                 f"F_ordered - F_disordered = {_fmt_sem(p['delta_F'], p['delta_F_sem'], 3)}"
                 if p["wells"] == 2 else "1 well")
        lines.append(f"  s2 = {p['s2']:.5g}: {wells}; <L> = {_fmt_sem(p['L_mean'], p['L_mean_sem'], 5)}; "
                     f"ESS {p['ess']:.0f}")
    if d["coexistence_s2"] is not None and math.isfinite(d["coexistence_s2"]):
        lines.append(f"coexistence s2 = {_fmt_sem(d['coexistence_s2'], d['coexistence_s2_sem'], 5)}, barrier "
                     f"{_fmt_sem(d['barrier'], d['barrier_sem'], 3)} (above the deeper minimum), latent heat "
                     f"<L>_ordered - <L>_disordered = {_fmt_sem(d['latent_heat'], d['latent_heat_sem'], 4)}")
    if d.get("reason"):
        lines.append(f"note: {d['reason']}")
    if "start_agreement" in d:
        sa = d["start_agreement"]
        lines.append(f"starts {' vs '.join(sa['starts'])} ({sa['coordinate']}): {sa['windows_agree']} of "
                     f"{sa['windows']} window(s) agree, {len(sa['disagree'])} disagreement(s) with |z| > "
                     f"{sa['z_max']:g}"
                     + (f" (max |z| = {sa['max_abs_z']:.2f})" if sa["max_abs_z"] is not None else ""))
    return lines
