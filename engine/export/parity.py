"""The parity check's inputs: real images (or, failing them, random ones) with PyTorch's probabilities for them,
and the largest difference of an export's answers to those."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from augment import create_eval_transform, eval_source_side
from engine.core.errors import DatasetError
from engine.data.images import load_rgb
from engine.evaluation.predict import collect_image_paths
from engine.export.formats import ProbabilityRunner
from engine.export.source import ExportSource

# Images the parity check takes from the model's own data when the caller names none.
DEFAULT_CHECK_IMAGES = 8


@dataclass(frozen=True)
class CheckInputs:
    """The parity check's inputs and PyTorch's answers to them."""

    paths: tuple[Path, ...]
    images: np.ndarray  # (N, 3, H, W) float32, normalised for the graph input
    expected: np.ndarray  # (N, C) float32 probabilities from PyTorch


def check_inputs(source: ExportSource, graph: nn.Module, check_images: Sequence[Path] | None) -> CheckInputs:
    """The images every export of ``source`` is checked on, and PyTorch's probabilities for them.

    Args:
        source: what is exported (its reference ensemble or members give the expected answers).
        graph: its probability graph, which answers for random inputs.
        check_images: the images to use; None takes a few from the data folder the model was
            trained on (random inputs if that folder is gone); an empty list asks for random inputs.

    Raises:
        DatasetError: none of the given ``check_images`` can be read.
    """
    paths = [Path(path) for path in check_images] if check_images is not None else _default_check_images(source)
    if paths:
        probabilities, kept = _reference_probabilities(source, paths)
        if kept:
            transform = create_eval_transform(source.settings[0])
            side = eval_source_side(source.settings[0])
            images = torch.stack([transform(load_rgb(paths[index], min_side=side)) for index in kept]).numpy()
            return CheckInputs(tuple(paths[index] for index in kept), images, probabilities)
        if check_images is not None:
            raise DatasetError(f"export check images: none of the {len(paths)} files could be read "
                               f"(first: {paths[0]})")
    # No image to be had (the training data moved): random inputs still compare the graphs.
    generator = torch.Generator().manual_seed(0)
    random_images = torch.randn((4, *source.settings[0].input_size), generator=generator)
    with torch.no_grad():
        expected = graph(random_images).numpy()
    return CheckInputs((), random_images.numpy(), expected)


def _default_check_images(source: ExportSource) -> list[Path]:
    data = Path(source.data_paths[0]) if source.data_paths[0] else None
    if data is None or not data.is_dir():
        return []
    try:
        found = collect_image_paths([data])
    except DatasetError:
        return []
    # Spread over the sorted list, so that several classes are seen.
    step = max(1, len(found) // DEFAULT_CHECK_IMAGES)
    return found[::step][:DEFAULT_CHECK_IMAGES]


def _reference_probabilities(source: ExportSource, paths: list[Path]) -> tuple[np.ndarray, list[int]]:
    """PyTorch's probabilities for the files that decode, and their indices."""
    if source.reference is not None:
        result = source.reference.predict_proba(paths)
        return result.probabilities.astype(np.float32), list(result.kept)
    total: np.ndarray | None = None
    kept: list[int] = []
    for predictor, weight in zip(source.members, source.weights, strict=True):
        result = predictor.predict_proba(paths)
        kept = list(result.kept)
        total = result.probabilities * weight if total is None else total + result.probabilities * weight
    assert total is not None  # members is never empty
    return total.astype(np.float32), kept


def parity_difference(run: ProbabilityRunner, check: CheckInputs) -> float:
    """Largest |difference| to PyTorch, for the whole batch and one image alone (the batch is dynamic)."""
    whole = run(check.images)
    single = run(check.images[:1])
    if whole.shape != check.expected.shape:
        return float("inf")
    return float(max(np.abs(whole - check.expected).max(), np.abs(single - check.expected[:1]).max()))
