"""The exceptions Transfer Studio raises on purpose.

Every message names the file or field at fault, the bad value, and what was expected::

    TransferStudioError
    ├── ConfigError            a config file, field or CLI --set value is invalid
    ├── DatasetError           a data folder or CSV cannot be used for training
    │   └── ImageFileError     one image file is unreadable, corrupt, truncated... (engine.data.images)
    ├── CheckpointError        a checkpoint or run folder is missing, damaged or mismatched
    ├── BackboneUnavailable    a backbone name is unknown, or its weights cannot be had
    ├── StorageError           a disk is full, over quota, read-only or failing (also an OSError)
    └── RunLocked              another process is writing the run folder (also a CheckpointError)

Loop control (CancelFit, CancelEpoch, CancelBatch) lives in ``engine.training.loop``: it is not an error.
"""

from __future__ import annotations


class TransferStudioError(Exception):
    """Base of every error that Transfer Studio reports to the user as one plain line."""


class ConfigError(TransferStudioError, ValueError):
    """A config value is invalid; the message starts with the field path (``optim.learning_rate``)."""


class DatasetError(TransferStudioError):
    """A data folder, CSV or image set cannot be used; the message names the path."""


class CheckpointError(TransferStudioError):
    """A checkpoint or run folder is missing, damaged or does not match what is asked of it."""


class BackboneUnavailable(TransferStudioError):
    """A backbone is unknown, or no source of its pretrained weights is reachable."""


class StorageError(TransferStudioError, OSError):
    """A write failed because of the disk (full, over quota, read-only, I/O error); the message names the disk.

    Constructed as ``StorageError(errno, message)``; ``str()`` is the message alone.
    """

    def __str__(self) -> str:
        return str(self.strerror)


class RunLocked(CheckpointError):
    """Another live process is writing the run folder; the message names its pid and host."""
