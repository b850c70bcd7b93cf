"""An export folder as a model to predict and evaluate with: the very artefact a user deploys, run in its
own runtime (onnxruntime, OpenVINO, TorchScript...) with the preprocessing its ``metadata.json`` records.

Any path ``engine.export.export_folders.export_folder_of`` accepts names an export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from augment import create_eval_transform, eval_source_side
from engine.core.errors import CheckpointError, ConfigError
from engine.data.settings import DataSettings
from engine.evaluation.predict import batched_probabilities, stack_transformed
from engine.evaluation.predictions import ProbabilityResult, TopKPredictions
from engine.export.export_folders import export_folder_of, read_export_metadata
from engine.export.formats import METADATA_FILE, get_export_format
from engine.export.formats.base import one_line


class ExportedModel(TopKPredictions):
    """An export loaded in its own runtime, usable wherever a ``Predictor`` is (predict, evaluate, live video).

    Its probabilities are the export's outputs: a temperature saved with the checkpoint is inside
    the exported graph already.

    Args:
        path: the export (see the module docstring).
        threads: CPU threads for a runtime of its own; None: the runtime's default.

    Raises:
        CheckpointError: nothing exported there, damaged metadata, a format this machine cannot run
            (Core ML off macOS) or whose package is missing (with the install command), or a model
            its runtime cannot load.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        folder = export_folder_of(path)
        if folder is None:
            raise CheckpointError(f"{path}: no export there (expected a folder main.py export wrote, such as "
                                  "OUT/onnx with a metadata.json)")
        self.folder = folder
        self.metadata = read_export_metadata(folder / METADATA_FILE)
        name = str(self.metadata.get("export_format") or folder.name)
        try:
            export_format = get_export_format(name)
            self.data_settings = DataSettings.from_dict(
                {key: value for key, value in self.metadata["preprocessing"].items() if key != "steps"})
        except (ConfigError, AttributeError) as error:
            raise CheckpointError(f"{folder / METADATA_FILE}: {error}") from error
        reason = export_format.not_runnable_here()
        if reason is not None:
            raise CheckpointError(f"{folder}: the {export_format.title or name} export cannot run here: {reason}")
        export_format.require()
        self.format = name
        self.title = export_format.title or name
        self.classes: list[str] = [str(label) for label in self.metadata["labels"]]
        # Named like a Predictor's, for reports and the pages that show where a model came from.
        self.checkpoint_path = folder
        self.transform = create_eval_transform(self.data_settings)
        model_path = export_format.model_path(folder)
        try:
            self.runner = export_format.load(model_path, threads=threads)
        except Exception as error:  # noqa: BLE001  any runtime's load failure: one line, naming the file
            raise CheckpointError(f"{model_path}: the {self.title} runtime cannot load it ({one_line(error)})") \
                from error

    def predict_proba(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> ProbabilityResult:
        """Probabilities of every file that decodes, run through the export's runtime."""
        return batched_probabilities(paths, self.transform, self._batch_probabilities, len(self.classes),
                                     batch_size=batch_size, progress=progress,
                                     min_side=eval_source_side(self.data_settings))

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, C)`` float32 probabilities of decoded images (video frames)."""
        return self._run(stack_transformed(images, self.transform))

    def _batch_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(images))

    def _run(self, images: torch.Tensor) -> np.ndarray:
        return np.asarray(self.runner(np.ascontiguousarray(images.numpy(), dtype=np.float32)), dtype=np.float32)
