"""The doctor's built-in checks, one per module; importing this package registers them.

Every threshold here was chosen against healthy runs of this project (AdamW, a zero-initialised
head on pooled features, warmup then cosine decay; the demo's 10 classes x 50 images, batch
sizes 8 to 128, linear and MLP heads, fine-tuning at 64 px) so that they raise nothing, and
against broken ones (learning rate 10 and 1e-7, a head with the wrong number of classes,
too-small initialisation, memorisation, imbalanced classes) so that each is caught. The
constants of each check say what they are for; the config's ``doctor`` section holds the
thresholds a user may want to change.

A new built-in check is one module here with a ``@register_check`` class (``default = True``
to run it unless a config says otherwise), imported below.
"""

# The import order is the order of the default doctor.checks, and so of the checks' hooks
# (all run at the same loop order): initial_loss records the first loss before divergence may stop the run.
# isort: off
from engine.training.doctor.checks import initial_loss  # noqa: F401
from engine.training.doctor.checks import divergence  # noqa: F401
from engine.training.doctor.checks import learning_rate_too_low  # noqa: F401
from engine.training.doctor.checks import learning_rate_collapsed  # noqa: F401
from engine.training.doctor.checks import update_ratio  # noqa: F401
from engine.training.doctor.checks import overfitting  # noqa: F401
from engine.training.doctor.checks import bad_start  # noqa: F401
from engine.training.doctor.checks import class_imbalance  # noqa: F401
# isort: on
