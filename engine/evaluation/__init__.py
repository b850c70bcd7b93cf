"""Using trained models: prediction, test-time augmentation, ensembles, soups, evaluation, calibration,
the HTML report, Grad-CAM and the catalog of checkpoints.

It may import ``engine.core``, ``engine.data``, ``augment`` and ``engine.models``; it needs nothing of
``engine.training`` (a split is rebuilt with ``engine.data.prepare``). Plain data is kept apart from the
modules that run models, so the GUI can import it without torch: ``catalog``, ``manifest``, ``predictions``
and ``activation_map``. This ``__init__`` imports nothing, so that stays true.
"""
