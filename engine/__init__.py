"""Transfer Studio's engine: a Qt-free library for datasets, backbones, training and prediction.

Its packages are layers; each may import only those below it (``pyproject.toml`` declares the
order and ``make lint`` checks it, see ``docs/ARCHITECTURE.md``):

    core < data < augment < models < training < search | evaluation < export

Importing the package installs the torchvision fix (``engine.core.torchvision_fix``) as an
import hook, so that every module may import timm, and nothing heavy is loaded until needed.
"""

from engine.core.torchvision_fix import install_import_hook

install_import_hook()
