import dataclasses
import subprocess
import sys

import pytest

from animatch.cli import COMMANDS, main, resolve_config
from animatch.config import PrepareConfig, TrainConfig, flag
from animatch.errors import UserError


def test_top_level_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "animatch.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in COMMANDS:
        assert f"\n    {name} " in out or f"\n    {name}\n" in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_subcommand_documents_every_option_with_choices_and_one_default(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--config FILE" in text and "(default: None)" not in text
    for f in dataclasses.fields(COMMANDS[name][0]):
        choices = f.metadata["choices"]
        assert flag(f) in text or f.metadata["positional"] and choices  # a positional shows its metavar
        if choices:
            assert "{" + ",".join(choices) + "}" in text
    for chunk in text.split(" --"):  # one option's help
        assert chunk.count("(default:") <= 1, chunk


def test_help_imports_no_torch():
    code = "import sys; from animatch.cli import build_parser; build_parser(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unknown_option_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_missing_path_and_bad_value_are_one_line_exit_2(tmp_path, capsys):
    assert main(["prepare", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dir not found" in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path), "--split-dir", str(tmp_path), "--out", "x", "--epochs", "many"])
    assert exc.value.code == 2
    assert main(["prepare", "--out", "x"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_yaml_config_then_command_line_overrides(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.001\nbatch_size: 16\nlock_image: true\n")
    cfg = resolve_config(TrainConfig, {"config": str(config), "data": str(tmp_path), "split_dir": str(tmp_path),
                                       "out": "run", "batch_size": 8})
    assert (cfg.lr, cfg.batch_size, cfg.lock_image, cfg.epochs) == (0.001, 8, True, 10)
    config.write_text("learning_rate: 1\n")
    with pytest.raises(UserError, match="unknown option"):
        resolve_config(PrepareConfig, {"config": str(config), "data": str(tmp_path), "out": "o"})
    config.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        resolve_config(PrepareConfig, {"config": str(config), "data": str(tmp_path), "out": "o"})
