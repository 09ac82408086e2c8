"""Shared pieces of the figures: the Agg backend, colours, axis labels (mathtext), phase-region
labels, and the atomic, byte-reproducible PNG/PDF writer."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import distance_transform_edt, gaussian_filter  # noqa: E402

from grokphase.io import writes_files  # noqa: E402

_BETA_CMAP = plt.get_cmap("viridis")

#: mathtext of the paper's symbols, for axis labels and legends (never the bare parameter name "s2")
S2 = r"$\sigma^2$"
S2_C = r"$\sigma^2_c$"
SA2 = r"$\sigma_a^2$"
SW2 = r"$\sigma_w^2$"
AXIS_LABELS = {"s2": S2, "sa2": SA2, "sw2": SW2, "eps": r"$\varepsilon$", "gamma": r"$\gamma$",
               "beta": r"$\beta$", "N": "N (hidden width)", "n": "n (training points)", "d": "d (input dimension)",
               "P": "P (modulus)", "u": r"$u$", "r": r"$r$"}

#: phase codes of :class:`grokphase.theory.status.Phase` and their names (repeated here: plotting reads files)
PHASE_NAMES = ("GFL", "GMFL-I", "GMFL-II")

#: PNG and PDF metadata that would make a figure depend on the matplotlib version or the date
_NO_METADATA = {".png": {"Software": None}, ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                ".svg": {"Creator": None, "Date": None}}


def axis_label(name: str) -> str:
    """Axis label of a parameter name: the paper's symbol in mathtext (``s2`` -> sigma^2)."""
    return AXIS_LABELS.get(name, name)


def _beta_label(beta: float) -> str:
    if beta < 1 and abs(1 / beta - round(1 / beta)) < 1e-9:
        return f"β = 1/{int(round(1 / beta))}"
    return f"β = {beta:g}"


def _savefig(fig, path: Path, **kw) -> None:
    meta = _NO_METADATA.get(path.suffix.lower())
    fig.savefig(path, bbox_inches="tight", **kw, **({"metadata": meta} if meta else {}))


def _save(fig, path, also_pdf=False) -> list[Path]:
    """Write ``fig`` to ``path`` (through a temporary file and an atomic rename) and, with ``also_pdf``,
    a PDF next to it.  No version or date goes into the file: the same figure gives the same bytes."""
    path = Path(path)
    if not writes_files():               # multi-process runs: process 0 draws
        plt.close(fig)
        return [path] + ([path.with_suffix(".pdf")] if also_pdf and path.suffix.lower() != ".pdf" else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path]
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    _savefig(fig, tmp, dpi=150)
    os.replace(tmp, path)
    if also_pdf and path.suffix.lower() != ".pdf":
        pdf = path.with_suffix(".pdf")
        _savefig(fig, pdf)
        out.append(pdf)
    plt.close(fig)
    return out


def _below(values, top):
    """``values`` with the points above ``top`` masked (NaN): a curve that leaves a zoomed panel
    through its top edge ends there instead of being drawn outside the axes."""
    values = np.asarray(values, dtype=float)
    return np.where(values <= top, values, np.nan)


def _colors(n):
    return [_BETA_CMAP(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


def smooth_level(phase, level: float) -> np.ndarray:
    """Indicator of ``phase > level`` smoothed over about one cell: its 0.5 level line runs through the
    midpoints of the label's staircase, as a smooth curve at the grid's resolution (a contour of the
    integer label itself is a staircase of the cells)."""
    return gaussian_filter((np.asarray(phase) > level).astype(float), sigma=1.0, mode="nearest")


def label_regions(ax, x, y, phase, names=PHASE_NAMES, **text_kw) -> list:
    """Write each phase's name inside its region of the ``phase`` grid (codes index ``names``, shape
    ``(y, x)``), at the cell deepest inside the region (farthest from the other phases and the
    frame), so that the name sits inside even a thin or curved region.  Returns the Text objects."""
    phase = np.asarray(phase)
    x, y = np.asarray(x, float), np.asarray(y, float)
    texts = []
    style = dict(fontsize=8, ha="center", va="center", color="k", zorder=6,
                 bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="0.5", alpha=0.8))
    style.update(text_kw)
    for code, name in enumerate(names):
        mask = phase == code
        if not mask.any():
            continue
        depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
        texts.append(ax.text(x[j], y[i], name, **style))
    return texts


#: the file extensions a figure may be saved under (matplotlib's Agg canvas: png, pdf, svg, ...)
FIGURE_FORMATS = frozenset(FigureCanvasBase.get_supported_filetypes())
