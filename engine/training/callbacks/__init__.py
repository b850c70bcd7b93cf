"""The standard callbacks of a run, one feature of the loop (``engine.training.loop``) per module.

``stop`` turns a ``STOP`` file or a signal into a clean stop, ``schedule`` steps the
learning-rate schedule, ``metrics`` makes each epoch's row of metrics, ``checkpoints``
saves ``last`` and ``best``, ``reporting`` writes the progress events, ``metrics.csv`` and
``status.json``, ``tensorboard`` writes TensorBoard event files (when the ``logs`` extra is
installed), ``progress`` draws a terminal progress bar, and ``distributed`` keeps the ranks
of a distributed run in step. The config's recipes (EMA, mixing, early stopping,
gradual unfreezing) are in ``engine.training.recipes``, the doctor's checks in
``engine.training.doctor``.

A callback knows nothing of the others except through ``LoopState.scratch`` (the metrics
callback publishes the finished epoch's row under ``EPOCH_METRICS``). To add one, write a
module here with a ``Callback`` subclass (``engine.training.callback``) that overrides the
hooks it needs and sets an ``order`` (lower runs first in every hook), re-export it below,
and pass it to the loop where the run is built (``engine.training.train``); the loop itself
never changes.
"""

from engine.training.callbacks.checkpoints import CheckpointSaver
from engine.training.callbacks.distributed import DistributedTraining
from engine.training.callbacks.metrics import MetricsRecorder, is_finite_number
from engine.training.callbacks.progress import ProgressBar
from engine.training.callbacks.reporting import EventReporter
from engine.training.callbacks.schedule import LRSchedule
from engine.training.callbacks.stop import StopWatcher
from engine.training.callbacks.tensorboard import TensorBoardWriter

__all__ = [
    "CheckpointSaver", "DistributedTraining", "EventReporter", "LRSchedule", "MetricsRecorder", "ProgressBar",
    "StopWatcher", "TensorBoardWriter", "is_finite_number",
]
