"""Multi-process runs with JAX's multi-controller runtime (``jax.distributed``): ``--distributed``.

Every process runs the same command.  :func:`initialize` (the CLI calls it first thing, before JAX
starts a backend) finds the process layout, lets the processes meet, and initialises
``jax.distributed``; from then on ``jax.devices()`` lists every process's devices, and the ensemble
engine (:mod:`grokphase.sims.driver`) shards each chunk's member axis over one global mesh of them.

**Layout.**  From the environment when set: ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; otherwise from JAX's cluster auto-detection (SLURM,
Open MPI, Kubernetes, ...; ``docs/cluster.md``).  ``GROKPHASE_DISTRIBUTED_TIMEOUT`` (seconds,
default 300) bounds how long the processes wait for each other.

**Meeting first.**  Before ``jax.distributed.initialize`` the processes meet over a plain TCP
connection on the coordinator's port: process 0 listens, the others connect and say who they are.
JAX's own runtime aborts the process from C++ with a page of log when a peer never comes; the
meeting turns that into one line naming the missing processes (or the unreachable coordinator),
and refuses inconsistent layouts (two processes with one id, different process counts).

**On CPU** the processes' collectives (the gathers of results) use Gloo over TCP
(``jax_cpu_collectives_implementation``); accelerators use their own (NCCL on GPUs).
"""

from __future__ import annotations

import math
import os
import socket
import time

import jax

from grokphase.errors import GrokphaseError, ParameterError


class DistributedError(GrokphaseError):
    """A multi-process run whose processes cannot meet or have lost one another."""


#: the layout of this process once :func:`initialize` has run (read without starting a JAX backend)
_LAYOUT = {"num_processes": 1, "process_id": 0, "coordinator": None}

DEFAULT_TIMEOUT = 300


def num_processes() -> int:
    """Processes of this run (1 unless :func:`initialize` joined several); starts no backend."""
    return int(_LAYOUT["num_processes"])


def process_id() -> int:
    """This process's index (0 for the one that writes results); starts no backend."""
    return int(_LAYOUT["process_id"])


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ParameterError(f"--distributed: {name}={value!r} is not an integer") from None


def timeout_seconds() -> float:
    """``GROKPHASE_DISTRIBUTED_TIMEOUT`` (seconds the processes wait for each other), default 300."""
    value = os.environ.get("GROKPHASE_DISTRIBUTED_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        t = float(value)
    except ValueError:
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise ParameterError(f"GROKPHASE_DISTRIBUTED_TIMEOUT={value!r}: need a positive number of seconds")
    return t


def layout() -> tuple[str, int, int]:
    """(coordinator address, number of processes, this process's id) from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, the unset ones from JAX's cluster auto-detection."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    n, pid = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if address is None or n is None or pid is None:
        try:
            from jax._src.clusters import ClusterEnv      # JAX's own detection (SLURM, Open MPI, k8s, ...)
            address, n, pid, _ = ClusterEnv.auto_detect_unset_distributed_params(address, n, pid, None, None, None)
        except Exception as err:                          # noqa: BLE001 - any failure: say what to set
            raise ParameterError(f"--distributed: JAX's cluster detection failed ({type(err).__name__}: {err}); "
                                 "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID") from None
    missing = [name for name, v in (("JAX_COORDINATOR_ADDRESS", address), ("JAX_NUM_PROCESSES", n),
                                    ("JAX_PROCESS_ID", pid)) if v is None]
    if missing:
        raise ParameterError("--distributed: no cluster detected and " + ", ".join(missing) + " not set "
                             "(docs/cluster.md)")
    if n < 1:
        raise ParameterError(f"--distributed: JAX_NUM_PROCESSES must be >= 1, got {n}")
    if not 0 <= pid < n:
        raise ParameterError(f"--distributed: JAX_PROCESS_ID must be in [0, {n}), got {pid}")
    if ":" not in address or not address.rsplit(":", 1)[1].isdigit():
        raise ParameterError(f"--distributed: the coordinator address must be host:port, got {address!r}")
    return address, int(n), int(pid)


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _read_line(conn: socket.socket, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = conn.recv(64)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def rendezvous(address: str, n: int, pid: int, timeout: float) -> None:
    """Let the ``n`` processes meet at ``address`` before JAX's runtime does (module docstring).
    Process 0 listens there until every other process has said ``"<id> <n>"``, then answers ``go``
    to each; the others connect (retrying until ``timeout``) and wait for the answer.  Raises
    :class:`DistributedError` naming the missing processes or the unreachable coordinator."""
    if n == 1:
        return
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout
    if pid == 0:
        _meet_as_coordinator(port, n, deadline, timeout, address)
    else:
        _meet_as_peer(host, port, n, pid, deadline, timeout, address)


def _meet_as_coordinator(port: int, n: int, deadline: float, timeout: float, address: str) -> None:
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as err:
        raise DistributedError(f"--distributed: process 0 cannot listen on port {port} of {address} ({err})") from None
    peers: dict[int, socket.socket] = {}
    try:
        while len(peers) < n - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, n)) - set(peers))
                raise DistributedError(
                    f"--distributed: process(es) {', '.join(map(str, missing))} of {n} did not reach the coordinator "
                    f"{address} within {timeout:g} s (GROKPHASE_DISTRIBUTED_TIMEOUT)")
            server.settimeout(left)
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            try:
                words = _read_line(conn, deadline).split()
                other, other_n = int(words[0]), int(words[1])
            except (OSError, ValueError, IndexError):
                conn.close()                       # not one of ours (a port scan, a stale client)
                continue
            if other_n != n:
                conn.sendall(f"error process 0 runs {n} processes, process {other} says {other_n}\n".encode())
                conn.close()
                raise DistributedError(f"--distributed: process {other} says there are {other_n} processes, "
                                       f"process 0 {n} (JAX_NUM_PROCESSES must agree)")
            if not 0 < other < n or other in peers:
                conn.sendall(f"error process id {other} is out of range or taken\n".encode())
                conn.close()
                raise DistributedError(f"--distributed: two processes claim id {other}, or it is out of "
                                       f"[1, {n}) (JAX_PROCESS_ID must be unique)")
            peers[other] = conn
        for conn in peers.values():
            conn.sendall(b"go\n")
        for conn in peers.values():                # the peers close first: the port is free for JAX at once
            try:
                conn.settimeout(5.0)
                conn.recv(1)
            except OSError:
                pass
    finally:
        for conn in peers.values():
            conn.close()
        server.close()


def _meet_as_peer(host: str, port: int, n: int, pid: int, deadline: float, timeout: float, address: str) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DistributedError(f"--distributed: process {pid} of {n} could not reach the coordinator (process 0) "
                                   f"at {address} within {timeout:g} s (GROKPHASE_DISTRIBUTED_TIMEOUT)")
        try:
            conn = socket.create_connection((host, port), timeout=min(left, 5.0))
        except OSError:
            time.sleep(min(0.2, max(left, 0.0)))
            continue
        try:
            conn.sendall(f"{pid} {n}\n".encode())
            answer = _read_line(conn, deadline)
        except OSError:
            answer = ""
        finally:
            conn.close()
        if answer == "go":
            return
        if answer.startswith("error"):
            raise DistributedError(f"--distributed: the coordinator refused process {pid}: {answer[6:]}")
        # no answer: process 0 gave up or this was another program on the port; try again until the deadline


def initialize() -> tuple[int, int]:
    """Join this process to the run's others (module docstring): the layout, the meeting, Gloo
    collectives on CPU, ``jax.distributed.initialize``.  Must run before JAX starts a backend (the CLI
    calls it first thing).  Returns (process id, number of processes); a layout of one process
    initialises nothing."""
    address, n, pid = layout()
    if n > 1:
        timeout = timeout_seconds()
        rendezvous(address, n, pid, timeout)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=pid,
                                   initialization_timeout=int(math.ceil(timeout)))
    _LAYOUT.update(num_processes=n, process_id=pid, coordinator=address)
    return pid, n


def local_device_count(total: int | None) -> int | None:
    """CPU host devices each process asks for so that the run has ``total`` devices in all (the
    ``--devices K`` and ``host_devices`` of a file count every process's devices together)."""
    if total is None:
        return None
    return max(1, int(math.ceil(int(total) / num_processes())))
