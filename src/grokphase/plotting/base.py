"""Shared pieces of the figures: the Agg backend, colours, and the atomic PNG/PDF writer."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
import numpy as np  # noqa: E402

_BETA_CMAP = plt.get_cmap("viridis")

def _beta_label(beta: float) -> str:
    if beta < 1 and abs(1 / beta - round(1 / beta)) < 1e-9:
        return f"β = 1/{int(round(1 / beta))}"
    return f"β = {beta:g}"


def _save(fig, path, also_pdf=False) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path]
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    os.replace(tmp, path)
    if also_pdf and path.suffix.lower() != ".pdf":
        pdf = path.with_suffix(".pdf")
        fig.savefig(pdf, bbox_inches="tight")
        out.append(pdf)
    plt.close(fig)
    return out


def _colors(n):
    return [_BETA_CMAP(x) for x in np.linspace(0.05, 0.85, max(n, 1))]



#: the file extensions a figure may be saved under (matplotlib's Agg canvas: png, pdf, svg, ...)
FIGURE_FORMATS = frozenset(FigureCanvasBase.get_supported_filetypes())
