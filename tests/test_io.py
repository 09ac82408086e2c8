"""Result files: provenance attributes, atomic writes, clear errors on corrupt or foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from grokphase.errors import ResultFileError
from grokphase.io import annotate, load_dataset, save_dataset, to_json


def _dataset():
    ds = xr.Dataset({"y": ("x", np.arange(5.0))}, coords={"x": np.linspace(0, 1, 5)})
    return annotate(ds, kind="test.kind", parameters={"N": 700.0, "betas": [0.125, 1.0], "flag": True,
                                                      "nested": {"a": 1}}, seeds=[0, 1, 2])


def test_roundtrip_keeps_values_and_provenance(tmp_path):
    path = save_dataset(_dataset(), tmp_path / "sub" / "r.nc")
    ds = load_dataset(path, kind="test.kind")
    assert np.array_equal(ds["y"].values, np.arange(5.0))
    assert ds.attrs["param_N"] == 700.0
    assert json.loads(ds.attrs["parameters_json"])["nested"] == {"a": 1}
    assert list(ds.attrs["seeds"]) == [0, 1, 2]
    assert ds.attrs["grokphase_version"]
    assert len(ds.attrs["git_revision"]) in (40, 7) or ds.attrs["git_revision"] == "unknown"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["r.nc"]  # no temp files left


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = save_dataset(_dataset(), tmp_path / "r.nc")
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        with open(args[0], "wb") as fh:  # a partial file under the temporary name
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(_dataset(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ResultFileError, match="does not exist"):
        load_dataset(tmp_path / "nope.nc")
    truncated = tmp_path / "t.nc"
    data = save_dataset(_dataset(), tmp_path / "full.nc").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultFileError, match="corrupt"):
        load_dataset(truncated)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(foreign, engine="h5netcdf")
    with pytest.raises(ResultFileError, match="not a grokphase result"):
        load_dataset(foreign)
    with pytest.raises(ResultFileError, match="expected other.kind"):
        load_dataset(tmp_path / "full.nc", kind="other.kind")
    with pytest.raises(ResultFileError, match="provenance"):
        save_dataset(xr.Dataset(), tmp_path / "x.nc")


def test_json_is_strict():
    text = to_json({"a": float("nan"), "b": np.float64(1.5), "c": np.arange(2), "d": np.bool_(True)})
    assert json.loads(text) == {"a": None, "b": 1.5, "c": [0, 1], "d": True}
