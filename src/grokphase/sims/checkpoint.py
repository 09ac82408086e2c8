"""Checkpoints of the ensemble engine: atomic ``.npz`` files per chunk in a folder named by the hash
of the run's configuration, so that re-running the same configuration resumes it and a different one
never reads its files.

**Extending a run.**  A configuration may leave the total number of steps out of its hash (the
independent protocol with linear record times does, :class:`grokphase.sims.protocols.SimModel`):
the noise of step t is ``fold_in(noise_key, t)`` and the burn-in is fixed, so the state, records and
accumulated statistics of an S-step run are exactly those of a longer run at step S.  A checkpoint
then holds its own step (``step``, ``n_records``), and :func:`check_resumable` accepts it for a run
of T >= step steps whose record times continue its records (a longer run extends it), and refuses it
with :class:`CheckpointAheadError` when it is past T.

**Several processes** (``--distributed``).  Every process of a multi-process run writes its own
file per chunk (``chunkNNNNN.p<i>of<n>.npz``, holding the whole chunk's state: the driver gathers
it) and resumes from it, so no shared file system is needed for checkpoints; a rerun with another
number of processes is refused with one line rather than mixing layouts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from grokphase.errors import ParameterError, ResultFileError


class CheckpointAheadError(ParameterError):
    """A checkpoint that has run further than the run asking for it (``step`` > its total steps):
    a shorter run cannot resume it.  ``step``: the checkpoint's step; ``config``: its configuration
    (``config.json`` of its folder)."""

    def __init__(self, message: str, step: int, config: dict):
        super().__init__(message)
        self.step = int(step)
        self.config = dict(config)


def _save_npz_atomic(path: str, arrays: dict) -> None:
    tmp = f"{path}.tmp-{jax.process_index()}-{os.getpid()}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _tree_to_arrays(prefix: str, tree) -> dict:
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"{prefix}{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def _arrays_to_tree(prefix: str, arrays, like):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    try:
        new = [np.asarray(arrays[f"{prefix}{i}"]) for i in range(len(leaves))]
    except KeyError as err:
        raise ResultFileError(f"checkpoint is missing array {err}") from None
    for old, arr in zip(leaves, new):
        if tuple(np.shape(old)) != arr.shape:
            raise ResultFileError(f"checkpoint array shape {arr.shape} does not match the run's {np.shape(old)}")
    return jax.tree_util.tree_unflatten(treedef, new)


class Checkpointer:
    """Atomic per-chunk checkpoints in ``directory/<config hash>/``.  Re-running the same
    configuration resumes from the last checkpoint; a different configuration uses another folder."""

    def __init__(self, directory: str, config: dict, every_seconds: float = 60.0):
        blob = json.dumps(config, sort_keys=True, default=str).encode()
        self.key = hashlib.sha256(blob).hexdigest()[:16]
        self.dir = os.path.join(directory, self.key)
        os.makedirs(self.dir, exist_ok=True)
        cfg_path = os.path.join(self.dir, "config.json")
        if not os.path.exists(cfg_path):
            tmp = cfg_path + f".tmp-{jax.process_index()}-{os.getpid()}"
            with open(tmp, "w") as fh:
                json.dump(config, fh, sort_keys=True, indent=1, default=str)
            os.replace(tmp, cfg_path)
        self.every_seconds = every_seconds
        self.config = dict(config)

    def path(self, chunk: int) -> str:
        """This process's file of ``chunk``: ``chunkNNNNN.npz``, or ``chunkNNNNN.p<i>of<n>.npz`` for
        process i of a run of n > 1 processes (each writes its own; module docstring)."""
        n = jax.process_count()
        suffix = f".p{jax.process_index()}of{n}" if n > 1 else ""
        return os.path.join(self.dir, f"chunk{chunk:05d}{suffix}.npz")

    def _check_layout(self, chunk: int) -> None:
        """Refuse, with one line, checkpoints of ``chunk`` written by a run of another process count."""
        pattern = re.compile(rf"chunk{chunk:05d}(?:\.p(\d+)of(\d+))?\.npz(?:\.prev)?$")
        counts = sorted({int(m.group(2) or 1) for m in map(pattern.match, os.listdir(self.dir)) if m})
        if counts:
            n = jax.process_count()
            raise ParameterError(
                f"checkpoints in {self.dir} were written by a run of {' or '.join(map(str, counts))} process(es), "
                f"this run has {n}: rerun with the same number of processes to resume, or delete the folder")

    def _read(self, path: str):
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a truncated or foreign file
            raise ResultFileError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                                  "delete it to restart this chunk") from None

    def load(self, chunk: int):
        """The saved arrays of ``chunk`` (None: start it afresh).  Several processes agree on the
        step to resume from: each holds its last and previous checkpoint, and all take the latest
        step that every process holds (a process killed between two processes' saves leaves them one
        checkpoint apart).  A collective: every process must call it."""
        path = self.path(chunk)
        if jax.process_count() == 1:
            if not os.path.exists(path):
                self._check_layout(chunk)
                return None
            return self._read(path)
        if not os.path.exists(path) and not os.path.exists(path + ".prev"):
            self._check_layout(chunk)
        held = {}
        for p in (path, path + ".prev"):
            if os.path.exists(p):
                saved = self._read(p)
                held[int(saved["step"])] = saved
        steps = sorted(held) + [-1] * (2 - len(held))          # -1: no checkpoint (start afresh)
        every = collective(lambda: multihost_utils.process_allgather(np.asarray(steps, np.int64)))
        common = set(np.asarray(every[0]).tolist())
        for row in np.asarray(every)[1:]:
            common &= set(row.tolist())
        if not common or max(common) < 0:
            if any(len(set(r.tolist()) - {-1}) for r in np.asarray(every)):
                raise ResultFileError(f"checkpoints in {self.dir}: the processes hold no common step "
                                      f"({np.asarray(every).tolist()}); delete the folder to start afresh")
            return None
        return held[max(common)]

    def save(self, chunk: int, arrays: dict) -> None:
        """Write ``chunk``'s checkpoint atomically.  Several processes: every process its own file;
        each writes it aside, all meet (a collective: every process must call this at the same record),
        and only then does each keep its previous checkpoint as ``.prev`` and put the new one in place
        (:meth:`load` resumes from the latest step all of them hold)."""
        path = self.path(chunk)
        if jax.process_count() == 1:
            _save_npz_atomic(path, arrays)
            return
        _save_npz_atomic(path + ".next", arrays)
        collective(lambda: multihost_utils.sync_global_devices(f"grokphase checkpoint {self.key} {chunk}"))
        if os.path.exists(path):
            os.replace(path, path + ".prev")
        os.replace(path + ".next", path)


class LostProcessError(ResultFileError):
    """A collective of a multi-process run failed: another process has died or left."""


def collective(fn):
    """Run ``fn`` (a collective of a multi-process run); its failure, which means another process has
    died or left, becomes :class:`LostProcessError` with one line saying how to resume."""
    try:
        return fn()
    except (ValueError, RuntimeError, jax.errors.JaxRuntimeError) as err:
        raise LostProcessError(
            f"process {jax.process_index()} of {jax.process_count()}: lost contact with the run's other processes "
            f"({str(err).splitlines()[0][:160]}); rerun the same command with the same number of processes to "
            "resume from the last checkpoints") from None


def check_resumable(checkpoint: Checkpointer, chunk: int, saved: dict, record_steps: np.ndarray) -> None:
    """Whether the loaded checkpoint ``saved`` of ``chunk`` can be resumed by a run recording at
    ``record_steps`` (its last entry the run's total steps): its step must be at most the total, and
    its ``n_records`` records must be the run's first ones, the last of them at its step (so the
    records of a shorter run are a prefix of the longer run's).  Raises :class:`CheckpointAheadError`
    for a checkpoint past the total, :class:`ResultFileError` for records that do not line up."""
    step, n_rec = int(saved["step"]), int(saved["n_records"])
    total = int(record_steps[-1])
    if step > total:
        raise CheckpointAheadError(
            f"checkpoint {checkpoint.path(chunk)} has reached step {step}, past this run's {total} steps: "
            f"run at least {step} steps to extend it, or delete {checkpoint.dir} to start afresh",
            step, checkpoint.config)
    if n_rec > 0 and (n_rec > len(record_steps) or int(record_steps[n_rec - 1]) != step):
        raise ResultFileError(
            f"checkpoint {checkpoint.path(chunk)} holds {n_rec} records up to step {step}, which are not the first "
            f"records of this run (record times {int(record_steps[0])}, ..., {total}): its total steps were not a "
            f"multiple of the record spacing; delete {checkpoint.dir} to start afresh")
