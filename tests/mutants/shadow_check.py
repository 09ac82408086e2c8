"""pytest plugin loaded by tests/mutants/run.py (``-p shadow_check``) in every test process it starts.

After collection (when the test modules and conftest have imported grokphase) it checks that grokphase
came from the mutated copy named by ``GROKPHASE_MUTANT_SRC``, not from the editable install (a
``pythonpath`` ini option or a ``sys.path`` edit in a conftest would put the working tree first, and
every mutant would then "survive" for the wrong reason).  If not, it stops the session with exit
code 3, which the harness never counts as caught.  It also prints where grokphase came from, once,
in the terminal summary (the harness shows it for the unmutated baseline run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

MARKER = "grokphase-mutant-shadow-check: grokphase imported from "


def _where() -> str | None:
    mod = sys.modules.get("grokphase")
    return None if mod is None else str(Path(mod.__file__).resolve())


def pytest_collection_finish(session):
    want = os.environ.get("GROKPHASE_MUTANT_SRC")
    if not want:
        return
    import grokphase  # noqa: F401  (normally imported already by the tests' conftest)

    where = _where()
    if not Path(where).is_relative_to(Path(want).resolve()):
        pytest.exit(f"grokphase imported from {where}, not from the mutated copy {want}", returncode=3)


def pytest_terminal_summary(terminalreporter):
    where = _where()
    if where is not None:
        terminalreporter.write_line(MARKER + where)
