"""Exporting a model or an ensemble to files that run without Transfer Studio, each checked for parity.

It may import every layer below it, ``engine.evaluation`` included (ensembles and prediction).
"""
