"""The Optuna side of a search: storage URLs, the study and what it remembers, and where its stages stand.

A study stores the search's config and coarse space when it is created, the fine space
once the coarse stage has ended, and per trial its stage, run folder, worker and outcome.
Every process that joins it (a rerun, a ``--jobs`` worker, another machine) reads all of
that from the storage, so no process keeps state of its own and any of them can resume.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from engine.core.config import RunConfig, SearchParameter
from engine.core.errors import ConfigError
from engine.search.narrowing import FineSpace, config_check, narrow_space
from engine.search.space import resolve_space, space_from_dicts, space_to_dicts

STUDY_ATTR = "transfer_studio"
FINE_SPACE_ATTR = "fine_space"
STAGES = ("coarse", "fine")
# Settings that belong to a machine, not to the study: each worker uses its own.
LOCAL_FIELDS = ("data.path", "data.num_workers", "device")
# Settings a rerun may change: the stage budgets (to extend a study).
BUDGET_FIELDS = ("search.coarse_trials", "search.fine_trials")
# Trial outcomes that spend the budget; "interrupted" trials (stopped by a signal) and
# lost ones (their worker died) are run again.
COUNTED_OUTCOMES = ("complete", "pruned", "failed")
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0  # a running trial silent this long on another machine has lost its worker
DEFAULT_STORAGE_FILE = "study.db"  # in the search folder
STORAGE_ATTEMPTS = 5


def resolve_storage(spec: str | None, search_dir: Path) -> tuple[str, BaseStorage]:
    """Turn a storage argument into Optuna storage; returns the canonical URL and the storage.

    Accepted forms:

    - nothing: a SQLite file in the search folder, ``sqlite:///<search_dir>/study.db``;
    - any SQLAlchemy URL Optuna's ``RDBStorage`` takes: ``sqlite:///path.db``,
      ``postgresql://user:password@host/db``, ``mysql+pymysql://...`` (the driver must be
      installed); SQLite waits up to 60 s for a lock, so several processes on one machine
      can share a file (never put SQLite on a network disk: its locks are unreliable there);
    - a journal file, for several processes or machines without a database server:
      ``journal:/shared/disk/study.log``, ``journal:relative.log``, or any path ending in
      ``.log``; it becomes ``JournalStorage(JournalFileBackend(path))``, which locks with a
      symlink and so works on NFS;
    - a path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: that SQLite file.

    Raises:
        ConfigError: the URL cannot be opened (unknown scheme, missing driver, unreachable server).
    """
    if spec is None or not spec.strip():
        spec = f"sqlite:///{(search_dir / DEFAULT_STORAGE_FILE).resolve()}"
    spec = spec.strip()
    journal = spec.removeprefix("journal:") if spec.startswith("journal:") else None
    if journal is None and "://" not in spec and spec.endswith(".log"):
        journal = spec
    if journal is not None:
        path = Path(journal.removeprefix("//")).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"journal:{path}", JournalStorage(JournalFileBackend(str(path)))
    if "://" not in spec and spec.endswith((".db", ".sqlite", ".sqlite3")):
        spec = f"sqlite:///{Path(spec).expanduser().resolve()}"
    engine_kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite:///"):
        Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Concurrent writers wait for the lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 60}}
    attempts = 0
    while True:
        try:
            return spec, RDBStorage(spec, engine_kwargs=engine_kwargs)
        except (IntegrityError, OperationalError) as error:
            # Workers that open one new database together race to create Optuna's tables: the
            # losers find them made on the next try (measured: 2 of 3 lost on a fresh SQLite file).
            attempts += 1
            if attempts == STORAGE_ATTEMPTS:
                raise ConfigError(f"--storage: cannot open {spec!r} ({type(error).__name__}: {error})") from error
            time.sleep(0.5 * attempts)
        except (ImportError, ValueError, SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            raise ConfigError(f"--storage: cannot open {spec!r} ({type(error).__name__}: {error})") from error


@dataclass
class SearchStudy:
    """An opened study and everything the search keeps in it.

    Attributes:
        name: the study name.
        storage_url: the canonical storage URL (what other workers pass as ``--storage``).
        storage: the Optuna storage.
        config: the search's config, with this machine's local fields (``LOCAL_FIELDS``).
        coarse_space: the coarse stage's parameters.
        created: True when this call created the study.
    """

    name: str
    storage_url: str
    storage: BaseStorage
    config: RunConfig
    coarse_space: tuple[SearchParameter, ...]
    created: bool = False

    @property
    def direction(self) -> str:
        """``minimize`` for ``val_loss``, ``maximize`` for ``val_top1``."""
        return "minimize" if self.config.search.metric == "val_loss" else "maximize"

    def load(self, **options: Any) -> optuna.Study:
        """The Optuna study, with ``sampler=`` / ``pruner=`` as given."""
        return optuna.load_study(study_name=self.name, storage=self.storage, **options)

    def trials(self) -> list[FrozenTrial]:
        """Every trial, fresh from the storage."""
        return self.load().get_trials(deepcopy=False)

    def fine_space(self) -> FineSpace | None:
        """The fine space, once computed."""
        stored = self.load().user_attrs.get(FINE_SPACE_ATTR)
        return FineSpace.from_dict(stored) if stored else None


def open_study(
    name: str,
    storage_url: str,
    storage: BaseStorage,
    data: Path,
    config: RunConfig | None,
    *,
    trials: int | None = None,
    create: bool = True,
) -> SearchStudy:
    """Create the study, or load it and check that ``config`` still describes it.

    Args:
        name: study name.
        storage_url, storage: from ``resolve_storage``.
        data: this machine's dataset path.
        config: the search's config; None takes the stored one (or the defaults for a new study).
        trials: total budget, split over the stages (see ``split_budget``).
        create: False to refuse a study that does not exist yet (a worker that brings no config).

    Raises:
        ConfigError: ``config`` differs from the stored one in a field other than
            ``LOCAL_FIELDS`` and ``BUDGET_FIELDS``.
    """
    given = (config or RunConfig()).with_changes(**{"data.path": str(data)})
    if not create and name not in optuna.get_all_study_names(storage):
        raise ConfigError(f"--study: no study '{name}' in {storage_url}; start it first (without --worker), or give"
                          " the worker the search's --config")
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="minimize" if given.search.metric == "val_loss" else "maximize")
    stored = study.user_attrs.get(STUDY_ATTR)
    created = stored is None
    if created:
        study.set_user_attr(STUDY_ATTR, {"version": 1, "config": given.to_dict(),
                                         "space": space_to_dicts(resolve_space(given)),
                                         "created": datetime.now().isoformat(timespec="seconds")})
        stored = study.user_attrs[STUDY_ATTR]  # another worker may have been first: use what is stored
    stored_config = RunConfig.from_dict(stored["config"])
    if config is not None:
        _check_same_study(name, stored_config, given)
    source = given if config is not None else stored_config
    budget = {path: _get(source, path) for path in BUDGET_FIELDS}
    if trials is not None:
        budget = split_budget(trials, stored_config.with_changes(**budget),
                              fine_started=FINE_SPACE_ATTR in study.user_attrs)
    if any(_get(stored_config, path) != value for path, value in budget.items()):
        study.set_user_attr(STUDY_ATTR, {**stored, "config": stored_config.with_changes(**budget).to_dict()})
    local = {path: _get(source, path) for path in LOCAL_FIELDS}
    base = stored_config.with_changes(**{**local, **budget, "data.path": str(data)})
    return SearchStudy(name, storage_url, storage, base, space_from_dicts(stored["space"]), created)


def split_budget(total: int, config: RunConfig, *, fine_started: bool = False) -> dict[str, int]:
    """Split ``total`` trials over the stages in the config's coarse : fine proportion.

    Once the fine stage has begun the coarse stage is closed, so extra trials go to the fine stage.

    Raises:
        ConfigError: ``total`` is below 1 (or below the coarse trials, once the fine stage began).
    """
    search = config.search
    if total < 1:
        raise ConfigError(f"--trials: must be >= 1, got {total}")
    if fine_started:
        if total < search.coarse_trials:
            raise ConfigError(f"--trials: the fine stage has begun after {search.coarse_trials} coarse trials,"
                              f" so the study needs at least that many, got {total}")
        return {"search.coarse_trials": search.coarse_trials, "search.fine_trials": total - search.coarse_trials}
    share = search.coarse_trials / (search.coarse_trials + search.fine_trials)
    coarse = min(total, max(1, round(total * share)))
    return {"search.coarse_trials": coarse, "search.fine_trials": total - coarse}


def _check_same_study(name: str, stored: RunConfig, given: RunConfig) -> None:
    ignored = (*LOCAL_FIELDS, *BUDGET_FIELDS)
    differences = {path: pair for path, pair in _differences(stored.to_dict(), given.to_dict()).items()
                   if path not in ignored}
    if differences:
        (path, (old, new)), *others = differences.items()
        also = f" (also {', '.join(other for other, _ in others)})" if others else ""
        raise ConfigError(f"{path}: study '{name}' was created with {old!r}, not {new!r}{also}; drop the change"
                          " (a rerun without --config or --set keeps the study's config), or start a new study"
                          " (--study NEW_NAME)")


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    found: dict[str, tuple[Any, Any]] = {}
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            found[f"{prefix}{key}"] = (a, b)
    return dict(sorted(found.items()))


def _get(config: RunConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


# --- where the stages stand ----------------------------------------------------------------------------


def stage_of(trial: FrozenTrial) -> str | None:
    """The stage a trial ran in (None for one just asked for, or enqueued and waiting)."""
    return trial.user_attrs.get("stage")


def counts(trial: FrozenTrial) -> bool:
    """True when a finished trial spends its stage's budget (see ``COUNTED_OUTCOMES``)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("outcome") in COUNTED_OUTCOMES


def plan_next(trials: Sequence[FrozenTrial], config: RunConfig) -> str:
    """What a worker should do next: ``coarse`` or ``fine`` (start a trial of that stage),
    ``wait`` (the coarse stage is spent but some of its trials still run), ``finishing``
    (nothing left to start, trials still running) or ``done``.

    A running trial without a stage has just been asked for; it belongs to the coarse
    stage while that has room, else to the fine stage.
    """
    search = config.search
    running = [trial for trial in trials if trial.state == TrialState.RUNNING]
    coarse_done = sum(1 for trial in trials if stage_of(trial) == "coarse" and counts(trial))
    unlabelled = sum(1 for trial in running if stage_of(trial) is None)
    coarse_running = sum(1 for trial in running if stage_of(trial) == "coarse")
    if coarse_done + coarse_running + unlabelled < search.coarse_trials:
        return "coarse"
    if coarse_done < search.coarse_trials:
        return "wait"
    fine_done = sum(1 for trial in trials if stage_of(trial) == "fine" and counts(trial))
    fine_running = sum(1 for trial in running if stage_of(trial) == "fine") + unlabelled
    if fine_done + fine_running < search.fine_trials:
        return "fine"
    return "finishing" if running else "done"


def lost_trials(trials: Sequence[FrozenTrial], *, now: float | None = None) -> list[FrozenTrial]:
    """Running trials whose worker is gone: a process of this machine that no longer exists,
    or silence (no heartbeat) for ``STALE_SECONDS``."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    lost = []
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        attrs = trial.user_attrs
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        silent = now - float(attrs.get("heartbeat", started))
        if silent > STALE_SECONDS or (attrs.get("host") == host and "pid" in attrs and not _alive(attrs["pid"])):
            lost.append(trial)
    return lost


def fail_lost_trials(study: optuna.Study) -> list[int]:
    """Mark lost trials (see ``lost_trials``) as failed; returns their numbers.

    They carry no outcome, so they do not spend the budget: their stage runs another trial.
    """
    failed = []
    for trial in lost_trials(study.get_trials(deepcopy=False)):
        # It may have finished since it was read, or another worker marked it first.
        with contextlib.suppress(ValueError, RuntimeError):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _alive(pid: Any) -> bool:
    if os.name != "posix":
        return True  # no harmless probe elsewhere (signal 0 is CTRL_C_EVENT on Windows): trust the heartbeat
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process took the number: ours is gone, but be careful
    return True


def ensure_fine_space(study: optuna.Study, search: SearchStudy) -> tuple[FineSpace, bool]:
    """The fine space: read from the study, or computed from the finished coarse stage and stored.

    Every worker must draw from one fine space, so it is computed once and kept as a study
    attribute. Two workers that reach this together compute the same space from the same
    trials, so whichever write lands last changes nothing.

    Returns:
        The fine space, and True when this call computed it.
    """
    stored = study.user_attrs.get(FINE_SPACE_ATTR)
    if stored:
        return FineSpace.from_dict(stored), False
    config = search.config
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if stage_of(trial) == "coarse" and trial.value is not None and math.isfinite(trial.value)]
    complete.sort(key=lambda trial: trial.value if search.direction == "minimize" else -trial.value)
    top = complete[: config.search.top_k]
    if top:
        fine = narrow_space(search.coarse_space, [trial.params for trial in top], config.search,
                            top_trials=[trial.number for trial in top], check=config_check(config))
    else:
        fine = FineSpace(search.coarse_space, ("no coarse trial completed, so the fine stage keeps the coarse ranges",))
    study.set_user_attr(FINE_SPACE_ATTR, fine.to_dict())
    return FineSpace.from_dict(study.user_attrs[FINE_SPACE_ATTR]), True
