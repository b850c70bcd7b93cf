"""Transfer Studio's engine: a Qt-free library for datasets, backbones, training and prediction.

Importing the package first makes torchvision importable on CPU-only torch builds
(see ``engine.torchvision_fix``), so that every submodule may import timm.
"""

from engine import torchvision_fix as _torchvision_fix

_torchvision_fix.apply()
