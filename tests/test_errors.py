"""Which config file a rejected key is blamed on (hydralab.errors.name_config_file)."""

from __future__ import annotations

from pathlib import Path

from hydralab.errors import name_config_file, user_error

MESSAGE = "Subcommand 'fit' does not accept option 'model.lrr'"


def test_the_last_config_setting_the_key_is_named_and_the_command_line_wins(tmp_path: Path):
    first = tmp_path / "a.yaml"
    first.write_text("model:\n  lrr: 1\n")
    second = tmp_path / "b.yaml"
    second.write_text("model:\n  lrr: 2\n")
    other = tmp_path / "c.yaml"
    other.write_text("model:\n  lr: 2\n")
    args = [f"--config={first}", "-c", str(second), "--config", str(other)]
    assert name_config_file(MESSAGE, args) == f"{second}: {MESSAGE}"
    assert name_config_file(MESSAGE, [*args, "--model.lrr=3"]) == MESSAGE
    assert name_config_file(MESSAGE, [f"--config={other}"]) == MESSAGE  # not in any file
    assert name_config_file("no key here", args) == "no key here"


def test_a_section_given_as_a_file_is_followed(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "trainer.yml").write_text("max_stepz: 3\n")
    config = tmp_path / "run.yaml"
    config.write_text("trainer: sub/trainer.yml\n")
    message = 'Parser key "trainer.max_stepz": unknown'
    assert name_config_file(message, [f"--config={config}"]) == (
        f"{tmp_path / 'sub' / 'trainer.yml'}: {message}"
    )


def test_a_syntax_error_names_the_file_and_its_line(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("data: d.yaml\n")
    (tmp_path / "d.yaml").write_text("csv: a.csv\n  batch_size: [4\n")
    message = 'Problems parsing config: ... in "<unicode string>", line 2'
    named = name_config_file(message, [f"--config={good}"])
    assert named.startswith(f"{tmp_path / 'd.yaml'}: not valid YAML: ")
    assert "(line 2, column " in named


def test_bugs_are_not_user_errors():
    assert user_error(TypeError("x")) is None and user_error(KeyError("x")) is None
    assert user_error(ValueError("bad")) == "bad"
