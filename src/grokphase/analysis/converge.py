r"""Run until converged (issue 20): extend a simulation block by block until every point meets the R̂ and
ESS targets of :mod:`grokphase.analysis.diagnostics`, or a step limit.

**Why extending is exact.**  The noise of step t of a chain is ``fold_in(noise_key, t)`` and the burn-in
is fixed, so the state, the records and the after-burn-in statistics of an S-step run are those of any
longer run at step S (with linear record times and S a multiple of the record spacing, the S-step
records are the first records of the longer run).  An independent run with linear record times
therefore leaves its total steps out of its checkpoint hash (:func:`grokphase.sims.protocols.
extendable_config`), and a run of S + B steps resumes the S-step run's final checkpoint and adds B
steps: the result of the last block is bit for bit the result of one run of that length.

**The loop** (:func:`until_converged`).  Run ``steps``; diagnose the trajectories after the burn-in
(split-R̂ across the inits of each data set, bulk and tail ESS: :func:`~grokphase.analysis.diagnostics.
diagnose`); while some (observable, σ², data set) is flagged (R̂ > ``rhat`` or ESS < ``min_ess``) and
the run is shorter than ``max_steps``, run ``block_steps`` more (the last block cut at ``max_steps``).
The burn-in is the first block's throughout (a default of steps / 4 is pinned at the first block's
value), so the blocks differ only in length.  The result is the last block's Dataset with its
diagnostics attached (at the targets' thresholds) and the attributes

* ``stopping_rule``: ``"converged"`` (no point flagged) or ``"max_steps"`` (the limit reached with
  points still flagged);
* ``steps_run``: the steps of the result (= ``param_steps``);
* ``until_converged_blocks`` (blocks of the schedule steps, steps + block, ... run up to
  ``steps_run``), ``until_converged_steps`` (the first block), ``until_converged_block_steps``,
  ``until_converged_max_steps``, ``until_converged_rhat``, ``until_converged_min_ess``;
* ``until_converged_history``: JSON list of ``{"steps", "flagged"}`` per diagnosed block.

A re-run of an interrupted loop continues from the furthest checkpoint: a checkpoint past the first
block (:class:`~grokphase.sims.checkpoint.CheckpointAheadError`) moves the loop to the first block end
at or after it.  Without a checkpoint folder the loop uses a temporary one, removed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import tempfile
from typing import Callable

import numpy as np
import xarray as xr

from grokphase.analysis.diagnostics import DEFAULT_MIN_ESS, DEFAULT_RHAT, attach_diagnostics, diagnose
from grokphase.errors import ParameterError, ResultFileError
from grokphase.sims.checkpoint import CheckpointAheadError

#: the stopping rules a result can report
STOPPING_RULES = ("converged", "max_steps")
#: max_steps when none is given: this many times the first block
DEFAULT_MAX_FACTOR = 10


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Targets:
    """The schedule and targets of a run until converged.

    steps: the first block (total steps of the first run).  record_every: the record spacing of the
    run (every block end must be a record time).  block_steps: steps added per block (default
    ``steps``).  max_steps: the most steps (default ``DEFAULT_MAX_FACTOR`` x ``steps``).  rhat: the
    largest split-R̂ accepted (> 1).  min_ess: the smallest bulk and tail ESS accepted (> 0, records
    over the chains of a data set)."""

    steps: int
    record_every: int
    block_steps: int | None = None
    max_steps: int | None = None
    rhat: float = DEFAULT_RHAT
    min_ess: float = DEFAULT_MIN_ESS

    def __post_init__(self):
        for name in ("steps", "record_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        block = self.steps if self.block_steps is None else self.block_steps
        if not _is_int(block) or block < 1:
            raise ParameterError(f"block_steps must be a positive integer (steps added per block), got {block!r}")
        top = DEFAULT_MAX_FACTOR * self.steps if self.max_steps is None else self.max_steps
        if not _is_int(top) or top < self.steps:
            raise ParameterError(f"max_steps must be an integer >= steps ({self.steps}), got {top!r}")
        for name, value in (("steps", self.steps), ("block_steps", block), ("max_steps", top)):
            if value % self.record_every:
                raise ParameterError(f"{name} ({value}) must be a multiple of record_every ({self.record_every}): every "
                                     "block must end on a record time, so that a shorter run's records are the first "
                                     "records of a longer one")
        for name, value, ok, allowed in (("rhat", self.rhat, lambda v: v > 1.0, "> 1"),
                                         ("min_ess", self.min_ess, lambda v: v > 0.0, "> 0")):
            if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
                    or not ok(value)):
                raise ParameterError(f"{name} must be a finite number {allowed}, got {value!r}")
        object.__setattr__(self, "block_steps", int(block))
        object.__setattr__(self, "max_steps", int(top))
        object.__setattr__(self, "rhat", float(self.rhat))
        object.__setattr__(self, "min_ess", float(self.min_ess))

    def schedule(self) -> list[int]:
        """The block ends: steps, steps + block_steps, ..., the last one cut at max_steps."""
        ends = list(range(self.steps, self.max_steps + 1, self.block_steps))
        if ends[-1] != self.max_steps:
            ends.append(self.max_steps)
        return ends

    def parameters(self) -> dict:
        return dataclasses.asdict(self)


#: run(steps, burn_in, checkpoint_dir) -> the Dataset of one run of ``steps`` steps (burn_in None: the
#: run's default) that checkpoints in ``checkpoint_dir`` and resumes from it
RunBlock = Callable[[int, "int | None", str], xr.Dataset]


@contextlib.contextmanager
def _folder(checkpoint_dir: str | None):
    if checkpoint_dir is not None:
        yield str(checkpoint_dir)
        return
    with tempfile.TemporaryDirectory(prefix="grokphase-until-converged-") as tmp:
        yield tmp


def until_converged(run: RunBlock, targets: Targets, *, checkpoint_dir: str | None = None,
                    log: Callable[[str], None] | None = None) -> xr.Dataset:
    """Run by blocks until no point is flagged at ``targets`` or ``targets.max_steps`` is reached
    (module docstring).  ``run(steps, burn_in, checkpoint_dir)`` runs the simulation for ``steps``
    steps with checkpoints in ``checkpoint_dir`` (it must resume a shorter run's checkpoints there);
    ``burn_in`` is None for the first block (the run's default) and the first block's burn-in after.
    ``checkpoint_dir`` None: a temporary folder.  ``log``: one line per block (progress)."""
    ends = targets.schedule()
    history: list[dict] = []
    burn_in: int | None = None
    with _folder(checkpoint_dir) as folder:
        k = 0
        while True:
            steps = ends[k]
            try:
                ds = run(steps, burn_in, folder)
            except CheckpointAheadError as err:
                # an earlier loop got further: continue at the first block end at or after its checkpoint
                later = [i for i, e in enumerate(ends) if e >= err.step]
                if not later or later[0] <= k:
                    raise
                k = later[0]
                if burn_in is None and err.config.get("burn_in") is not None:
                    burn_in = int(err.config["burn_in"])
                if log is not None:
                    log(f"until-converged: a checkpoint is at step {err.step}; continuing at {ends[k]} steps")
                continue
            if int(ds.attrs.get("param_steps", steps)) != steps:
                raise ParameterError(f"until_converged: the run asked for {steps} steps returned "
                                     f"{ds.attrs.get('param_steps')!r}")
            if burn_in is None:
                burn_in = int(ds.attrs.get("param_burn_in", 0))
            try:
                diag = diagnose(ds, rhat_max=targets.rhat, min_ess=targets.min_ess)
            except ResultFileError as exc:
                raise ParameterError(f"until_converged cannot diagnose the run: {exc}") from None
            flagged = int(np.sum(diag["flagged"].values))
            history.append({"steps": steps, "flagged": flagged})
            last = k == len(ends) - 1
            if log is not None:
                nxt = "converged" if not flagged else ("stopping at max_steps" if last else f"extending to {ends[k + 1]}")
                log(f"until-converged: {steps} steps, {flagged} of {diag['flagged'].size} (observable, s2, data set) "
                    f"flagged at R-hat > {targets.rhat:g} or ESS < {targets.min_ess:g}; {nxt}")
            if not flagged or last:
                break
            k += 1
    out = attach_diagnostics(ds, diag)
    out.attrs.update(stopping_rule="converged" if not flagged else "max_steps", steps_run=int(steps),
                     until_converged_blocks=k + 1, until_converged_steps=targets.steps,
                     until_converged_block_steps=targets.block_steps, until_converged_max_steps=targets.max_steps,
                     until_converged_rhat=targets.rhat, until_converged_min_ess=targets.min_ess,
                     until_converged_history=json.dumps(history))
    return out


def diagnostic_thresholds(ds: xr.Dataset) -> dict:
    """``rhat_max`` and ``min_ess`` for :func:`~grokphase.analysis.diagnostics.diagnose` of ``ds``: the
    targets of a run until converged, else the defaults."""
    return {"rhat_max": float(ds.attrs.get("until_converged_rhat", DEFAULT_RHAT)),
            "min_ess": float(ds.attrs.get("until_converged_min_ess", DEFAULT_MIN_ESS))}


def convergence_summary(ds: xr.Dataset) -> dict:
    """The ``until_converged`` entry of a ``--json`` summary: stopping rule, steps run, blocks, the
    targets and the history of a result of :func:`until_converged`."""
    if "stopping_rule" not in ds.attrs:
        raise ResultFileError("the result was not run until converged (no stopping_rule attribute)")
    a = ds.attrs
    return {"stopping_rule": str(a["stopping_rule"]), "steps_run": int(a["steps_run"]),
            "blocks": int(a["until_converged_blocks"]), "steps": int(a["until_converged_steps"]),
            "block_steps": int(a["until_converged_block_steps"]), "max_steps": int(a["until_converged_max_steps"]),
            "rhat": float(a["until_converged_rhat"]), "min_ess": float(a["until_converged_min_ess"]),
            "flagged": int(a["diagnostics_flagged"]), "history": json.loads(str(a["until_converged_history"]))}


def convergence_line(summary: dict) -> str:
    """One line of text on a :func:`convergence_summary`."""
    why = ("every point meets the targets" if summary["stopping_rule"] == "converged"
           else f"max_steps reached with {summary['flagged']} point(s) still flagged")
    return (f"  until converged: stopped by {summary['stopping_rule']} ({why}) after {summary['steps_run']} steps, "
            f"{summary['blocks']} block(s) (R-hat <= {summary['rhat']:g}, ESS >= {summary['min_ess']:g})")
