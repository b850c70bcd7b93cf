"""The doctor's registry of checks (``register_check``, ``get_check``, ``list_checks``) and ``create_doctor``.

The registry itself is ``engine.core.config.DOCTOR_CHECKS``, so that the config validates
``doctor.checks`` and takes its default from the checks registered as default.
"""

from __future__ import annotations

from typing import cast

from engine.core.config import DOCTOR_CHECKS, RunConfig
from engine.training.doctor.check import DoctorCheck, DoctorContext


def register_check(check: type[DoctorCheck]) -> type[DoctorCheck]:
    """Add a check class to the registry under its ``name`` (usable as a class decorator).

    A check with ``default = True`` joins the default of ``doctor.checks``; any other runs
    where a config names it.

    Raises:
        ValueError: the class has no ``name``, or another class has the same name.
    """
    if not check.name:
        raise ValueError(f"doctor check {check.__qualname__} has no name")
    return cast(type[DoctorCheck], DOCTOR_CHECKS.register(check.name, check, default=check.default))


def get_check(name: str) -> type[DoctorCheck]:
    """Return the check class registered as ``name``.

    Raises:
        ConfigError: no check has this name (the message lists them and suggests the closest).
    """
    return cast(type[DoctorCheck], DOCTOR_CHECKS.get(name))


def list_checks() -> list[type[DoctorCheck]]:
    """Every registered check class: the built-in ones in their standard order, then added ones."""
    return [get_check(name) for name in DOCTOR_CHECKS.names()]


def create_doctor(config: RunConfig, context: DoctorContext) -> list[DoctorCheck]:
    """The checks ``config.doctor.checks`` names, ready to pass to the loop as callbacks.

    Returns:
        One instance per named check (duplicates once), in the config's order; empty
        when ``doctor.enabled`` is false.

    Raises:
        ConfigError: a name is not a registered check.
    """
    if not config.doctor.enabled:
        return []
    classes = [get_check(name) for name in dict.fromkeys(config.doctor.checks)]
    return [check(context) for check in classes]
