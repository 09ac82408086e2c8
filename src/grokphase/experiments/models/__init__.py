"""The models of the paper, registered with :mod:`grokphase.experiments.registry` on import."""

from grokphase.experiments.models import modular, teacher_student  # noqa: F401  (registers both)
