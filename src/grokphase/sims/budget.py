"""How many networks an ensemble chunk holds, from the devices' memory and the per-network estimates
of :mod:`grokphase.sims.memory`.

**Budgets.**  An explicit ``memory_gb`` (``--memory-gb``) is the budget of one ensemble chunk, every
device's share together.  Without one, an accelerator that reports its memory
(``Device.memory_stats()["bytes_limit"]``) gives each of its chunks :data:`DEVICE_FRACTION` of it, so
the same experiment file fills an 80 GB GPU and still fits a laptop; devices that report nothing (the
CPU, whose host devices share the machine's memory) get :data:`FALLBACK_GB` for the chunk, as before.
In a multi-process run every process takes the smallest budget any process reports.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from grokphase.sims.checkpoint import collective

#: share of an accelerator's reported memory one ensemble chunk may use (the rest: XLA's workspace,
#: compiled programs, fragmentation)
DEVICE_FRACTION = 0.6
#: budget of one ensemble chunk, GB, where the devices report no memory (CPU) and none is given
FALLBACK_GB = 2.0


def device_budget(devices=None) -> int | None:
    """Bytes one device may give an ensemble chunk: :data:`DEVICE_FRACTION` of the smallest
    ``bytes_limit`` that ``devices`` (default: every device) report, the smallest over every process of
    a multi-process run; None where a device reports none (CPU)."""
    devices = list(devices) if devices is not None else jax.devices()
    local = [d for d in devices if d.process_index == jax.process_index()] or jax.local_devices()
    limits = []
    for dev in local:
        try:
            stats = dev.memory_stats()
        except Exception:               # noqa: BLE001 - a backend without memory statistics
            stats = None
        limits.append(int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else -1)
    mine = min(limits)
    if jax.process_count() > 1:         # every process must size its chunks alike
        every = collective(lambda: multihost_utils.process_allgather(np.asarray([mine], np.int64)))
        mine = int(np.min(np.asarray(every)))
    return None if mine <= 0 else int(DEVICE_FRACTION * mine)


def budget_gb(devices, memory_gb: float | None) -> float:
    """The budget (GB) one network is checked against: ``memory_gb`` when given, else one device's
    budget (:func:`device_budget`), else :data:`FALLBACK_GB`."""
    if memory_gb is not None:
        return float(memory_gb)
    per_device = device_budget(devices)
    return FALLBACK_GB if per_device is None else per_device / 1e9


def chunk_size(per_network: int, devices, memory_gb: float | None) -> int:
    """Networks per ensemble chunk (a multiple of the device count is made by the driver): with
    ``memory_gb`` as many as fit in it; without, as many as fit in each device's budget times the
    device count where devices report their memory, else as many as fit in :data:`FALLBACK_GB`
    (module docstring); at least one per device."""
    devices = list(devices) if devices is not None else jax.devices()
    n_dev = len(devices)
    per_network = max(int(per_network), 1)
    if memory_gb is None:
        per_device = device_budget(devices)
        if per_device is not None:
            return n_dev * max(1, per_device // per_network)
        memory_gb = FALLBACK_GB
    return max(n_dev, int(memory_gb * 1e9 // per_network))


def accelerator_possible() -> bool:
    """Whether JAX may find an accelerator here, decided without starting a backend (checks made before
    the devices are set up use it): False when ``JAX_PLATFORMS`` asks for the CPU alone or no PJRT
    plugin (CUDA, ROCm, TPU) is installed, so the devices can only be the CPU's and their budget is
    :data:`FALLBACK_GB`."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return jax.default_backend() != "cpu"
    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    if platforms and set(platforms.lower().split(",")) <= {"cpu"}:
        return False
    if list(importlib.metadata.entry_points(group="jax_plugins")):
        return True
    if importlib.util.find_spec("libtpu") is not None:
        return True
    try:
        import jax_plugins                # namespace package of JAX's plugins (jax_plugins.xla_cuda12, ...)
    except ImportError:
        return False
    return bool(list(getattr(jax_plugins, "__path__", [])))


def upfront_budget_gb(memory_gb: float | None) -> float | None:
    """The budget (GB) a check made before the devices are set up can apply: ``memory_gb`` when
    given; else :data:`FALLBACK_GB` where the devices can only be the CPU's; else None (an
    accelerator's budget is known once its devices are, and checked then)."""
    if memory_gb is not None:
        return float(memory_gb)
    return None if accelerator_possible() else FALLBACK_GB
