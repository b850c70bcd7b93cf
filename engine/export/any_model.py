"""Any model a user can name, loaded for prediction or evaluation: a checkpoint, a run folder, an ensemble
manifest, or an export folder (the artefact they deploy, in its own runtime).

The dispatch lives here, above ``engine.evaluation``, because only the export layer knows exports.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import ConfigError
from engine.evaluation.ensemble import load_probability_model
from engine.evaluation.evaluate import (
    TOP_LOSSES,
    LoadedModel,
    Progress,
    check_evaluation_options,
    data_config_of,
    evaluate_loaded,
    load_for_evaluation,
)
from engine.evaluation.predictions import ProbabilityModel
from engine.evaluation.tta import check_tta_mode
from engine.export.export_folders import is_export
from engine.export.exported_model import ExportedModel

__all__ = ["evaluate_any_model", "load_any_model"]


def load_any_model(path: str | Path, *, device: str = "auto", tta: str = "none") -> ProbabilityModel:
    """An ``ExportedModel`` for an export, else what ``load_probability_model`` gives (checkpoint, ensemble).

    Raises:
        CheckpointError: nothing loadable at ``path``.
        ConfigError: an unknown ``tta`` mode, or TTA asked of an export.
    """
    check_tta_mode(tta)
    if is_export(path):
        _refuse_tta(tta)
        return ExportedModel(path)
    return load_probability_model(path, device=device, tta=tta)


def evaluate_any_model(
    model_path: str | Path,
    data_path: str | Path,
    *,
    split: str = "val",
    out_dir: str | Path | None = None,
    fit_temperature: bool = False,
    top_losses: int = TOP_LOSSES,
    tta: str = "none",
    device: str = "auto",
    progress: Progress | None = None,
) -> Path:
    """``engine.evaluation.evaluate.evaluate_command`` for any model, exports included; returns the report folder.

    An export is split with the split settings of the run it came from (saved in its metadata), so
    ``val`` means the images its checkpoint was validated on.
    """
    check_tta_mode(tta)
    check_evaluation_options(split, top_losses)
    path = Path(model_path)
    if is_export(path):
        _refuse_tta(tta)
        loaded = _loaded_export(path)
    else:
        loaded = load_for_evaluation(path, device, tta)
    return evaluate_loaded(loaded, data_path, split=split, out_dir=out_dir, fit_temperature=fit_temperature,
                           top_losses=top_losses, tta=tta, progress=progress)


def _loaded_export(path: Path) -> LoadedModel:
    model = ExportedModel(path)
    metadata_file = model.folder / "metadata.json"
    data_config = data_config_of({"config": model.metadata["training_config"]}, metadata_file) \
        if model.metadata.get("training_config") else data_config_of({}, metadata_file)
    notes = [f"The {model.title} export {model.folder} was evaluated in its own runtime, with the preprocessing "
             "its metadata records: these are the scores of the file you deploy."]
    if not model.metadata.get("training_config"):
        notes.append("Its metadata records no training config, so the images were split with the default "
                     "split settings; they may include images its model trained on.")
    return LoadedModel(model, model.folder, data_config, None, 1.0, tuple(notes),
                       "an export's model is fixed once written (export again from the calibrated checkpoint)")


def _refuse_tta(tta: str) -> None:
    if tta != "none":
        raise ConfigError(f"tta: an export is evaluated as it is deployed, without test-time augmentation "
                          f"(got {tta!r}; use the checkpoint it came from for TTA)")
