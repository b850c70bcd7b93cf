"""The bottom layer: errors, the run configuration, paths, atomic writes, stop signals, devices, figures, the
torchvision fix.

Every other package of the engine may import ``engine.core``; it imports none of them.
"""
