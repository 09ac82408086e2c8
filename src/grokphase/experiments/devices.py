"""Which devices an experiment shards its ensembles over.

``request_host_devices`` must run before JAX initialises its backend (the CLI calls it first thing);
it only edits ``XLA_FLAGS``.  JAX is imported at module top: ``grokphase`` itself imports it (to
enable float64), so deferring it here would save nothing.
"""

from __future__ import annotations

import os

import jax

from grokphase.errors import ParameterError
from grokphase.experiments import distributed


def request_host_devices(k: int | None) -> None:
    """Ask XLA for K host (CPU) devices without intra-op threading; effective only before JAX
    initialises its backend (the CLI calls this first thing).  Harmless on GPU machines.  In a
    multi-process run (``--distributed``) K counts every process's devices: each process asks for
    its share, ceil(K / processes)."""
    k = distributed.local_device_count(k)
    if k is None:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={k}"
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false"
    os.environ["XLA_FLAGS"] = flags.strip()


def configure_devices(k: int | None):
    """The devices to shard ensembles over: the first K (``None``: every device).  In a multi-process
    run, the first ceil(K / processes) devices of every process (K counts them all)."""
    request_host_devices(k)
    if k is None:
        return jax.devices()
    if distributed.num_processes() > 1:
        share = distributed.local_device_count(k)
        by_process: dict[int, list] = {}
        for dev in jax.devices():
            by_process.setdefault(dev.process_index, []).append(dev)
        short = {p: len(v) for p, v in by_process.items() if len(v) < share}
        if short:
            raise ParameterError(f"--devices {k}: each of the {len(by_process)} processes needs {share} device(s); "
                                 + ", ".join(f"process {p} has {c}" for p, c in sorted(short.items())))
        return [dev for p in sorted(by_process) for dev in by_process[p][:share]]
    devs = jax.devices()
    if len(devs) < k:
        raise ParameterError(f"--devices {k}: only {len(devs)} device(s) available (on CPU the host device count "
                             "must be set before JAX starts; run the command in a fresh process)")
    return devs[:k]


def experiment_devices(spec: dict, devices_k: int | None):
    """--devices K wins; else the file's ``host_devices`` (CPU host devices, ignored on a GPU)."""
    if devices_k is not None:
        return configure_devices(devices_k)
    request_host_devices(spec.get("host_devices"))
    return configure_devices(spec.get("host_devices") if jax.default_backend() == "cpu" else None)


def cached_run_devices(spec: dict):
    """Devices of a cached ``reproduce`` run: at most the file's ``host_devices`` on CPU (those that
    exist in this process), every device on an accelerator."""
    k = spec.get("host_devices")
    if jax.default_backend() != "cpu" or k is None:
        return configure_devices(None)
    if distributed.num_processes() > 1:     # at least one device of every process
        return configure_devices(max(distributed.num_processes(), min(int(k), len(jax.devices()))))
    return jax.devices()[: max(1, min(int(k), len(jax.devices())))]
