"""Auto mode: the best model the data and a wall-clock budget allow, as a plan of ordinary runs.

It may import every layer below it (training, search, evaluation); nothing below imports it.
"""
