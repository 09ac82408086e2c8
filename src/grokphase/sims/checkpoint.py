"""Checkpoints of the ensemble engine: atomic ``.npz`` files per chunk in a folder named by the hash
of the run's configuration, so that re-running the same configuration resumes it and a different one
never reads its files."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import jax
import numpy as np

from grokphase.errors import ResultFileError



def _save_npz_atomic(path: str, arrays: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
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
            tmp = cfg_path + f".tmp-{os.getpid()}"
            with open(tmp, "w") as fh:
                json.dump(config, fh, sort_keys=True, indent=1, default=str)
            os.replace(tmp, cfg_path)
        self.every_seconds = every_seconds

    def path(self, chunk: int) -> str:
        return os.path.join(self.dir, f"chunk{chunk:05d}.npz")

    def load(self, chunk: int):
        path = self.path(chunk)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a truncated or foreign file
            raise ResultFileError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                                  "delete it to restart this chunk") from None

    def save(self, chunk: int, arrays: dict) -> None:
        if jax.process_index() == 0:      # multi-host runs: one writer
            _save_npz_atomic(self.path(chunk), arrays)
