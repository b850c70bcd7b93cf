"""Using trained models: prediction, test-time augmentation, ensembles, soups, evaluation, calibration,
the HTML report, Grad-CAM and the catalog of checkpoints.

It may import ``engine.core``, ``engine.data``, ``augment``, ``engine.models`` and ``engine.training``.
"""
