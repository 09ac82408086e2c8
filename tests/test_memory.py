"""Memory-aware ensemble chunks (:mod:`grokphase.sims.memory`): the budget of a chunk comes from an
explicit ``memory_gb``, else from what each device reports, else the 2 GB fallback (CPU)."""

from __future__ import annotations

import jax
import pytest

from grokphase.sims import budget as memory


class FakeDevice:
    """A device reporting ``limit`` bytes (None: no memory statistics, like the CPU)."""

    def __init__(self, limit):
        self.limit = limit
        self.process_index = jax.process_index()

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit, "bytes_in_use": 0}


GB = 10**9


def test_chunk_from_reported_device_memory():
    devs = [FakeDevice(80 * GB), FakeDevice(40 * GB)]           # the smallest device sets every device's share
    assert memory.device_budget(devs) == int(memory.DEVICE_FRACTION * 40 * GB)
    per_network = 3 * GB
    per_device = int(memory.DEVICE_FRACTION * 40 * GB) // per_network     # 8 networks on each device
    assert memory.chunk_size(per_network, devs, None) == 2 * per_device == 16
    assert memory.budget_gb(devs, None) == pytest.approx(memory.DEVICE_FRACTION * 40)


def test_explicit_budget_wins_and_cpu_falls_back():
    devs = [FakeDevice(80 * GB)]
    assert memory.chunk_size(GB // 2, devs, 3.0) == 6              # the chunk's budget as given
    assert memory.budget_gb(devs, 3.0) == 3.0
    cpu = [FakeDevice(None), FakeDevice(None)]
    assert memory.device_budget(cpu) is None
    assert memory.chunk_size(GB // 4, cpu, None) == int(memory.FALLBACK_GB * 4)
    assert memory.budget_gb(cpu, None) == memory.FALLBACK_GB
    # at least one network per device, even when one network is over the budget (refused elsewhere)
    assert memory.chunk_size(100 * GB, cpu, None) == 2
    assert memory.chunk_size(100 * GB, [FakeDevice(10 * GB)] * 3, None) == 3


def test_real_devices_here():
    """On this machine's devices: a CPU reports nothing (the fallback), an accelerator its memory."""
    budget = memory.device_budget()
    if jax.default_backend() == "cpu":
        assert budget is None
    else:
        assert budget is not None and budget > 0


def test_upfront_budget(monkeypatch):
    """Before the devices are set up: an explicit budget, else the CPU's fallback where no
    accelerator can be present, else no up-front budget (checked against the devices later)."""
    assert memory.upfront_budget_gb(5.0) == 5.0
    monkeypatch.setattr(memory, "accelerator_possible", lambda: False)
    assert memory.upfront_budget_gb(None) == memory.FALLBACK_GB
    monkeypatch.setattr(memory, "accelerator_possible", lambda: True)
    assert memory.upfront_budget_gb(None) is None
    monkeypatch.undo()
    if jax.default_backend() == "cpu":
        assert not memory.accelerator_possible()       # this process has started its (CPU) backend
