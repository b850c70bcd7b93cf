"""Config: YAML round-trip, did-you-mean, field-path validation, the commented default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.core.config import RunConfig, load_config, parse_override, save_config, to_yaml
from engine.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_round_trips_through_yaml(tmp_path: Path) -> None:
    config = RunConfig().with_changes(**{
        "data.path": "/photos/with: colon # and hash", "optim.learning_rate": 3e-4, "data.input_size": 96,
        "model.mode": "fine_tune", "amp": False, "augment.crop_scale": [0.5, 1], "augment.cutout_holes": (1, 3),
        "doctor.checks": ["divergence"],
    })
    assert config.augment.crop_scale == (0.5, 1.0) and config.doctor.checks == ("divergence",)
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert RunConfig.from_dict(yaml.safe_load(to_yaml(config, comments=False))) == config


def test_every_field_has_a_comment_in_the_default_yaml() -> None:
    text = to_yaml(RunConfig())
    lines = text.splitlines()
    comment_lines = [line for line in lines if line.lstrip().startswith("#")]
    keys = [line for line in lines if ":" in line and line not in comment_lines]
    assert len(comment_lines) == len(keys) + 1  # one per field plus the title


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optim": {"learning_rat": 0.1}}, "optim.learning_rat: unknown setting; did you mean 'learning_rate'?"),
        ({"modle": {}}, "modle: unknown setting; did you mean 'model'?"),
        ({"optim": {"learning_rate": -1}}, "optim.learning_rate: must be > 0, got -1.0"),
        ({"optim": {"epochs": 0}}, "optim.epochs: must be >= 1, got 0"),
        ({"optim": {"batch_size": 2.5}}, "optim.batch_size: must be a whole number or auto, got 2.5"),
        ({"model": {"mode": "finetune"}},
         "model.mode: must be one of feature_extraction, fine_tune, two_stage, got 'finetune'"),
        ({"augment": {"crop_scale": [0.9, 0.2]}},
         "augment.crop_scale: must be [min, max] with 0.01 <= min <= max <= 1.0, got [0.9, 0.2]"),
        ({"augment": {"crop_scale": 0.5}},
         "augment.crop_scale: must be a list of 2 (a number, a number) or null, got 0.5"),
        ({"augment": {"cutout_holes": [1, "x"]}}, "augment.cutout_holes[1]: must be a whole number, got 'x'"),
        ({"augment": {"cutmix_alpha": 1.0}}, "augment.cutmix_alpha: cutmix pastes pixels"),
        ({"doctor": {"checks": "divergence"}}, "doctor.checks: must be a list of texts, got 'divergence'"),
        ({"doctor": {"checks": ["divergence", "initial_los"]}},
         "doctor.checks[1]: must be one of the registered doctor checks (initial_loss, divergence, "),
        ({"optim": {"schedule": "cosin"}}, "optim.schedule: must be one of the registered schedules (cosine, constant,"
                                           " step, linear, inverse_sqrt, cosine_restarts), got 'cosin'"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction: must be in [0, 1), got 1.5"),
        ({"data": {"input_size": "big"}}, "data.input_size: must be a whole number or null, got 'big'"),
        ({"amp": "yes"}, "amp: must be true or false, got 'yes'"),
        ({"optim": 3}, "optim: expected a section of settings, got 3"),
        ({"schema_version": 99}, "schema_version: this Transfer Studio reads version 1, got 99"),
    ],
)
def test_bad_values_name_their_field(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RunConfig.from_dict(values)
    assert str(raised.value).startswith(message)


def test_rates_written_without_a_dot_are_numbers(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("optim:\n  learning_rate: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_config(file).optim.learning_rate == pytest.approx(1e-3)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("optim:\n  epochs: -2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.epochs: must be >= 1"):
        load_config(file)
    file.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(file)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_values() -> None:
    assert parse_override("optim.learning_rate=3e-4") == ("optim.learning_rate", "3e-4")
    assert parse_override("optim.epochs=4") == ("optim.epochs", 4)
    assert parse_override("data.input_size=null") == ("data.input_size", None)
    config = RunConfig().with_changes(**dict([parse_override("optim.learning_rate=3e-4")]))
    assert config.optim.learning_rate == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("epochs")
    with pytest.raises(ConfigError, match="optim.foo: not a section of settings"):
        RunConfig().with_changes(**{"optim.foo.bar": 1})


def test_digest_changes_with_any_field() -> None:
    assert RunConfig().digest() == RunConfig().digest()
    assert RunConfig().digest() != RunConfig().with_changes(seed=1).digest()


def test_cli_prints_a_commented_default_that_loads(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "main.py", "config", "--default"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("# Transfer Studio run configuration")
    file = tmp_path / "default.yaml"
    file.write_text(result.stdout)
    assert load_config(file) == RunConfig()
