"""Training runs: the set-up builder, the callback loop, losses, schedules, distributed data parallel,
the run folder, the LR finder, the sanity check, recipes and the training doctor.

It may import ``engine.core``, ``engine.data``, ``augment`` and ``engine.models``.
"""
