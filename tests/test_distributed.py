"""Multi-process runs (``--distributed``, :mod:`grokphase.experiments.distributed`).

The processes are real: two CPU processes on localhost with JAX's multi-controller runtime and Gloo
collectives, started by the tests themselves, each bounded in time and killed by PID afterwards.

* the same seed gives data variables bit-identical to a one-process run (``grokphase run`` of the
  tiny Fig. 2 file; ``sim teacher-student`` with checkpoints against one process with as many
  devices as the two have together);
* killing one process mid-run makes the other exit with a one-line error, leaving checkpoints that a
  rerun with two processes resumes to the uninterrupted answer, while a rerun with one process is
  refused with one line;
* a process whose partners never come ends with a one-line error within the timeout, not a hang;
* the meeting protocol itself (threads in this process) and the layout from the environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from grokphase.errors import ParameterError
from grokphase.experiments import distributed
from grokphase.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_FIG2 = ROOT / "sims" / "tiny" / "fig2.toml"
#: every process and every wait of these tests ends within this many seconds
BOUND = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(port: int, n: int, pid: int, timeout: float = 60) -> dict:
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(n),
               JAX_PROCESS_ID=str(pid), GROKPHASE_DISTRIBUTED_TIMEOUT=str(timeout), GROKPHASE_CACHE_DIR="off")
    env.pop("XLA_FLAGS", None)                   # the CLI asks for its host devices itself
    return env


def _start(args, env, cwd, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grokphase.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, start_new_session=True)


def _kill(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def run_processes(args, n: int, cwd: Path, tag: str, timeout: float = 60) -> list[tuple[int, str, str]]:
    """Run ``grokphase ARGS --distributed`` as ``n`` processes; (return code, stdout, stderr) of each."""
    port = free_port()
    logs = [cwd / f"{tag}.p{i}.err" for i in range(n)]
    procs = [_start([*args, "--distributed"], _env(port, n, i, timeout), cwd, logs[i]) for i in range(n)]
    try:
        outs = [p.communicate(timeout=BOUND)[0] for p in procs]
    finally:
        _kill(procs)
    return [(p.returncode, out, log.read_text()) for p, out, log in zip(procs, outs, logs)]


def run_one(args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GROKPHASE_CACHE_DIR="off")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", "grokphase.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=BOUND)


def assert_same_data(a, b) -> None:
    assert set(a.data_vars) == set(b.data_vars) and len(a.data_vars) >= 20
    differ = [v for v in a.data_vars if not np.array_equal(a[v].values, b[v].values,
                                                           equal_nan=a[v].dtype.kind in "fc")]
    assert not differ, f"one and two processes differ in {differ}"


# ------------------------------------------------------------------------------------------------
# grokphase run sims/tiny/fig2.toml: one process against two


@pytest.fixture(scope="module")
def fig2_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fig2")
    for name in ("one", "two"):
        text = TINY_FIG2.read_text().replace('model = "teacher-student"', f'out_dir = "{name}"\nmodel = "teacher-student"')
        (tmp / f"{name}.toml").write_text(text)
    single = run_one(["run", "one.toml", "--no-progress"], tmp)
    assert single.returncode == 0, single.stderr
    procs = run_processes(["run", "two.toml", "--json", "--no-progress"], 2, tmp, "fig2")
    return tmp, single, procs


def test_run_two_processes_bit_identical_to_one(fig2_runs):
    tmp, _, procs = fig2_runs
    for i, (code, _, err) in enumerate(procs):
        assert code == 0, f"process {i}: {err}"
    one = load_dataset(tmp / "one" / "beta_1_32.nc")
    two = load_dataset(tmp / "two" / "beta_1_32.nc")
    assert_same_data(one, two)
    assert int(two.attrs["jax_process_count"]) == 2 and int(one.attrs["jax_process_count"]) == 1
    traj = one["w_norm2_trajectory"].values
    assert np.all(np.isfinite(traj)) and np.ptp(traj) > 0        # the run did something


def test_only_process_zero_reports(fig2_runs):
    """stdout: process 0's JSON alone (Gloo's own line goes to stderr); process 1 prints nothing."""
    import json

    tmp, _, procs = fig2_runs
    summary = json.loads(procs[0][1])
    assert summary["simulations"] == ["two/beta_1_32.nc"]
    assert procs[1][1] == ""
    # every process keeps its own checkpoint of each chunk
    names = sorted(p.name for p in (tmp / "two" / "checkpoints").rglob("chunk*.npz"))
    assert names == ["chunk00000.p0of2.npz", "chunk00000.p1of2.npz"]


# ------------------------------------------------------------------------------------------------
# a process dies: the other exits with one line; two processes resume; one process is refused

SIM = ["sim", "teacher-student", "--beta", "0.03125", "--s2", "0.1", "--datasets", "2", "--inits", "1",
       "--steps", "6000", "--burn-in", "1000", "--record-every", "100", "--lr", "0.05", "--seed", "3",
       "--checkpoint-every", "0.2", "--no-progress"]


def test_killed_process_then_resume(tmp_path):
    # the reference: one process with as many devices as the two processes have together (the
    # teacher-student task's vmap over two networks on one device rounds its test-set projections
    # differently, at 1e-7, from one network per device: the device layout, not the process count)
    ref = run_one([*SIM, "--devices", "2", "--checkpoint-dir", "ck_ref", "--out", "ref.nc"], tmp_path)
    assert ref.returncode == 0, ref.stderr

    args = [*SIM, "--checkpoint-dir", "ck", "--out", "two.nc", "--distributed"]
    port = free_port()
    logs = [tmp_path / f"kill.p{i}.err" for i in range(2)]
    procs = [_start(args, _env(port, 2, i), tmp_path, logs[i]) for i in range(2)]
    try:
        deadline = time.monotonic() + BOUND
        while not len(list((tmp_path / "ck").rglob("chunk*.p1of2.npz"))) and time.monotonic() < deadline:
            assert procs[0].poll() is None, logs[0].read_text()
            time.sleep(0.05)
        assert procs[1].poll() is None, "the run ended before it could be interrupted: make it longer"
        os.killpg(procs[1].pid, signal.SIGKILL)
        procs[0].wait(timeout=BOUND)
    finally:
        _kill(procs)
    err = logs[0].read_text().strip().splitlines()
    assert procs[0].returncode == 2, "\n".join(err)
    assert err[-1].startswith("grokphase: error: process 0 of 2: ") and "resume" in err[-1], err[-1]
    assert not (tmp_path / "two.nc").exists()
    assert len(list((tmp_path / "ck").rglob("chunk*.p0of2.npz"))) == 1

    # one process cannot take over two processes' checkpoints
    single = run_one([*SIM, "--checkpoint-dir", "ck", "--out", "one.nc"], tmp_path)
    assert single.returncode == 2 and len(single.stderr.strip().splitlines()) == 1, single.stderr
    assert "written by a run of 2 process(es), this run has 1" in single.stderr

    procs = run_processes([*SIM, "--checkpoint-dir", "ck", "--out", "two.nc"], 2, tmp_path, "resume")
    for i, (code, _, err) in enumerate(procs):
        assert code == 0, f"process {i}: {err}"
    two, one = load_dataset(tmp_path / "two.nc"), load_dataset(tmp_path / "ref.nc")
    assert int(two.attrs["resumed"]) == 1 and int(two.attrs["segments"]) == 2
    assert_same_data(one, two)


# ------------------------------------------------------------------------------------------------
# partners that never come


@pytest.mark.parametrize("pid", [0, 1])
def test_missing_partner_one_line_error(tmp_path, pid):
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "grokphase.cli", *SIM, "--distributed"], cwd=tmp_path,
                          env=_env(port, 2, pid, timeout=3), capture_output=True, text=True, timeout=BOUND)
    assert time.monotonic() - t0 < 60
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    expected = "process(es) 1 of 2 did not reach the coordinator" if pid == 0 else \
        "process 1 of 2 could not reach the coordinator (process 0)"
    assert expected in lines[0] and "within 3 s" in lines[0]


# ------------------------------------------------------------------------------------------------
# the meeting and the layout, in this process


def _meet(n: int, port: int, pids, timeout: float):
    errors: dict[int, str] = {}

    def one(pid):
        try:
            distributed.rendezvous(f"localhost:{port}", n, pid, timeout)
        except distributed.DistributedError as err:
            errors[pid] = str(err)

    threads = [threading.Thread(target=one, args=(p,)) for p in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout + 30)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_rendezvous_all_meet():
    assert _meet(4, free_port(), [3, 1, 0, 2], timeout=20) == {}


def test_rendezvous_names_missing_processes():
    t0 = time.monotonic()
    errors = _meet(4, free_port(), [0, 2], timeout=1.5)
    assert time.monotonic() - t0 < 20
    assert "process(es) 1, 3 of 4 did not reach the coordinator" in errors[0]


def _catch(port, n, pid, timeout=10.0):
    try:
        distributed.rendezvous(f"localhost:{port}", n, pid, timeout)
    except distributed.DistributedError as err:
        return str(err)
    return ""


def _in_thread(fn, *args):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    return t, out


def test_rendezvous_refuses_duplicate_ids():
    port = free_port()
    coordinator, said = _in_thread(_catch, port, 3, 0)
    first, first_said = _in_thread(_catch, port, 3, 1, 3.0)
    time.sleep(0.5)                                    # the first process 1 is in; a second one comes
    second = _catch(port, 3, 1)
    for t in (coordinator, first):
        t.join(timeout=30)
    assert "two processes claim id 1" in said[0]
    assert "refused process 1" in second
    assert first_said[0]                               # the first gives up too (its coordinator is gone)


def test_rendezvous_refuses_mismatched_process_counts():
    port = free_port()
    coordinator, said = _in_thread(_catch, port, 3, 0)
    peer = _catch(port, 2, 1)
    coordinator.join(timeout=30)
    assert "process 1 says there are 2 processes, process 0 3" in said[0]
    assert "refused process 1" in peer


def test_layout_from_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "node7:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed.layout() == ("node7:1234", 4, 3)
    for value, match in (("4", r"JAX_PROCESS_ID must be in \[0, 4\)"), ("x", "not an integer")):
        monkeypatch.setenv("JAX_PROCESS_ID", value)
        with pytest.raises(ParameterError, match=match):
            distributed.layout()
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "node7")
    with pytest.raises(ParameterError, match="host:port"):
        distributed.layout()
    monkeypatch.setenv("GROKPHASE_DISTRIBUTED_TIMEOUT", "-1")
    with pytest.raises(ParameterError, match="GROKPHASE_DISTRIBUTED_TIMEOUT"):
        distributed.timeout_seconds()


def test_no_layout_is_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "PMI_"))}
    proc = subprocess.run([sys.executable, "-m", "grokphase.cli", *SIM, "--distributed"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=BOUND)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "JAX_COORDINATOR_ADDRESS" in lines[0]


def test_jax_initialize_failure_is_one_line_error(monkeypatch, capsys):
    """A failure inside jax.distributed.initialize itself (not grokphase's layout checks: e.g. the
    coordinator's port taken by another program) is one line naming the exception, exit 2, no
    traceback and nothing on stdout; nothing runs."""
    import grokphase.cli as cli

    def fail():
        raise RuntimeError("UNAVAILABLE: failed to connect to all addresses\nsecond line of the C++ status")

    monkeypatch.setattr(cli.distributed, "initialize", fail)
    monkeypatch.setattr(cli, "_run", lambda *a, **k: pytest.fail("the command ran after a failed join"))
    code = cli.main([*SIM, "--distributed"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert "RuntimeError: UNAVAILABLE: failed to connect" in lines[0] and "JAX_COORDINATOR_ADDRESS" in lines[0]
    assert "Traceback" not in err and "second line" not in err
