"""Pre-flight checks of every output a command will write, run before any computation: a long
simulation must not be thrown away at the end because its ``--out`` points at a directory, a file's
parent is a file, the folder is read-only, or ``--plot`` names a format matplotlib cannot write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from grokphase.errors import ParameterError
from grokphase.plotting.base import FIGURE_FORMATS


def _writable_dir(path: Path, flag: str, given: str) -> None:
    """The folder ``path`` exists and takes a new file, or can be created under its nearest existing
    ancestor, which then takes one (tried: permission bits say nothing for root or read-only mounts)."""
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ParameterError(f"{flag} {given}: {anc} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=anc, prefix=".grokphase-preflight-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ParameterError(f"{flag} {given}: cannot write in {anc} ({err.strerror or err})") from None


def check_file(value: str | None, flag: str, suffixes, kind: str) -> None:
    """``value`` names a writable file with one of ``suffixes`` (``None``: not requested)."""
    if value is None:
        return
    if not value.strip():
        raise ParameterError(f"{flag}: empty path")
    path = Path(value).expanduser().absolute()
    if path.suffix.lower().lstrip(".") not in suffixes:
        allowed = ", ".join("." + s for s in sorted(suffixes))
        raise ParameterError(f"{flag} {value}: expected a {kind} file name ending in {allowed}")
    if path.is_dir():
        raise ParameterError(f"{flag} {value} is a directory, not a file")
    _writable_dir(path.parent, flag, value)


def check_dir(value: str | None, flag: str) -> None:
    """``value`` names a folder that exists or can be created, and takes files (``None``: not requested)."""
    if value is None:
        return
    if not value.strip():
        raise ParameterError(f"{flag}: empty path")
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{flag} {value} is a file, not a directory")
    _writable_dir(path, flag, value)


def preflight(args) -> None:
    """Check every output option of a parsed command line before the command runs."""
    if getattr(args, "group", None) == "plot":         # `grokphase plot RESULT --out FIGURE`
        check_file(args.out, "--out", FIGURE_FORMATS, "figure")
    else:
        check_file(getattr(args, "out", None), "--out", {"nc"}, "netCDF")
    check_file(getattr(args, "plot", None), "--plot", FIGURE_FORMATS, "figure")
    for dest, flag in (("checkpoint_dir", "--checkpoint-dir"), ("out_dir", "--out-dir"), ("cache_dir", "--cache-dir")):
        check_dir(getattr(args, dest, None), flag)
