"""The one run configuration, shared by the CLI, the GUI forms and every run folder.

Frozen dataclasses with a help text per field (``sections``, ``run``), ``to_dict``/``from_dict``
built on a small typed schema (``schema``), YAML round-trip (``files``) and validation whose
messages start with the field path, e.g. ``optim.learning_rate: must be > 0, got -1``. The
choices of a field are fixed tuples or, for extension points, registries (``choices``).
"""

from engine.core.config.choices import (
    ACTIVATIONS,
    AUGMENT_PRESETS,
    CLASS_BALANCE,
    DEVICES,
    DOCTOR_CHECKS,
    HEADS,
    MODES,
    MONITORS,
    RANDOM_POLICIES,
    SCHEDULES,
    SCHEMA_VERSION,
    SEARCH_CHOICE_TYPES,
    SEARCH_METRICS,
    SEARCH_SCALES,
    UNSEARCHABLE,
)
from engine.core.config.files import load_config, parse_override, save_config, to_yaml
from engine.core.config.run import RunConfig, field_type, numeric_kind, validate
from engine.core.config.sections import (
    AugmentConfig,
    DataConfig,
    DoctorConfig,
    ModelConfig,
    OptimConfig,
    SearchConfig,
    SearchParameter,
)

__all__ = [
    "ACTIVATIONS", "AUGMENT_PRESETS", "CLASS_BALANCE", "DEVICES", "DOCTOR_CHECKS", "HEADS", "MODES", "MONITORS",
    "RANDOM_POLICIES", "SCHEDULES", "SCHEMA_VERSION", "SEARCH_CHOICE_TYPES", "SEARCH_METRICS", "SEARCH_SCALES",
    "UNSEARCHABLE", "AugmentConfig", "DataConfig", "DoctorConfig", "ModelConfig", "OptimConfig", "RunConfig",
    "SearchConfig", "SearchParameter", "field_type", "load_config", "numeric_kind", "parse_override", "save_config",
    "to_yaml", "validate",
]
