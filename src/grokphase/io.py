"""Result files: xarray Datasets as netCDF with full provenance, written atomically.

Every file carries in its attributes: ``grokphase_kind`` (what it holds), every input parameter
(``param_<name>``, plus all of them as JSON in ``parameters_json``), seeds when there are any, the
package version, the git revision of the source tree (and whether it had uncommitted changes), the
command line, the JAX/NumPy/Python versions and the creation time.  Files are first written to a
temporary name in the target directory and renamed into place, so an interrupted write never leaves
a half-written result under the final name; the file gets the mode a plain ``open`` would give it
(``0o666`` less the process umask), not the ``0o600`` of a temporary file.

**Checksum.** Every file also carries ``data_sha256``, a SHA-256 of its data, which
:func:`load_dataset` recomputes and compares: a file whose data changed on disk (a flipped bit, an
overwritten block that HDF5 still opens) is a :class:`~grokphase.errors.ResultFileError` naming the
file, not silently wrong numbers.  The recipe (:func:`data_checksum`), over the Dataset as
``xr.open_dataset(path, engine="h5netcdf")`` decodes it: every variable, data variables and
coordinates alike, in the order of their names (sorted by Python string order); for each, the UTF-8 of
``name``, ``dtype`` and ``shape`` (``"{name}\\0{dtype}\\0{shape}\\0"``, dtype as NumPy's ``dtype.str``
in little-endian order, shape as a comma-separated list), then the values in C order: numbers and
booleans as their little-endian bytes; strings and other objects (dtype written ``str``) element by
element as an 8-byte little-endian length followed by the UTF-8 of ``str(element)``.  Attributes are
not hashed (``data_sha256`` cannot cover itself, and provenance may be re-annotated); re-saving a
loaded Dataset recomputes the checksum from the data being written.  :func:`save_dataset` hashes the
written file as read back, so the checksum does not depend on how xarray encodes a variable.  Files
written before checksums existed have no ``data_sha256`` and load unverified.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5netcdf
import jax
import numpy as np
import xarray as xr

from grokphase import __version__
from grokphase.errors import ResultFileError

ENGINE = "h5netcdf"

#: the attribute holding the checksum of a result file's data (module docstring)
CHECKSUM_ATTR = "data_sha256"
#: attributes that describe one file or one loading of it, not a result: :func:`annotate` drops them
#: (a new result computed from a loaded or reused one is neither that file nor reused)
FILE_ATTRS = (CHECKSUM_ATTR, "reused", "reused_from")


@functools.lru_cache(maxsize=1)
def git_revision() -> tuple[str, bool]:
    """(revision, dirty) of the git tree holding this package's source, or ("unknown", False)."""
    env = os.environ.get("GROKPHASE_GIT_REVISION")
    if env:
        return env, False
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return rev, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def to_json(obj: Any) -> str:
    """JSON with NaN/inf mapped to null (strict JSON), NumPy types converted."""
    return json.dumps(_jsonable(obj), allow_nan=False)


def _attr_value(value: Any):
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "fiu" and arr.ndim <= 1:
        return arr
    return json.dumps(_jsonable(value))


def provenance() -> dict[str, Any]:
    rev, dirty = git_revision()
    return {
        "grokphase_version": __version__,
        "git_revision": rev,
        "git_dirty": int(dirty),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python_version": platform.python_version(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "jax_backend": jax.default_backend(),
        "jax_process_count": int(jax.process_count()),      # > 1: a multi-process (--distributed) run
    }


def annotate(ds: xr.Dataset, *, kind: str, parameters: dict[str, Any], seeds: Any = None,
             extra: dict[str, Any] | None = None) -> xr.Dataset:
    """Attach kind, parameters, seeds and provenance to ``ds`` (returns a new Dataset; the attributes
    of :data:`FILE_ATTRS` it may carry from a loaded file are dropped)."""
    ds = ds.copy()
    for name in FILE_ATTRS:
        ds.attrs.pop(name, None)
    attrs = {"grokphase_kind": kind, **provenance()}
    attrs["parameters_json"] = json.dumps(_jsonable(parameters))
    for k, v in parameters.items():
        attrs[f"param_{k}"] = _attr_value(v)
    attrs["seeds"] = _attr_value(seeds) if seeds is not None else "none"
    for k, v in (extra or {}).items():
        attrs[k] = _attr_value(v)
    ds.attrs.update(attrs)
    return ds


def _umask() -> int:
    """The process umask: from /proc/self/status where the kernel reports it (no side effect), else
    by setting and restoring it (racy across threads, harmless here: both calls run back to back)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a file created by ``open(path, "w")`` gets: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def _element_bytes(values: np.ndarray) -> bytes:
    out = bytearray()
    for item in values.reshape(-1).tolist():
        text = (item if isinstance(item, str) else str(item)).encode("utf-8", "surrogatepass")
        out += len(text).to_bytes(8, "little") + text
    return bytes(out)


def data_checksum(ds: xr.Dataset) -> str:
    """SHA-256 (hex) of every variable of ``ds`` (data variables and coordinates), by the recipe of the
    module docstring.  Attributes do not enter it."""
    h = hashlib.sha256()
    for name in sorted(str(k) for k in ds.variables):
        values = np.asarray(ds.variables[name].values)
        shape = ",".join(str(n) for n in values.shape)
        if values.dtype.kind in "OUS":
            dtype, raw = "str", _element_bytes(values)
        else:
            le = values.dtype.newbyteorder("<")           # "=" and ">" -> "<"; one-byte types keep "|"
            dtype, raw = le.str, np.ascontiguousarray(values, dtype=le).tobytes()
        h.update(f"{name}\0{dtype}\0{shape}\0".encode("utf-8", "surrogatepass"))
        h.update(raw)
    return h.hexdigest()


def _read(path: Path) -> xr.Dataset:
    """The file's Dataset, fully loaded (as :func:`load_dataset` and the checksum see it)."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds.load()


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary file name beside ``path`` for the caller to write; when the block ends normally the
    file gets mode ``0o666`` less the umask, is fsynced and renamed onto ``path``; on any exception it is
    removed (no half-written result file is ever left)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def writes_files() -> bool:
    """Whether this process writes result files, figures and summaries: always, except in a
    multi-process run (``--distributed``), where process 0 alone does."""
    return jax.process_count() == 1 or jax.process_index() == 0


def _written_everywhere(path: Path) -> None:
    """Multi-process runs: every process waits here until process 0 has written ``path``, so that a
    process reading it back (on a shared file system) sees the whole file."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"grokphase wrote {path}")


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` (netCDF4/HDF5) atomically: temp file in the same directory, checksum of
    its data as read back (``data_sha256``), mode ``0o666`` less the umask, fsync, rename.  In a
    multi-process run only process 0 writes, and every process returns once the file is complete."""
    path = Path(path)
    if not writes_files():
        _written_everywhere(path)
        return path
    if "grokphase_kind" not in ds.attrs:
        raise ResultFileError(f"refusing to save {path}: dataset has no provenance (call annotate first)")
    if CHECKSUM_ATTR in ds.attrs:           # a loaded Dataset written again: its data may have changed
        ds = ds.copy()
        del ds.attrs[CHECKSUM_ATTR]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine=ENGINE, invalid_netcdf=False)
        digest = data_checksum(_read(Path(tmp)))
        with h5netcdf.File(tmp, "a") as fh:
            fh.attrs[CHECKSUM_ATTR] = digest
    _written_everywhere(path)
    return path


def load_dataset(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> xr.Dataset:
    """Load a grokphase result file fully into memory, with clear errors for missing, corrupt,
    partial or foreign files; the data are checked against the file's ``data_sha256`` (module
    docstring) when it has one (files written before checksums existed load unverified)."""
    path = Path(path)
    if not path.exists():
        raise ResultFileError(f"result file {path} does not exist")
    try:
        ds = _read(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError, EOFError) as exc:
        # what h5py / h5netcdf / xarray raise for a corrupt or foreign file; a MemoryError or another
        # exception type is not a file problem and keeps its traceback
        raise ResultFileError(f"result file {path} is corrupt or not a netCDF file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    got = ds.attrs.get("grokphase_kind")
    if got is None:
        raise ResultFileError(f"{path} is not a grokphase result file (no grokphase_kind attribute)")
    stored = ds.attrs.get(CHECKSUM_ATTR)
    if stored is not None and str(stored) != data_checksum(ds):
        raise ResultFileError(f"result file {path} is corrupt: its data do not match the checksum stored when it "
                              "was written")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and got not in kinds:
        raise ResultFileError(f"{path} holds '{got}' results, expected {' or '.join(kinds)}")
    return ds


def parameters_of(ds: xr.Dataset) -> dict[str, Any]:
    return json.loads(ds.attrs.get("parameters_json", "{}"))
