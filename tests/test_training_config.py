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
    ("epochs: 2.5\n", r"epochs must be int, got 2\.5"),  # once truncated to 2 without a word
    ("epochs: [1\n", r"invalid YAML, expected ',' or '\]', but got '<stream end>' at line 2, column 1$"),
])
def test_bad_yaml(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(FtervitError, match=message):
        read_yaml(tmp_path / "c.yaml")


def test_yaml_that_is_not_text_or_not_a_file(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(FtervitError, match="not a UTF-8 text file"):
        read_yaml(tmp_path / "c.yaml")
    with pytest.raises(FtervitError, match=f"cannot read config {tmp_path}: Is a directory"):
        read_yaml(tmp_path)
    assert read_yaml(_write(tmp_path / "whole.yaml", "epochs: 3.0\n")) == {"epochs": 3}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("settings, message", [
    ({"threads": 0}, "threads must be positive, got 0"),
    ({"threads": -2}, "threads must be positive"),
    ({"img_size": 0}, "img_size must be positive"),
    ({"grad_clip": -1.0}, "grad_clip must be positive"),
    ({"workers": -1}, "workers must be 0 or more"),
    ({"weight_decay": -0.1}, "weight_decay must be 0 or more"),
    ({"warmup_epochs": -1.0}, "warmup_epochs must be 0 or more"),
    ({"min_lr": -1.0}, "min_lr must be 0 or more"),
    ({"lr": 1e-3, "min_lr": 1e-2}, r"min_lr \(0\.01\) exceeds lr \(0\.001\)"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"drop_path": 1.5}, r"drop_path must be in \[0, 1\)"),
    ({"re_prob": 3.0}, r"re_prob must be in \[0, 1\]"),
])
def test_out_of_range_values_refused_before_training(settings, message):
    """Each of these once reached torch or timm and ended in a traceback (or trained silently)."""
    with pytest.raises(FtervitError, match=message):
        build_config(settings)


def test_edges_of_the_ranges_accepted():
    cfg = build_config({"re_prob": 1.0, "label_smoothing": 0.0, "workers": 0, "weight_decay": 0.0,
                        "min_lr": 5e-4, "threads": 1})
    assert (cfg.re_prob, cfg.min_lr, cfg.lr) == (1.0, 5e-4, 5e-4)


def test_bad_values():
    with pytest.raises(FtervitError, match="augment"):
        build_config({"augment": "heavy"})
    with pytest.raises(FtervitError, match="warmup"):
        build_config({"epochs": 2, "warmup_epochs": 3})
