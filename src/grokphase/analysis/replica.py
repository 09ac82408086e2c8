"""Summaries of replica-exchange results."""

from __future__ import annotations

import xarray as xr


def replica_summary(ds: xr.Dataset) -> dict:
    """Swap acceptance per neighbour pair, round trips and the ladder warning of a replica-exchange result."""
    warning = str(ds.attrs.get("ladder_warning", "none"))
    return {"acceptance": [float(x) for x in ds["swap_acceptance_pooled"].values],
            "pair_s2_low": [float(x) for x in ds["pair_s2_low"].values],
            "round_trips": int(ds["round_trips"].values.sum()), "ladder_ok": bool(ds.attrs.get("ladder_ok", 0)),
            "warning": "" if warning == "none" else warning}
