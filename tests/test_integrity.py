"""Result files you can trust on disk (issue 17): the data checksum of every result file (its recipe
recomputed independently, verified on load, attributes outside it), file modes that follow the
umask, honest provenance of resumed and reused runs (time over every segment, segment count; the data
bit-identical to an uninterrupted run), a progress-bar rate that leaves compilation out, and the
corrupt-file test: bytes flipped inside the data of a saved result make ``plot``, ``compare`` and
``run``'s reuse fail with exit 2 and one line naming the file."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from grokphase.cli import main
from grokphase.errors import ResultFileError
from grokphase.experiments import runner
from grokphase.experiments.registry import get_model
from grokphase.io import annotate, data_checksum, load_dataset, save_dataset
from grokphase.sims import replica as rx
from grokphase.sims.driver import (Checkpointer, Members, Schedule, Task, _Interrupt, advance_bar, ladder_timing,
                                  progress_bar, run_ladder)
from grokphase.sims.langevin import langevin
from grokphase.sims.teacher_student import TeacherStudentSim, run_teacher_student
from test_cli import run_error

# ---------------------------------------------------------------------------------------------
# helpers


def _dataset(y=None) -> xr.Dataset:
    y = np.arange(5.0) if y is None else y
    ds = xr.Dataset({"y": ("x", y), "flag": ("x", np.array([True, False, True, True, False])),
                     "count": ("x", np.arange(5, dtype=np.int32))},
                    coords={"x": np.linspace(0.0, 1.0, 5), "branch": ("b", ["cooling", "heating"])})
    return annotate(ds, kind="test.kind", parameters={"N": 7})


def flip_data_bytes(path: Path, variable: str, n: int = 16) -> None:
    """Overwrite ``n`` bytes in the middle of ``variable``'s stored data (HDF5 still opens the file)."""
    with h5py.File(path, "r") as f:
        dset = f[variable]
        offset, size = dset.id.get_offset(), dset.id.get_storage_size()
    assert offset is not None and size >= n, (variable, offset, size)        # contiguous storage
    with open(path, "r+b") as fh:
        fh.seek(offset + (size - n) // 2)
        old = fh.read(n)
        fh.seek(offset + (size - n) // 2)
        fh.write(bytes(b ^ 0xA5 for b in old))


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# the checksum


def test_checksum_follows_the_documented_recipe(tmp_path):
    """``data_sha256`` equals the recipe of io's docstring computed here by hand: variables by name,
    ``name\\0dtype\\0shape\\0`` then little-endian bytes, strings length-prefixed UTF-8."""
    path = save_dataset(_dataset(), tmp_path / "r.nc")
    with h5py.File(path, "r") as f:
        stored = f.attrs["data_sha256"]
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    h = hashlib.sha256()
    # sorted names: branch, count, flag, x, y
    h.update(b"branch\0str\x002\0")
    for word in (b"cooling", b"heating"):
        h.update(len(word).to_bytes(8, "little") + word)
    h.update(b"count\0<i4\x005\0" + np.arange(5, dtype="<i4").tobytes())
    h.update(b"flag\0|b1\x005\0" + bytes([1, 0, 1, 1, 0]))
    h.update(b"x\0<f8\x005\0" + np.linspace(0.0, 1.0, 5).astype("<f8").tobytes())
    h.update(b"y\0<f8\x005\0" + np.arange(5.0).astype("<f8").tobytes())
    assert stored == h.hexdigest()
    assert load_dataset(path).attrs["data_sha256"] == stored


def test_checksum_covers_data_not_attributes(tmp_path):
    ds = load_dataset(save_dataset(_dataset(), tmp_path / "a.nc"))
    digest = ds.attrs["data_sha256"]
    ds.attrs["note"] = "re-annotated after saving"
    again = load_dataset(save_dataset(ds, tmp_path / "b.nc"))
    assert again.attrs["data_sha256"] == digest and again.attrs["note"] == "re-annotated after saving"
    # a loaded Dataset whose data changed is saved with a fresh checksum (the stale one is not kept)
    changed = again.copy()
    changed["y"] = changed["y"] * 2
    saved = load_dataset(save_dataset(changed, tmp_path / "c.nc"))
    assert saved.attrs["data_sha256"] != digest
    assert saved.attrs["data_sha256"] == data_checksum(saved)
    np.testing.assert_array_equal(saved["y"].values, 2 * np.arange(5.0))
    # one changed value changes the checksum; so does a renamed variable with the same bytes
    assert data_checksum(_dataset(np.array([0.0, 1.0, 2.0, 3.0, 4.0 + 1e-15]))) != data_checksum(_dataset())
    assert data_checksum(_dataset().rename({"y": "z"})) != data_checksum(_dataset())
    # annotate drops the per-file attributes of a loaded Dataset
    assert "data_sha256" not in annotate(saved, kind="k", parameters={}).attrs


def test_flipped_data_bytes_are_a_named_error(tmp_path):
    path = save_dataset(_dataset(np.linspace(-1.0, 1.0, 5)), tmp_path / "r.nc")
    flip_data_bytes(path, "y", n=8)
    with xr.open_dataset(path, engine="h5netcdf") as raw:     # HDF5 still opens it: only the data changed
        assert not np.array_equal(raw["y"].values, np.linspace(-1.0, 1.0, 5))
    with pytest.raises(ResultFileError, match=r"result file .*r\.nc is corrupt: its data do not match the checksum"):
        load_dataset(path)


def test_file_written_before_checksums_still_loads(tmp_path):
    """An older file (no ``data_sha256``) loads unverified."""
    path = tmp_path / "old.nc"
    _dataset().to_netcdf(path, engine="h5netcdf")
    ds = load_dataset(path, "test.kind")
    assert "data_sha256" not in ds.attrs
    np.testing.assert_array_equal(ds["y"].values, np.arange(5.0))


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_follow_the_umask(tmp_path, mask, mode):
    with umask(mask):
        path = save_dataset(_dataset(), tmp_path / "r.nc")
    assert stat.S_IMODE(path.stat().st_mode) == mode


# ---------------------------------------------------------------------------------------------
# resumed runs: the data bit-identical, the time of every segment


TINY = dict(beta=1 / 8, s2=(0.3,), datasets=2, inits=2, steps=40, burn_in=10, lr=0.05, record_every=10, n_test=200)


@pytest.fixture(scope="module")
def uninterrupted():
    return run_teacher_student(TeacherStudentSim.from_scaling(**TINY))


def test_resumed_run_records_every_segment(uninterrupted, tmp_path):
    sim = TeacherStudentSim.from_scaling(**TINY)
    assert uninterrupted.attrs["segments"] == 1 and uninterrupted.attrs["resumed"] == 0
    with umask(0o027), pytest.raises(_Interrupt):
        run_teacher_student(sim, checkpoint_dir=str(tmp_path), checkpoint_every=0.0, _stop_after_records=2)
    (ckpt,) = tmp_path.rglob("chunk*.npz")
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o640
    with np.load(ckpt) as f:
        first_seconds, first_segment = float(f["seconds"]), int(f["segments"])
    assert first_seconds > 0 and first_segment == 1
    resumed = run_teacher_student(sim, checkpoint_dir=str(tmp_path))
    # the data: bit for bit the uninterrupted run's
    assert set(resumed.data_vars) == set(uninterrupted.data_vars)
    for name in uninterrupted.data_vars:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values, err_msg=name)
    # the provenance: two segments, resumed, the time of both
    assert resumed.attrs["segments"] == 2 and resumed.attrs["resumed"] == 1
    assert resumed.attrs["seconds"] > first_seconds
    steps = TINY["steps"] * TINY["datasets"] * TINY["inits"] * len(TINY["s2"])
    assert resumed.attrs["network_steps_per_second"] == pytest.approx(steps / resumed.attrs["seconds"], rel=1e-12)
    with np.load(ckpt) as f:                                # the finished checkpoint carries both segments
        assert int(f["segments"]) == 2 and float(f["seconds"]) >= first_seconds


class Hyper(NamedTuple):
    s2: Any
    lr: Any


def _gauss_task(dim: int = 3) -> Task:
    """x in R^dim, prior N(0, I), potential |x - 1|^2 / 2 (the replica tests' Gaussian toy)."""

    def observe(theta, data, hyper, accum, weight):
        return {"x0": theta["x"][0]}, {"x": accum["x"] + weight * theta["x"]}

    return Task(make_data=lambda key, hyper: {"one": jnp.ones(())},
                init=lambda key, data, hyper: {"x": jax.random.normal(key, (dim,), jnp.float64)},
                prior_std=lambda z, hyper: {"x": jnp.asarray(1.0)},
                loss=lambda theta, data: 0.5 * jnp.sum((theta["x"] - 1.0) ** 2),
                make_tx=lambda hyper: langevin(hyper.lr, hyper.s2),
                init_accum=lambda theta, data, hyper: {"x": jnp.zeros((dim,), jnp.float64)},
                observe=observe)


GAUSS = _gauss_task()


def _ladder_members(s2=(0.5, 1.0, 2.0), n_sets=2, lr=0.01) -> Members:
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(3), 3 * n_sets)).reshape(3, n_sets, 2)
    tile = lambda k: np.tile(k, (len(s2), 1))  # noqa: E731
    s2v = np.repeat(np.asarray(s2, np.float64), n_sets)
    return Members(tile(keys[0]), tile(keys[1]), tile(keys[2]), Hyper(s2=s2v, lr=np.full(s2v.size, lr)))


def test_replica_exchange_counts_three_segments(tmp_path):
    """Two interruptions: three segments, the same data as one run; a checkpoint written before the
    timing was recorded (no ``seconds`` / ``segments``) still resumes and counts as one segment."""
    sched = Schedule(steps=120, burn_in=40, record_every=20)
    members = _ladder_members()
    ref = rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7)
    assert (ref.segments, ref.resumed) == (1, False)
    ck = Checkpointer(str(tmp_path / "a"), {"test": 1}, every_seconds=1e9)
    for _ in range(2):
        with pytest.raises(_Interrupt):
            rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck, stop_after_records=2)
    with np.load(ck.path(0)) as f:
        before = float(f["seconds"])
        assert int(f["segments"]) == 2
    got = rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck)
    np.testing.assert_array_equal(got.records["x0"], ref.records["x0"])
    np.testing.assert_array_equal(got.slot_replica, ref.slot_replica)
    assert (got.segments, got.resumed) == (3, True) and got.seconds > before
    # an old checkpoint: the timing arrays removed
    ck_old = Checkpointer(str(tmp_path / "b"), {"test": 2}, every_seconds=1e9)
    with pytest.raises(_Interrupt):
        rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck_old, stop_after_records=2)
    with np.load(ck_old.path(0)) as f:
        arrays = {k: f[k] for k in f.files if k not in ("seconds", "segments")}
    np.savez(ck_old.path(0), **arrays)
    old = rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck_old)
    np.testing.assert_array_equal(old.records["x0"], ref.records["x0"])
    assert (old.segments, old.resumed) == (2, True)


def test_ladder_resume_counts_the_interrupted_stage(tmp_path):
    """An annealing ladder interrupted in its first stage: that stage resumes (two segments), the
    second runs once; the ladder reports two segments, resumed, and the time of every stage."""
    sched = Schedule(steps=60, burn_in=20, record_every=20)
    members = _ladder_members(s2=(1.0,), n_sets=3)
    stages = [members.hyper, members.hyper._replace(s2=np.full(3, 0.5))]
    ref = run_ladder(GAUSS, members, stages, sched)
    kw = dict(checkpoint_dir=str(tmp_path), checkpoint_config={"test": 4}, checkpoint_every=0.0)
    with pytest.raises(_Interrupt):
        run_ladder(GAUSS, members, stages, sched, stop_after_records=2, **kw)
    outs = run_ladder(GAUSS, members, stages, sched, **kw)
    for a, b in zip(outs, ref):
        np.testing.assert_array_equal(a.records["x0"], b.records["x0"])
    assert [(o.segments, o.resumed) for o in outs] == [(2, True), (1, False)]
    seconds, steps, segments, resumed = ladder_timing(outs)
    assert (steps, segments, resumed) == (2 * 3 * 60, 2, True) and seconds == sum(o.seconds for o in outs)


def test_flipped_checkpoint_bytes_are_reported(tmp_path):
    """A checkpoint's arrays are protected by the zip members' CRC-32: flipped bytes inside an
    array's data are an error naming the checkpoint, not a silently different resume."""
    sched = Schedule(steps=60, burn_in=20, record_every=20)
    members = _ladder_members()
    ck = Checkpointer(str(tmp_path), {"test": 3}, every_seconds=1e9)
    with pytest.raises(_Interrupt):
        rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck, stop_after_records=1)
    path = Path(ck.path(0))
    with np.load(path) as f:
        target = np.ascontiguousarray(f["r_x0"]).tobytes()
    raw = bytearray(path.read_bytes())
    at = raw.find(target)
    assert at > 0
    raw[at:at + 8] = bytes(b ^ 0xA5 for b in raw[at:at + 8])
    path.write_bytes(bytes(raw))
    with pytest.raises(ResultFileError, match=r"checkpoint .*chunk00000\.npz is unreadable .*CRC"):
        rx.run_replica_exchange(GAUSS, members, sched, 3, swap_every=7, checkpoint=ck)


# ---------------------------------------------------------------------------------------------
# the progress bar


def test_progress_rate_leaves_compilation_out(capsys):
    """A fake clock: the first chunk (compiling) takes 100 s, the next 1000 steps 1 s.  The rate is
    1000 steps/s and the ETA 8 s; counting the compile it would be ~21 steps/s and ~6 min."""
    now = [0.0]
    bar = progress_bar(10_000, "test")
    bar._time = lambda: now[0]
    bar.start_t = bar.last_print_t = 0.0
    assert "compiling" in bar.postfix
    now[0] = 100.0
    advance_bar(bar, 1000, timed=False)
    assert bar.n == 1000 and not bar.postfix
    now[0] = 101.0
    advance_bar(bar, 1000, timed=True)
    info = bar.format_dict
    assert info["elapsed"] == pytest.approx(1.0)
    assert info["rate"] == pytest.approx(1000.0)
    assert (info["total"] - info["n"]) / info["rate"] == pytest.approx(8.0)
    bar.close()
    assert "compiling" in capsys.readouterr().err


def test_engine_bar_shows_compiling_on_stderr(capsys):
    sched = Schedule(steps=40, burn_in=10, record_every=10)
    out = rx.run_replica_exchange(GAUSS, _ladder_members(), sched, 3, swap_every=7, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "compiling" in captured.err and "net-step" in captured.err
    assert out.records["x0"].shape == (6, 4)


# ---------------------------------------------------------------------------------------------
# the corrupt-file test of the issue: plot, compare and run's reuse


EXP = ('model = "teacher-student"\nout_dir = "out"\n[common]\ns2 = [0.3]\nlr = 0.05\nrecord_every = 10\n'
       'steps = 40\nburn_in = 10\n[[sim]]\nname = "b8"\nbeta = 0.125\ndatasets = 2\ninits = 1\n')


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A theory file and a tiny simulation saved by ``grokphase run``; its second run is a reuse."""
    tmp = tmp_path_factory.mktemp("saved")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        (tmp / "exp.toml").write_text(EXP)
        assert main(["theory", "teacher-student", "--s2", "0.2", "--out", "a.nc", "--json"]) == 0
        assert main(["run", "exp.toml", "--no-progress", "--json"]) == 0
    finally:
        os.chdir(cwd)
    return tmp


def test_reused_run_keeps_its_timing_and_says_so(saved, capsys):
    sim = saved / "out" / "b8.nc"
    original = load_dataset(sim)
    assert original.attrs["segments"] == 1 and original.attrs["resumed"] == 0 and "reused" not in original.attrs
    model = get_model("teacher-student", "test")
    config = model.cache_config(dict(beta=0.125, s2=[0.3], lr=0.05, record_every=10, steps=40, burn_in=10,
                                     datasets=2, inits=1))
    reused = runner._reusable(sim, model, config, "b8")
    assert reused.attrs["reused"] == 1 and reused.attrs["reused_from"] == str(sim)
    for key in ("seconds", "network_steps_per_second", "segments", "resumed", "created_utc"):
        assert reused.attrs[key] == original.attrs[key], key
    assert "reusing" in capsys.readouterr().err


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_corrupt_result_plot_and_compare_fail_naming_the_file(saved, tmp_path, capsys):
    theory = _copy(saved / "a.nc", tmp_path / "theory_bad.nc")
    flip_data_bytes(theory, "q")
    line = run_error(capsys, "plot", str(theory), "--out", str(tmp_path / "t.png"))
    assert "theory_bad.nc" in line and "corrupt" in line and "checksum" in line
    sim = _copy(saved / "out" / "b8.nc", tmp_path / "sim_bad.nc")
    flip_data_bytes(sim, "linear_learned_trajectory")
    line = run_error(capsys, "plot", str(sim), "--out", str(tmp_path / "s.png"))
    assert "sim_bad.nc" in line and "checksum" in line
    line = run_error(capsys, "compare", "teacher-student", "--sim", str(sim), "--out", str(tmp_path / "c.nc"))
    assert "sim_bad.nc" in line and "checksum" in line
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "s.png").exists()
    assert not (tmp_path / "c.nc").exists()


def test_corrupt_result_stops_run_before_it_recomputes(saved, tmp_path, capsys, monkeypatch):
    (tmp_path / "exp.toml").write_text(EXP)
    (tmp_path / "out").mkdir()
    target = _copy(saved / "out" / "b8.nc", tmp_path / "out" / "b8.nc")
    flip_data_bytes(target, "linear_learned_trajectory")
    corrupt = target.read_bytes()
    def boom(*args, **kwargs):
        raise AssertionError("the simulation ran")

    spec = dataclasses.replace(get_model("teacher-student", "test"), run=boom)
    monkeypatch.setattr(runner, "get_model", lambda name, where: spec)
    monkeypatch.chdir(tmp_path)
    line = run_error(capsys, "run", "exp.toml", "--no-progress")
    assert "b8.nc" in line and "checksum" in line
    assert target.read_bytes() == corrupt                     # not overwritten
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b8.nc"]
    # the intact file is reused by the same command
    _copy(saved / "out" / "b8.nc", target)
    assert main(["run", "exp.toml", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["simulations"] == [str(Path("out") / "b8.nc")]
