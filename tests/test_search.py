"""Hyperparameter search: coarse-to-fine on real photos, pruning, parallel workers, resume, and the pure parts."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from demo_photos import copy_demo
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from engine.core.config import RunConfig, SearchParameter, load_config, save_config, to_yaml
from engine.core.errors import ConfigError
from engine.search.folders import searches_dir
from engine.search.narrowing import config_check, narrow_parameter, narrow_space
from engine.search.run import check_search_settings, run_search
from engine.search.sampling import SeededRandomSampler, draw
from engine.search.space import default_space
from engine.search.study import (
    lost_trials,
    open_study,
    plan_next,
    resolve_storage,
    split_budget,
)
from engine.training.runfolder import read_events
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY_SEARCH = {
    "data.num_workers": 0, "optim.batch_size": 8, "search.coarse_trials": 4, "search.coarse_epochs": 1,
    "search.fine_trials": 2, "search.fine_epochs": 2, "search.top_k": 2,
}


def tiny_config(**changes: object) -> RunConfig:
    return RunConfig().with_changes(**{**TINY_SEARCH, **changes})


def numeric_ranges(space: list[dict]) -> dict[str, dict]:
    return {item["path"]: item for item in space if item["choices"] is None}


# --- end to end on real photos ----------------------------------------------------------------------------


@pytest.mark.slow
def test_coarse_to_fine_search_narrows_prunes_a_divergent_trial_and_its_best_config_trains(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data")
    echo = io.StringIO()
    result = run_search(data, tiny_config(), study="tiny", enqueue=[{"optim.learning_rate": 30.0}], echo=echo)

    assert result.state == "finished"
    assert [record.stage for record in result.trials] == ["coarse"] * 4 + ["fine"] * 2
    diverged = result.trials[0]  # the enqueued trial runs first
    assert diverged.params["optim.learning_rate"] == 30.0
    assert diverged.state == "pruned" and diverged.reason.startswith("diverged: The training loss reached")
    assert all(record.state == "complete" for record in result.trials[1:])

    report = json.loads((result.folder / "trials.json").read_text())
    coarse, fine = numeric_ranges(report["coarse_space"]), numeric_ranges(report["fine_space"]["parameters"])
    top = [record for record in result.trials if record.number in report["fine_space"]["top_trials"]]
    assert len(top) == 2 and all(record.stage == "coarse" and record.state == "complete" for record in top)
    notes = report["fine_space"]["notes"]
    for path, wide in coarse.items():
        narrow = fine[path]
        values = [record.params[path] for record in top]
        assert narrow["low"] <= min(values) and max(values) <= narrow["high"]  # around the top trials
        below, above = narrow["low"] < wide["low"], narrow["high"] > wide["high"]
        assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"] or below or above
        for side, beyond in (("low", below), ("high", above)):
            # Beyond the coarse range only on a side where the best lay at the edge, which the report says.
            assert beyond == any(note.startswith(f"{path}:") and f"widens the {side} side" in note for note in notes)
    for record in result.trials[4:]:
        for path, value in record.params.items():
            assert fine[path]["low"] <= value <= fine[path]["high"]

    for record in result.trials:  # every trial is a normal run folder, reproducible by itself
        run_dir = Path(record.run_dir)
        assert json.loads((run_dir / "trial.json").read_text())["trial"] == record.number
        trial_config = load_config(run_dir / "config.yaml")
        assert trial_config.optim.learning_rate == pytest.approx(record.params["optim.learning_rate"])
        assert trial_config.optim.epochs == (1 if record.stage == "coarse" else 2)
        assert "divergence" in trial_config.doctor.checks and trial_config.search == RunConfig().search

    events = read_events(result.folder / "events.jsonl")
    names = [event["event"] for event in events]
    assert names[:2] == ["search_started", "stage_started"] and names[-1] == "search_finished"
    assert names.count("trial_finished") == 6 and names.index("stage_started", 2) == 10  # after 4 coarse trials
    assert events[10]["stage"] == "fine" and events[10]["notes"] == notes
    assert [json.loads(line) for line in echo.getvalue().splitlines()] == events

    csv_rows = (result.folder / "trials.csv").read_text().splitlines()
    assert len(csv_rows) == 7 and csv_rows[0].startswith("trial,stage,state,val_loss,seconds,reason")
    for png in ["history", *coarse]:
        assert (result.folder / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = result.report.read_text()
    assert "0 (coarse, pruned): diverged" in summary and f"best: trial {result.best.number}" in summary

    best = load_config(result.best_config)
    assert best.optim.learning_rate == pytest.approx(result.best.params["optim.learning_rate"])
    trained = train(best.with_changes(**{"data.path": str(data)}), tmp_path / "with-best")
    assert trained.state == "finished" and trained.best_checkpoint is not None


@pytest.mark.slow
def test_two_workers_started_separately_complete_distinct_trials_of_one_study(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data")
    config_file = save_config(tiny_config(**{"search.coarse_trials": 5, "search.fine_trials": 1,
                                             "search.fine_epochs": 1}), tmp_path / "search.yaml")
    storage = f"journal:{tmp_path / 'shared' / 'study.log'}"
    worker = ("import sys; from engine.core.config import load_config; from engine.search.run import run_search;"
              "run_search(sys.argv[1], load_config(sys.argv[2]), study='shared', storage=sys.argv[3], worker=True)")
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-c", worker, str(data), str(config_file), storage], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=240) for process in processes]
    seconds = time.monotonic() - started
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr

    _, optuna_storage = resolve_storage(storage, tmp_path)
    trials = optuna.load_study(study_name="shared", storage=optuna_storage).get_trials()
    assert len(trials) >= 6 and len({trial.number for trial in trials}) == len(trials)  # a race may add one
    assert all(trial.state == TrialState.COMPLETE for trial in trials)
    assert len({trial.user_attrs["pid"] for trial in trials}) == 2, "both workers ran trials"
    assert sum(trial.user_attrs["stage"] == "fine" for trial in trials) >= 1
    run_dirs = {trial.user_attrs["run_dir"] for trial in trials}
    assert len(run_dirs) == len(trials) and all(Path(run_dir, "config.yaml").is_file() for run_dir in run_dirs)
    assert (searches_dir(data) / "shared" / "report.txt").is_file()  # the worker that finished last wrote it
    print(f"two workers, {len(trials)} trials: {seconds:.1f} s")


class StopAfterFirstTrial(io.StringIO):
    """An event stream (as the GUI reads) that presses Stop once the first trial has finished."""

    def __init__(self, search_folder: Path) -> None:
        super().__init__()
        self.search_folder = search_folder

    def write(self, text: str) -> int:
        if json.loads(text)["event"] == "trial_finished":
            (self.search_folder / "STOP").write_text("stop\n")
        return super().write(text)


@pytest.mark.slow
def test_a_stopped_search_resumes_with_parallel_jobs(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data")
    config = tiny_config(**{"search.coarse_trials": 3, "search.fine_trials": 1, "search.fine_epochs": 1})
    folder = searches_dir(data) / "resumable"
    first = run_search(data, config, study="resumable", echo=StopAfterFirstTrial(folder))
    assert first.state == "stopped" and len(first.trials) == 1 and (folder / "report.txt").is_file()
    first_run = Path(first.trials[0].run_dir)
    stamp = (first_run / "status.json").stat().st_mtime_ns

    echo = io.StringIO()
    resumed = run_search(data, study="resumable", jobs=2, echo=echo)  # the stored config, the default storage
    assert resumed.state == "finished" and not (folder / "STOP").exists()
    assert [record.number for record in resumed.trials] == [0, 1, 2, 3], resumed.trials
    assert [record.stage for record in resumed.trials] == ["coarse"] * 3 + ["fine"]
    assert (first_run / "status.json").stat().st_mtime_ns == stamp  # trial 0 was not run again
    followed = [json.loads(line) for line in echo.getvalue().splitlines()]
    assert followed[0]["event"] == "search_started" and followed[0]["resumed"] and followed[0]["jobs"] == 2
    assert sorted(event["number"] for event in followed if event["event"] == "trial_finished") == [1, 2, 3]
    assert followed[-1]["event"] == "search_finished"


def test_a_refused_combination_is_recorded_as_a_failed_trial(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", per_class=5)
    space = [{"path": "optim.learning_rate", "low": 1e-3, "high": 0.1, "scale": "log"},
             {"path": "optim.min_learning_rate", "low": 1e-6, "high": 1e-2, "scale": "log"}]
    config = tiny_config(**{"search.space": space, "search.coarse_trials": 1, "search.fine_trials": 0,
                            "optim.learning_rate": 0.1})
    result = run_search(data, config, study="refused",
                        enqueue=[{"optim.learning_rate": 1e-3, "optim.min_learning_rate": 1e-2}])
    (record,) = result.trials
    assert record.state == "failed"
    assert record.reason.startswith("config refused: optim.min_learning_rate: must be in [0, optim.learning_rate")
    assert result.state == "finished" and result.best is None and result.best_config is None
    assert "no trial completed yet" in result.report.read_text()


def test_a_study_refuses_a_different_config_but_takes_a_bigger_budget(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", per_class=2)
    url, storage = resolve_storage(str(tmp_path / "study.log"), tmp_path)
    assert url == f"journal:{tmp_path / 'study.log'}"
    created = open_study("s", url, storage, data, tiny_config())
    assert created.created and created.coarse_space == default_space(created.config)
    with pytest.raises(ConfigError, match=r"^optim.weight_decay: study 's' was created with 0.01, not 0.1;"):
        open_study("s", url, storage, data, tiny_config(**{"optim.weight_decay": 0.1}))
    grown = open_study("s", url, storage, data, None, trials=12)
    assert not grown.created and (grown.config.search.coarse_trials, grown.config.search.fine_trials) == (8, 4)
    assert open_study("s", url, storage, data, None).config.search.fine_trials == 4  # stored for every worker
    local = open_study("s", url, storage, tmp_path, tiny_config(**{"data.num_workers": 3, "search.fine_trials": 4,
                                                                    "search.coarse_trials": 8}))
    assert local.config.data.path == str(tmp_path) and local.config.data.num_workers == 3
    with pytest.raises(ConfigError, match=r"^--study: no study 'other' in journal:.*; start it first"):
        open_study("other", url, storage, data, None, create=False)


# --- the pure parts ---------------------------------------------------------------------------------------


def test_narrowing_on_a_log_scale_stays_around_the_top_trials() -> None:
    rate = SearchParameter("optim.learning_rate", low=1e-4, high=1e-1, scale="log")
    narrowed = narrow_parameter(rate, [3e-3, 1e-3, 8e-3], edge_fraction=0.1, widen_fraction=0.25)
    low, high = narrowed.parameter.low, narrowed.parameter.high
    margin = 0.05 * 3  # of the coarse width, in decades
    assert math.log10(low) == pytest.approx(math.log10(1e-3) - margin)
    assert math.log10(high) == pytest.approx(math.log10(8e-3) + margin)
    assert narrowed.edge is None and narrowed.note is None and narrowed.parameter.scale == "log"


def test_a_best_value_at_the_edge_widens_that_side_and_says_so() -> None:
    rate = SearchParameter("optim.learning_rate", low=1e-4, high=1e-1, scale="log")
    narrowed = narrow_parameter(rate, [0.09, 0.01], edge_fraction=0.1, widen_fraction=0.25,
                                check=config_check(RunConfig()))
    assert narrowed.edge == "high"
    assert math.log10(narrowed.parameter.high) == pytest.approx(-1 + 0.25 * 3)  # a quarter of 3 decades past 0.1
    assert narrowed.parameter.low == pytest.approx(10 ** (math.log10(0.01) - 0.15))
    assert narrowed.note.startswith("optim.learning_rate: the best coarse value 0.09 lies in the highest 10% of its"
                                    " range [0.0001, 0.1] (log scale); the fine stage widens the high side to 0.562")


def test_widening_stops_where_the_config_refuses() -> None:
    check = config_check(RunConfig())
    smoothing = SearchParameter("optim.label_smoothing", low=0.0, high=0.2)
    at_zero = narrow_parameter(smoothing, [0.005, 0.1], edge_fraction=0.1, widen_fraction=0.25, check=check)
    assert at_zero.edge == "low" and at_zero.parameter.low == 0.0
    assert at_zero.note.endswith("cannot widen that side, because optim.label_smoothing: must be in [0, 1),"
                                 " got -0.05.")
    near_one = narrow_parameter(SearchParameter("optim.label_smoothing", low=0.0, high=0.9), [0.89], check=check,
                                edge_fraction=0.1, widen_fraction=0.25)
    assert 0.9 < near_one.parameter.high < 1.0 and "as far as the config allows" in near_one.note
    mixup = narrow_parameter(SearchParameter("augment.mixup_alpha", low=0.05, high=0.4), [0.06], check=check,
                             edge_fraction=0.1, widen_fraction=0.25)
    assert mixup.parameter.low == 0.0  # the bisection lands on the limit itself, not a hair above it
    stages = narrow_parameter(SearchParameter("model.trainable_stages", low=0, high=4), [0, 2], check=check,
                              edge_fraction=0.1, widen_fraction=0.25)
    assert stages.parameter.low == 0 and "stays >= 0" in stages.note  # -1 would mean "every stage", not fewer


def test_whole_numbers_and_choices_narrow_to_what_the_top_trials_used() -> None:
    stages = SearchParameter("model.trainable_stages", low=0, high=6)
    assert narrow_parameter(stages, [3, 2], edge_fraction=0.1, widen_fraction=0.25).parameter.low == 2
    widened = narrow_parameter(stages, [6, 4], edge_fraction=0.1, widen_fraction=0.25)
    assert (widened.parameter.low, widened.parameter.high, widened.edge) == (4, 8, "high")
    preset = SearchParameter("augment.preset", choices=("none", "light", "standard", "strong"))
    assert narrow_parameter(preset, ["strong", "light", "strong"], edge_fraction=0.1,
                            widen_fraction=0.25).parameter.choices == ("light", "strong")
    fine = narrow_space([preset, stages], [{"augment.preset": "light", "model.trainable_stages": 6}],
                        RunConfig().search, top_trials=[7])
    assert fine.top_trials == (7,) and len(fine.notes) == 1 and fine.notes[0].startswith("model.trainable_stages")


def test_draws_depend_on_seed_trial_and_name_only_and_keep_to_the_distribution() -> None:
    sampler = SeededRandomSampler(seed=3, allowed_choices={"augment.preset": ["light"]})
    study = optuna.create_study(sampler=sampler)
    rate = FloatDistribution(1e-4, 1e-1, log=True)
    first, again = (sampler.sample_independent(study, create_trial(state=TrialState.RUNNING), "lr", rate)
                    for _ in range(2))
    assert first == again
    values = [draw(rate, np.random.default_rng(seed)) for seed in range(400)]
    assert min(values) >= 1e-4 and max(values) <= 1e-1
    assert 0.4 < np.mean(np.log10(values) < -2.5) < 0.6  # uniform in the logarithm: half below the middle decade
    stages = [draw(IntDistribution(1, 4), np.random.default_rng(seed)) for seed in range(400)]
    assert sorted(set(stages)) == [1, 2, 3, 4] and min(np.bincount(stages)[1:]) > 70
    choices = CategoricalDistribution(("none", "light", "strong"))
    assert {draw(choices, np.random.default_rng(seed), allowed=("light",)) for seed in range(20)} == {"light"}


def trial(state: TrialState, stage: str | None, **attrs: object) -> optuna.trial.FrozenTrial:
    value = 1.0 if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, user_attrs={**({"stage": stage} if stage else {}), **attrs})


def test_stage_progress_comes_from_the_stored_trials() -> None:
    config = RunConfig().with_changes(**{"search.coarse_trials": 2, "search.fine_trials": 1})
    complete, running = TrialState.COMPLETE, TrialState.RUNNING
    assert plan_next([], config) == "coarse"
    assert plan_next([trial(complete, "coarse"), trial(running, None)], config) == "wait"
    assert plan_next([trial(complete, "coarse"), trial(TrialState.PRUNED, "coarse")], config) == "fine"
    interrupted = trial(TrialState.FAIL, "coarse", outcome="interrupted")
    lost = trial(TrialState.FAIL, "coarse")  # failed without an outcome: its worker died
    assert plan_next([trial(complete, "coarse"), interrupted, lost], config) == "coarse"  # both run again
    refused = trial(TrialState.FAIL, "coarse", outcome="failed")
    assert plan_next([trial(complete, "coarse"), refused, trial(running, "fine")], config) == "finishing"
    assert plan_next([trial(complete, "coarse"), refused, trial(complete, "fine")], config) == "done"


def test_a_running_trial_is_lost_when_its_process_is_gone_or_silent() -> None:
    import os
    import socket

    here = socket.gethostname()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    gone = trial(TrialState.RUNNING, "coarse", host=here, pid=int(finished.stdout), heartbeat=time.time())
    alive = trial(TrialState.RUNNING, "coarse", host=here, pid=os.getpid(), heartbeat=time.time())
    silent = trial(TrialState.RUNNING, "fine", host="elsewhere", pid=1, heartbeat=time.time() - 3600)
    assert lost_trials([gone, alive, silent, trial(TrialState.COMPLETE, "coarse")]) == [gone, silent]


def test_storage_forms(tmp_path: Path) -> None:
    url, storage = resolve_storage(None, tmp_path / "search")
    assert url == f"sqlite:///{tmp_path / 'search' / 'study.db'}" and isinstance(storage, optuna.storages.RDBStorage)
    assert resolve_storage("journal:" + str(tmp_path / "j" / "a.log"), tmp_path)[0] == f"journal:{tmp_path}/j/a.log"
    assert resolve_storage(str(tmp_path / "b.db"), tmp_path)[0] == f"sqlite:///{tmp_path / 'b.db'}"
    with pytest.raises(ConfigError, match=r"^--storage: cannot open 'nosuchdb://x'"):
        resolve_storage("nosuchdb://x", tmp_path)


def test_budget_split_keeps_the_stage_proportion() -> None:
    config = RunConfig()  # 20 coarse : 10 fine
    assert split_budget(30, config) == {"search.coarse_trials": 20, "search.fine_trials": 10}
    assert split_budget(6, config) == {"search.coarse_trials": 4, "search.fine_trials": 2}
    assert split_budget(1, config) == {"search.coarse_trials": 1, "search.fine_trials": 0}
    assert split_budget(25, config, fine_started=True) == {"search.coarse_trials": 20, "search.fine_trials": 5}
    with pytest.raises(ConfigError, match="--trials: the fine stage has begun after 20 coarse trials"):
        split_budget(10, config, fine_started=True)


def test_default_spaces_follow_the_mode() -> None:
    extraction = [item.path for item in default_space(RunConfig())]
    assert extraction == ["optim.learning_rate", "optim.weight_decay", "optim.label_smoothing", "augment.mixup_alpha"]
    fine_tune = default_space(RunConfig().with_changes(**{"model.mode": "fine_tune"}))
    assert [item.path for item in fine_tune][-2:] == ["model.trainable_stages", "augment.preset"]
    views = default_space(RunConfig().with_changes(**{"augment.feature_views": 3}))
    assert views[-1].choices == ("light", "standard", "strong")  # cached views are augmented: never "none"


def test_search_section_round_trips_and_old_files_still_load(tmp_path: Path) -> None:
    space = [{"path": "optim.learning_rate", "low": 1e-4, "high": 0.1, "scale": "log"},
             {"path": "augment.preset", "choices": ["light", "strong"]},
             {"path": "model.head_batchnorm", "choices": [True, False]},
             {"path": "model.trainable_stages", "low": 1, "high": 4}]
    config = RunConfig().with_changes(**{"search.space": space, "search.metric": "val_top1"})
    assert config.search.space[1] == SearchParameter("augment.preset", choices=("light", "strong"))
    assert load_config(save_config(config, tmp_path / "c.yaml")) == config
    assert "  - {path: optim.learning_rate, low: 0.0001, high: 0.1, scale: log}" in to_yaml(config)
    old = yaml.safe_load(to_yaml(RunConfig(), comments=False))
    del old["search"]
    assert RunConfig.from_dict(old) == RunConfig()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "optim.learnig_rate", "low": 1, "high": 2},
         "search.space[0].path: must name a config field (unknown setting; did you mean 'learning_rate'?)"),
        ({"path": "optim", "low": 1, "high": 2}, "search.space[0].path: must name a field, not a section"),
        ({"path": "data.path", "choices": ["a"]}, "search.space[0].path: cannot be searched"),
        ({"path": "optim.schedule", "low": 1, "high": 2}, "search.space[0].path: is not a number field"),
        ({"path": "optim.weight_decay", "low": 0, "high": 0.1, "scale": "log"},
         "search.space[0].low: must be > 0 on a log scale, got 0.0"),
        ({"path": "optim.weight_decay", "low": 0.1}, "search.space[0].high: a range needs both low and high"),
        ({"path": "optim.weight_decay", "low": 0.1, "high": 0.01}, "search.space[0].high: must be > low (0.1)"),
        ({"path": "model.trainable_stages", "low": 1.5, "high": 3}, "search.space[0].low: model.trainable_stages"
                                                                    " takes whole numbers"),
        ({"path": "model.head", "choices": []}, "search.space[0].choices: must list at least one value"),
        ({"path": "model.head", "choices": ["mlp"], "low": 1}, "search.space[0].choices: give either choices"),
        ({"path": "optim.weight_decay", "low": 1, "high": 2, "scale": "cubic"},
         "search.space[0].scale: must be one of linear, log, got 'cubic'"),
        ({"path": "optim.epochs", "lo": 1}, "search.space[0].lo: unknown setting; did you mean 'low'?"),
        ("lr", "search.space[0]: must be a mapping of path, low, high, scale, choices, got 'lr'"),
    ],
)
def test_bad_space_entries_name_their_field(entry: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RunConfig().with_changes(**{"search.space": [entry]})
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"search.fine_trials": -1}, "search.fine_trials: must be >= 0 (0 = no fine stage), got -1"),
        ({"search.metric": "accuracy"}, "search.metric: must be one of val_loss, val_top1, got 'accuracy'"),
        ({"search.edge_fraction": 0.5}, "search.edge_fraction: must be in (0, 0.5), got 0.5"),
        ({"search.space": [{"path": "optim.epochs", "low": 1, "high": 3}] * 2},
         "search.space[1].path: is searched twice"),
    ],
)
def test_bad_search_settings_name_their_field(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RunConfig().with_changes(**changes)
    assert str(raised.value).startswith(message)


def test_settings_that_would_fail_every_trial_are_refused_up_front() -> None:
    two_stage = RunConfig().with_changes(**{"model.mode": "two_stage", "search.coarse_epochs": 3})
    with pytest.raises(ConfigError, match=r"^search.coarse_epochs: two_stage trials first train the head for"):
        check_search_settings(two_stage, default_space(two_stage))
    smoothing = [SearchParameter("optim.label_smoothing", low=0.0, high=1.5)]
    with pytest.raises(ConfigError, match=r"^search.space\[0\]: optim.label_smoothing in \[0, 1.5\] \(linear\)"
                                          r" reaches a value the config refuses: optim.label_smoothing: must be in"):
        check_search_settings(RunConfig(), smoothing)
