"""How much memory one network of a simulation needs, estimated from its sizes before anything is
allocated: the experiments layer refuses a run whose single network exceeds the memory budget with one
line instead of an out-of-memory traceback from XLA or NumPy minutes later.

The estimates count what one network holds during a step and over the run: its data set (or the
modular table), its parameters with their gradient, noise and optimiser state, the largest
activations, and its recorded trajectories (one row per record time).  They are order-of-magnitude
figures (the compiled program may fuse or reuse buffers), used to refuse runs that cannot fit and to
size ensemble chunks (:mod:`grokphase.sims.budget`, with the devices' memory).
"""

from __future__ import annotations

import math

from grokphase.sims.modular.config import SCALAR_RECORDS as MODULAR_RECORDS
from grokphase.sims.modular.config import ModularSim
from grokphase.sims.teacher_student.config import DEGREE_RECORDS as TS_DEGREE_RECORDS
from grokphase.sims.teacher_student.config import TeacherStudentSim

#: copies of the parameters a step holds: the parameters, their gradient, the Langevin noise and up to
#: two optimiser moments (Adam)
PARAM_COPIES = 5


def record_count(steps: int, record_every: int, log_times: bool, per_decade: int = 20) -> int:
    """Number of record times of :class:`grokphase.sims.driver.Schedule` (without building them)."""
    if log_times:
        start = min(record_every, steps)
        return max(2, int(math.ceil(per_decade * math.log10(max(steps / start, 1.0)))) + 1) + 1
    return steps // record_every + 1


def _item(dtype: str) -> int:
    return 4 if dtype == "float32" else 8


def teacher_student_bytes(sim: TeacherStudentSim) -> dict[str, int]:
    """Bytes of one teacher-student network: ``device`` (data n x d and the test set, activations
    N x n, parameters: :meth:`TeacherStudentSim.bytes_per_network`, the estimate the ensemble chunk is
    sized by) and ``records`` (its trajectories, float64)."""
    per_record = len(sim.scalar_records()) + len(TS_DEGREE_RECORDS) * len(sim.degrees) + 1
    records = 8 * record_count(sim.steps, sim.record_every, sim.log_times) * per_record
    return {"device": int(sim.bytes_per_network()), "records": int(records)}


def modular_bytes(sim: ModularSim) -> dict[str, int]:
    """Bytes of one modular network: ``device`` (the (P^2, N) hidden layer and (P^2, P) outputs of
    the whole table, the input weights (2P, N) and readout (N, P) with their step copies, the N x N
    Gram matrix of the exact readout draw in float64) and ``records`` (scalars and the three (N, P/2+1)
    Fourier spectra per record time, float64)."""
    P, N = int(sim.P), int(sim.N)
    table = P * P
    device = _item(sim.dtype) * (table * N + table * P + PARAM_COPIES * 3 * P * N + table) + 8 * 3 * N * N
    per_record = len(MODULAR_RECORDS) + 3 * N * (P // 2 + 1) + N
    records = 8 * record_count(sim.steps, sim.record_every, sim.log_times) * per_record
    return {"device": int(device), "records": int(records)}


def format_bytes(n: float) -> str:
    """``n`` bytes as a short decimal size (GB, MB, kB)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"

