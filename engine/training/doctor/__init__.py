"""The training doctor: checks that watch a run for known failure patterns and explain what they see.

A check is a loop ``Callback`` (``check.DoctorCheck``) that watches a run for one known
failure pattern (the lessons of CS231n's "Training Neural Networks") and, when it sees it,
raises a ``Diagnosis``: what was seen, in plain language and with its numbers, and the
config change that would fix it. Diagnoses become ``diagnosis_raised`` events; measurements
the GUI can plot become ``*_measured`` events. Each built-in check is one module of
``checks/`` that registers itself (``registry``); ``create_doctor`` builds those a config names.
"""

from engine.training.doctor import checks  # noqa: F401 (registers the built-in checks)
from engine.training.doctor.check import DoctorCheck, DoctorContext, Reporter
from engine.training.doctor.diagnosis import DIAGNOSIS_EVENT, SEVERITIES, Diagnosis, json_safe
from engine.training.doctor.registry import create_doctor, get_check, list_checks, register_check

__all__ = [
    "DIAGNOSIS_EVENT", "SEVERITIES", "Diagnosis", "DoctorCheck", "DoctorContext", "Reporter", "create_doctor",
    "get_check", "json_safe", "list_checks", "register_check",
]
