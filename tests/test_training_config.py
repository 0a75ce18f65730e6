"""Config precedence (defaults < phase defaults < YAML < command line), YAML typing, errors."""
from __future__ import annotations

import pytest

from ftervit.cli import build_parser
from ftervit.cli.training_args import config_from_args
from ftervit.errors import FtervitError
from ftervit.training.config import TrainConfig, build_config, read_yaml


def parse(*argv: str):
    args = build_parser().parse_args(list(argv))
    return config_from_args(args, args.command)


def test_phase_defaults_follow_the_recipe():
    phase1 = TrainConfig(mode="distill", teacher="t.pth").resolved()
    phase2 = TrainConfig(mode="distill", phase=2, teacher="t.pth", init="p1.pth").resolved()
    assert (phase1.lr, phase1.warmup_epochs) == (1e-4, 0.0)
    assert (phase2.lr, phase2.epochs) == (1e-5, 10)
    assert TrainConfig().resolved().min_lr == pytest.approx(5e-6)


def test_yaml_then_command_line(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 3e-4\nbatch-size: 32\n")  # PyYAML reads 3e-4 as a string
    cfg = parse("teacher", "-c", str(cfg_file), "--epochs", "9")
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.mode) == (9, 3e-4, 32, "teacher")


def test_distill_options_and_checks():
    cfg = parse("distill", "--teacher", "t.pth", "--temperature", "2")
    assert (cfg.phase, cfg.temperature, cfg.lr) == (1, 2.0, 1e-4)
    with pytest.raises(FtervitError, match="--teacher"):
        parse("distill")
    with pytest.raises(FtervitError, match="--init"):
        parse("distill", "--phase", "2", "--teacher", "t.pth")
    with pytest.raises(SystemExit):  # distillation options are not teacher options
        parse("teacher", "--temperature", "2")


@pytest.mark.parametrize("text, message", [
    ("epochz: 3\n", "unknown setting"),
    ("epochs: many\n", "epochs must be int"),
    ("- 1\n", "mapping"),
])
def test_bad_yaml(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(FtervitError, match=message):
        read_yaml(tmp_path / "c.yaml")


def test_bad_values():
    with pytest.raises(FtervitError, match="augment"):
        build_config({"augment": "heavy"})
    with pytest.raises(FtervitError, match="warmup"):
        build_config({"epochs": 2, "warmup_epochs": 3})
