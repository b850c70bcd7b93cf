"""Transfer Studio's engine: a Qt-free library for datasets, backbones, training and prediction.

Importing the package first makes torchvision importable on CPU-only torch builds
(see ``engine.torchvision_fix``), so that every submodule may import timm. The public
names below load their module on first use, so ``import engine`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from engine import torchvision_fix as _torchvision_fix

_torchvision_fix.apply()

_EXPORTS = {
    "engine.errors": ("TransferStudioError", "ConfigError", "DatasetError", "CheckpointError", "BackboneUnavailable"),
    "engine.config": ("RunConfig", "DataConfig", "ModelConfig", "OptimConfig", "AugmentConfig", "load_config",
                      "save_config", "to_yaml", "SearchConfig", "SearchParameter"),
    "engine.health": ("HealthReport", "Problem", "FileRecord", "scan_dataset", "ScanAborted"),
    "engine.prepare": ("PreparedDataset", "prepare_dataset", "split_records"),
    "engine.exclusions": ("load_exclusions", "save_exclusions", "apply_exclusions"),
    "engine.backbones": ("DataSettings", "BackboneInfo", "LoadedBackbone", "create_model", "describe_backbone",
                         "describe_stages", "list_backbones", "resolve_data_settings", "set_trainable_stages"),
    "engine.weights": ("WeightsProvider", "register_weights_provider", "get_weights_provider",
                       "list_weights_providers"),
    "engine.heads": ("create_head", "install_head", "head_signature", "rebuild_head"),
    "engine.schedules": ("create_scheduler", "register_schedule", "get_schedule", "list_schedules", "cycle_ends",
                         "scaled_learning_rate"),
    "engine.lr_finder": ("LRFinder", "LRFinderCurve", "LRFinderResult", "lr_range_test", "suggest_learning_rate",
                         "find_learning_rate"),
    "engine.sanity": ("SanityResult", "run_sanity_check", "sanity_config"),
    "engine.doctor": ("Diagnosis", "DoctorContext", "DoctorCheck", "create_doctor", "register_check", "get_check",
                      "list_checks"),
    "engine.loop": ("Loop", "LoopState", "Callback", "CancelBatch", "CancelEpoch", "CancelFit"),
    "engine.runfolder": ("RunFolder", "EventTail", "read_events"),
    "engine.checkpoint": ("Checkpoint", "load_checkpoint", "save_checkpoint", "read_checkpoint_metadata"),
    "engine.train": ("RunResult", "train", "resume"),
    "engine.predict": ("Prediction", "Predictor", "ProbabilityResult", "collect_image_paths",
                       "write_predictions_csv"),
    "engine.ensemble": ("Ensemble", "EnsembleManifest", "EnsembleMember", "build_manifest", "build_greedy_manifest",
                        "save_manifest", "load_manifest", "is_manifest", "load_probability_model",
                        "load_validation_split", "greedy_selection", "log_loss"),
    "engine.evaluate": ("Evaluation", "ClassMetrics", "TopLoss", "Unreadable", "evaluate", "evaluate_probabilities",
                        "evaluate_command", "rescaled"),
    "engine.calibration": ("ReliabilityBin", "TemperatureFit", "reliability_bins", "expected_calibration_error",
                           "fit_temperature", "apply_temperature", "calibrate", "save_temperature",
                           "temperature_from_metadata"),
    "engine.report": ("write_report", "describe_report"),
    "engine.export": ("ExportResult", "FormatExport", "ProbabilityGraph", "export_model", "export_ensemble",
                      "EXPORT_FORMATS", "PARITY_TOLERANCE"),
    "engine.export_formats": ("load_torchscript", "load_timm_folder", "read_onnx_metadata"),
    "engine.soup": ("SoupResult", "uniform_soup", "greedy_soup", "check_soup_members"),
    "engine.tta": ("TTA_MODES", "TestTimeAugmentation", "create_multicrop_transform"),
    "engine.gradcam": ("ActivationMap", "TargetLayer", "class_activation_map", "overlay", "find_target_layer"),
    "engine.search": ("SearchResult", "run_search", "check_search_settings"),
    "engine.search_space": ("default_space", "resolve_space", "SeededRandomSampler"),
    "engine.search_narrowing": ("FineSpace", "narrow_parameter", "narrow_space"),
    "engine.search_study": ("SearchStudy", "open_study", "resolve_storage"),
    "engine.search_trial": ("TrialReporter", "trial_config"),
    "engine.search_report": ("TrialRecord", "collect_trials", "write_search_report", "describe_search"),
    "engine.distributed": ("LaunchOptions", "DistributedContext", "distributed_session", "launch", "launch_training",
                           "torchrun_command", "worker_arguments", "launched_by_torchrun", "is_main_process"),
    "engine.catalog": ("ModelEntry", "list_models", "describe_checkpoint", "describe_manifest", "ensembles_folder"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
