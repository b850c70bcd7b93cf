"""Hyper-parameter search: the search space, coarse-to-fine narrowing, Optuna studies, trials and the report.

It runs trials through ``engine.training`` and may import every layer below it, never evaluation or export.
"""
