"""The validation split a set of checkpoints shares, rebuilt from the run configs in their metadata.

Greedy ensembles and greedy soups score members on it. Only metadata and the dataset are
read (no torch); the split itself is ``engine.data.prepare``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.core.config import RunConfig
from engine.core.errors import CheckpointError, ConfigError
from engine.data.prepare import PreparedDataset, prepare_configured_dataset
from engine.models.checkpoint_metadata import read_checkpoint_metadata, resolve_checkpoint_path


def load_validation_split(
    checkpoints: Sequence[str | Path], *, data: str | Path | None = None
) -> PreparedDataset:
    """The dataset split the checkpoints were validated on, rebuilt from their recorded run configs.

    Greedy selection and greedy soups must score members on images none of them trained
    on, so every member must come from the same split (data fractions and split seed).

    Args:
        checkpoints: ``.safetensors`` files or run folders (their best).
        data: the dataset, when it has moved since training (default: the recorded ``data.path``).

    Raises:
        CheckpointError: a checkpoint without a recorded config, members split differently,
            or a dataset whose classes differ from the checkpoints'.
        DatasetError: the dataset cannot be read.
    """
    if not checkpoints:
        raise CheckpointError("validation split: needs at least one checkpoint")
    files = [resolve_checkpoint_path(checkpoint) for checkpoint in checkpoints]
    splits: dict[tuple, Path] = {}
    configs: list[RunConfig] = []
    for file in files:
        metadata = read_checkpoint_metadata(file)
        try:
            config = RunConfig.from_dict(metadata["config"])
        except (KeyError, ConfigError) as error:
            raise CheckpointError(f"{file}: its metadata records no usable run config ({error})") from error
        split = (config.data.val_fraction, config.data.test_fraction, config.data.split_seed)
        if splits and split not in splits:
            other, first = next(iter(splits.items()))
            raise CheckpointError(
                f"{file} was validated on another split (val_fraction, test_fraction, split_seed = {split}) than "
                f"{first} ({other}): one member's validation images may be another's training images"
            )
        splits.setdefault(split, file)
        configs.append(config)
    dataset = prepare_configured_dataset(configs[0].data, path=data)
    classes = tuple(read_checkpoint_metadata(files[0]).get("classes", ()))
    if dataset.classes != classes:
        raise CheckpointError(f"{dataset.root}: classes {list(dataset.classes)} differ from {files[0]}'s "
                              f"{list(classes)}")
    return dataset
