"""The values a config field may choose from: fixed tuples, and the registries that extensions fill.

Schedules and doctor checks are extension points: ``optim.schedule`` and ``doctor.checks``
are validated against registries that ``engine.training`` fills, imported on their first
lookup (``engine.core.registry`` explains why they live here).
"""

from __future__ import annotations

from typing import Any

from engine.core.registry import Registry

SCHEMA_VERSION = 1
MODES = ("feature_extraction", "fine_tune", "two_stage")
DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_PRESETS = ("none", "light", "standard", "strong")
RANDOM_POLICIES = ("none", "randaugment", "trivialaugment")
HEADS = ("linear", "mlp")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu")
CLASS_BALANCE = ("none", "weighted_loss", "balanced_sampler")
MONITORS = ("val_top1", "val_loss")
SEARCH_SCALES = ("linear", "log")
SEARCH_METRICS = ("val_loss", "val_top1")
SEARCH_CHOICE_TYPES = bool | int | float | str
# Fields a search never samples: what it searches on, and the search itself.
UNSEARCHABLE = ("schema_version", "data.path", "search")

# Entries are schedule factories; engine.training.schedules registers them and types them.
SCHEDULES: Registry[Any] = Registry("schedule", field="optim.schedule", source="engine.training.schedules")
# Entries are DoctorCheck classes; those registered as default make doctor.checks' default.
DOCTOR_CHECKS: Registry[Any] = Registry("doctor check", field="doctor.checks", source="engine.training.doctor")
