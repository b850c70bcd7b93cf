"""Backbones and what is built on them: timm models, weights providers, classifier heads, checkpoints,
and the backbone features (extracted by running the backbone, so they live here rather than in ``data``).

It may import ``engine.core``, ``engine.data`` and ``augment``.
"""
