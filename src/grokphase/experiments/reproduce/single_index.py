"""Figure recipe of the single-index family (issue 18): ``single-index``, the learned fraction of every
target degree vs sigma^2 for several activation x target pairs, the exact finite-d theory at the
simulated sizes against Langevin runs (plain n and the equivalent-kernel control n -> 4n)."""

from __future__ import annotations

from grokphase.analysis.single_index import compare_family
from grokphase.experiments.reproduce.cache import Context, Step, simulations


def single_index_data(ctx: Context) -> Step:
    cfg = ctx.config("single-index")
    path, spec = ctx.sims_file(cfg)
    sims = simulations(ctx, path, spec, "teacher-student")
    points = int(cfg.get("curve_points", 41))
    return ctx.step("single_index", {"scale": ctx.scale, "curve_points": points},
                    lambda: compare_family([s.ds for s in sims], curve_points=points), deps=sims)
