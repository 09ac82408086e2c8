"""The experiments layer: the model registry (:mod:`~grokphase.experiments.registry`), the ``[[sim]]``
option schema derived from the configuration dataclasses (:mod:`~grokphase.experiments.options`),
experiment files (:mod:`~grokphase.experiments.files`), the run / reuse / resume loop of
``grokphase run`` (:mod:`~grokphase.experiments.runner`), device selection
(:mod:`~grokphase.experiments.devices`), the registrations of the paper's two models
(:mod:`~grokphase.experiments.models`) and ``grokphase reproduce`` (:mod:`~grokphase.experiments.reproduce`)."""
