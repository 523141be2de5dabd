from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfig, load_config, save_config


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\nmodel:\n  hidden_size: 32\noptim:\n  seed: 3\n")
    config = load_config(path, ["optim.seed=7", "model.bidirectional=true", "data.dataset=Airline"])
    assert (config.name, config.model.hidden_size, config.optim.seed) == ("demo", 32, 7)
    assert config.model.bidirectional is True and config.data.dataset == "Airline"


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "t"\n[optim]\nlearning_rate = 0.01\n')
    assert load_config(path).optim.learning_rate == 0.01


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["model.num_layers=3"])
    save_config(config, tmp_path / "r.yaml")
    assert load_config(tmp_path / "r.yaml") == config


def test_a_changed_config_is_a_validated_copy_that_keeps_what_the_user_set() -> None:
    config = load_config(None, ["model.dropout=0.2"])
    changed = config.with_values({"name": "b", "optim.final_fit": False})
    assert (config.name, config.optim.final_fit) == ("italy_power", "auto")  # the original as it was
    assert (changed.name, changed.optim.final_fit, changed.model.dropout) == ("b", False, 0.2)
    assert "dropout" in changed.model.model_fields_set and "hidden_size" not in changed.model.model_fields_set
    with pytest.raises(ValueError, match="optim.max_epochs must be a whole number"):
        config.with_values({"optim.max_epochs": 0})


@pytest.mark.parametrize("override, message", [
    (["model.hidden=3"], r"unknown key 'model.hidden'; expected one of \[.*'hidden_size'"),
    (["colour=red"], "unknown key 'colour'"),
    (["optim.seed"], "section.key=value"),
    (["data.task=forcast"], "data.task must be 'classification', 'regression', 'forecast' or 'tagging'"),
    (["model.reset=middle"], "model.reset must be 'after' or 'before'"),
    (["model.dropout=1.5"], "model.dropout: Input should be less than 1"),
    (["optim.optimizer=lbfgs"], "optim.optimizer must be"),
])
def test_bad_keys_are_named(override: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, override)


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_config(path).optim.learning_rate == 0.001
    config = load_config(None, ["optim.weight_decay=5e-2", "optim.max_epochs=1e2"])
    assert config.optim.weight_decay == 0.05 and config.optim.max_epochs == 100


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rate=fast", "optim.learning_rate must be a number"),
    ("optim.batch_size=2.5", "optim.batch_size must be a whole number"),
])
def test_non_numbers_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_a_config_saved_with_data_stream_loads_as_data_sharded() -> None:
    """Checkpoints saved before the rename hold `data.stream`; they still load, and dump the new name."""
    config = TrainConfig.from_dict({"data": {"stream": True}})
    assert config.data.sharded is True
    assert config.to_dict()["data"]["sharded"] is True and "stream" not in config.to_dict()["data"]


@pytest.mark.parametrize("name, text, message", [
    ("c.yaml", "model:\n  readout: [last\n",
     r"config file .*c\.yaml is not valid YAML: expected ',' or ']'.* line 3"),
    ("c.yaml", "model:\n hidden_size: 8\n  dropout: 0.1\n",
     r"not valid YAML: mapping values .* line 3, column 10"),
    ("c.toml", "[model]\nhidden_size = \n",
     r"config file .*c\.toml is not valid TOML: Invalid value \(at line 2"),
])
def test_a_config_file_that_does_not_parse_is_one_line_naming_file_and_line(tmp_path: Path, name: str,
                                                                             text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        load_config(tmp_path / name)
    assert "\n" not in str(caught.value)


def test_an_override_that_does_not_parse_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match=r"override 'model.readout=\[last': the value is not valid YAML "
                                         r"\(expected ',' or '\]'.*write a list as \[a, b\]"):
        load_config(None, ["model.readout=[last"])
