"""Teacher, Phase 1, Phase 2, eval and quickstart on digits with a tiny ViT; bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, state_of, tiny_config, train_stopped_after
from ftervit.cli import main
from ftervit.errors import FtervitError
from ftervit.evaluation import evaluate_checkpoints
from ftervit.export import export_model, read
from ftervit.factory import create_model, load_weights
from ftervit.training import train


def test_teacher_run_writes_everything(trained):
    out = trained["teacher"].parent
    for name in ("last.pth", "best.pth", "config.yaml", "log.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "history"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * (1437 // 64)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == TINY
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"train_loss", "val_top1", "val_top5", "lr", "images_per_s"} <= set(log[0])


def test_phase1_starts_from_the_teacher_and_learns(trained):
    ckpt = torch.load(trained["phase1"], weights_only=True)
    assert ckpt["config"]["lr"] == 1e-3 and "blocks.0.attn.qkv.norm.weight" in ckpt["model"]
    first = ckpt["history"][0]
    assert 0 <= first["val_top1"] <= 1 and first["train_loss"] >= 0


def test_phase2_from_phase1_and_eval(trained, tmp_path):
    result = train(tiny_config(tmp_path, "phase2", mode="distill", phase=2, teacher=str(trained["teacher"]),
                               init=str(trained["phase1"]), lr=None))
    assert result["epochs"] == 1
    ckpt = torch.load(tmp_path / "phase2" / "last.pth", weights_only=True)
    assert ckpt["config"]["lr"] == 1e-5
    metrics = evaluate_checkpoints(TINY, tmp_path / "phase2" / "last.pth", "digits", teacher=trained["teacher"])
    teacher_log = torch.load(trained["teacher"], weights_only=True)["history"]
    assert metrics["ternary"]["top1"] == pytest.approx(result["top1"])
    assert metrics["teacher"]["top1"] == pytest.approx(teacher_log[-1]["val_top1"]) and metrics["n"] == 360


def test_eval_cli_json(trained, capsys):
    assert main(["eval", "--model", TINY, "--checkpoint", str(trained["phase1"]), "--data", "digits",
                 "--teacher", str(trained["teacher"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"ternary", "teacher", "gap_pp"} and 0 <= result["ternary"]["top5"] <= 1


def test_epoch_boundary_resume_is_exact(tmp_path):
    train(tiny_config(tmp_path, "full", epochs=2, warmup_epochs=1))
    train_stopped_after(tiny_config(tmp_path, "cut", epochs=2, warmup_epochs=1), 1)  # a crash in epoch 2
    train(tiny_config(tmp_path, "cut", epochs=2, warmup_epochs=1, resume=True))
    full, cut = state_of(tmp_path / "full" / "last.pth"), state_of(tmp_path / "cut" / "last.pth")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert (tmp_path / "full" / "log.jsonl").read_text().count("\n") == 2


def _one_line_error(capsys, *argv: str) -> str:
    """Run the CLI in-process: exit code 2 and exactly one line on stderr (no traceback)."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["teacher", "--model", TINY, "--data", "mnist"], "unknown dataset"),
    (["teacher", "--model", TINY, "--data", "fashion-mnist", "--data-dir", "/nonexistent"], "Fashion-MNIST not found"),
    (["teacher", "--model", "vit_tiniest"], "unknown model"),
    (["distill", "--model", TINY, "--teacher", "/nonexistent.pth"], "checkpoint not found"),
    (["teacher", "--model", TINY, "--resume"], "nothing to resume"),
    (["teacher", "--model", TINY, "--augment", "heavy"], "augment must be"),
    (["teacher", "--model", TINY, "--device", "tpu"], "unknown device 'tpu'; use cpu, cuda or cuda:N"),
    (["teacher", "--model", TINY, "--device", "cuda:99"], "device 'cuda:99': "),
    (["teacher", "--model", TINY, "--threads", "0"], "threads must be positive"),
    (["teacher", "--model", TINY, "--label-smoothing", "2"], "label_smoothing must be in [0, 1)"),
    (["distill", "--model", TINY, "--teacher", "t.pth", "--init", "p.pth", "--phase", "2", "--min-lr", "1"],
     "min_lr (1.0) exceeds lr (1e-05)"),
])
def test_bad_input_cli(tmp_path, capsys, args, message):
    assert message in _one_line_error(capsys, *args, "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_output_directory_that_is_a_file_or_read_only(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("keep me")
    line = _one_line_error(capsys, "teacher", "--model", TINY, "--out", str(tmp_path / "notes.txt"))
    assert line.endswith(f"output directory {tmp_path / 'notes.txt'} is a file; choose another --out")
    line = _one_line_error(capsys, "quickstart", "--out", str(tmp_path / "notes.txt"), "--quiet")
    assert f"cannot be created: {tmp_path / 'notes.txt'} is a file" in line
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    import ftervit.training.trainer as trainer

    # root may write anywhere, so the refusal of a read-only folder is simulated
    monkeypatch.setattr(trainer.os, "access", lambda path, mode: Path(path) != tmp_path)
    line = _one_line_error(capsys, "teacher", "--model", TINY, "--out", str(tmp_path / "run"))
    assert line.endswith(f"{tmp_path} is not writable; choose another --out") and not (tmp_path / "run").exists()


def test_quickstart_checks_every_stage_before_training(tmp_path, capsys):
    line = _one_line_error(capsys, "quickstart", "--out", str(tmp_path / "q"), "--phase2-epochs", "0", "--quiet")
    assert line == "ftervit quickstart: error: phase2: epochs must be positive, got 0"
    assert not (tmp_path / "q").exists()  # the teacher was not trained first


def test_ctrl_c_keeps_the_last_checkpoint_and_says_so(tmp_path, capsys, monkeypatch):
    import ftervit.training.trainer as trainer

    real = trainer._train_epoch

    def ctrl_c_in_epoch_2(*args, **kwargs):
        if args[7] == 1:  # the epoch index
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", ctrl_c_in_epoch_2)
    out = tmp_path / "o"
    argv = ["teacher", "--model", TINY, "--epochs", "3", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 130
    assert capsys.readouterr().err == (f"ftervit teacher: interrupted; {out / 'last.pth'} (epoch 1) is kept; "
                                       "continue with --resume\n")
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "config.yaml", "last.pth", "log.jsonl"]


def test_checkpoint_of_another_kind_or_class_count(trained, tmp_path, capsys):
    teacher, phase1 = str(trained["teacher"]), str(trained["phase1"])
    wrong_classes = tmp_path / "c5.pth"
    state = state_of(trained["teacher"])
    state["head.weight"], state["head.bias"] = state["head.weight"][:5], state["head.bias"][:5]
    torch.save(state, wrong_classes)
    cases = [
        (["distill", "--teacher", str(wrong_classes)], "5 classes but the data has 10"),
        (["distill", "--teacher", phase1], "unexpected keys"),  # a ternary file is no FP32 teacher
        (["distill", "--phase", "2", "--teacher", teacher, "--init", teacher], "missing keys"),
        (["distill", "--model", "ftervit_digits", "--teacher", teacher], "shape mismatch"),
        (["eval", "--checkpoint", teacher, "--data", "digits"], "missing keys"),
    ]
    for args, message in cases:
        model = [] if "--model" in args else ["--model", TINY]
        out = [] if args[0] == "eval" else ["--out", str(tmp_path / "o")]
        assert message in _one_line_error(capsys, *args, *model, *out), args
    assert not (tmp_path / "o").exists()


def test_existing_run_is_not_overwritten(trained, capsys):
    out = trained["teacher"].parent
    before = (out / "last.pth").read_bytes()
    line = _one_line_error(capsys, "teacher", "--model", TINY, "--out", str(out))
    assert "already holds a run" in line and (out / "last.pth").read_bytes() == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import ftervit.training.trainer as trainer

    calls = {"n": 0}
    real = trainer.cross_entropy

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 30 else loss  # epoch 2, batch 9

    monkeypatch.setattr(trainer, "cross_entropy", poisoned)
    with pytest.raises(FtervitError, match=r"loss became nan at epoch 2, batch 9 of 22 \(step 31\).*epoch 1\) is kept"):
        train(tiny_config(tmp_path, "n", epochs=2))
    ckpt = torch.load(tmp_path / "n" / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and len((tmp_path / "n" / "log.jsonl").read_text().splitlines()) == 1


def test_nan_loss_cli(tmp_path, capsys):
    line = _one_line_error(capsys, "teacher", "--model", TINY, "--lr", "1e30", "--warmup-epochs", "0",
                           "--out", str(tmp_path / "o"), "--quiet")
    assert "loss became" in line and "step" in line and "no checkpoint had been written" in line


def test_quickstart_summary(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--teacher-epochs", "1", "--phase1-epochs", "1",
                 "--phase2-epochs", "1", "--quiet"]) == 0
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    for key in ("teacher_top1", "phase1_top1", "phase2_top1", "engine_top1", "engine_agreement"):
        assert 0 <= summary[key] <= 1
    ftv = tmp_path / "q" / "model.ftv"
    assert summary["file_bytes"] == ftv.stat().st_size == read(ftv).file_size
    assert read(ftv).class_names == [str(i) for i in range(10)]
    # the engine's accuracy can differ from PyTorch's only on the images where they disagree
    assert abs(summary["engine_top1"] - summary["phase2_top1"]) <= 1 - summary["engine_agreement"] + 1e-9
    assert summary["engine_agreement"] >= 0.95
    out = capsys.readouterr().out
    assert "Phase 2" in out and "C engine" in out


def test_eval_with_engine(trained, tmp_path, capsys):
    model = create_model(TINY, num_classes=10)
    load_weights(model, trained["phase1"], 10, "test")
    export_model(model.eval(), tmp_path / "m.ftv", "tq1")
    assert main(["eval", "--model", TINY, "--checkpoint", str(trained["phase1"]), "--data", "digits",
                 "--engine", str(tmp_path / "m.ftv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"]["n"] == result["n"] == 360
    assert result["engine"]["ternary"]["top1"] == pytest.approx(result["ternary"]["top1"])
    assert result["engine"]["agreement"] >= 0.95
    # a file of another class count is refused with a one-line error
    export_model(create_model(TINY, num_classes=7).eval(), tmp_path / "seven.ftv", "tq2")
    line = _one_line_error(capsys, "eval", "--model", TINY, "--checkpoint", str(trained["phase1"]),
                           "--data", "digits", "--engine", str(tmp_path / "seven.ftv"))
    assert "7 classes" in line
    # a file of another input size: refused before the progress bar starts (one line, nothing else)
    export_model(create_model(TINY, num_classes=10, img_size=12).eval(), tmp_path / "twelve.ftv", "tq2")
    line = _one_line_error(capsys, "eval", "--model", TINY, "--checkpoint", str(trained["phase1"]),
                           "--data", "digits", "--engine", str(tmp_path / "twelve.ftv"))
    assert line.endswith("takes images (1, 12, 12) but digits gives (1, 8, 8); export with the same --img-size")


@pytest.mark.filterwarnings("error:Mismatch dtype between input and weight")
def test_bf16_autocast_runs_on_cpu(trained, tmp_path):
    result = train(tiny_config(tmp_path, "amp", mode="distill", teacher=str(trained["teacher"]), amp=True))
    assert 0 <= result["top1"] <= 1
    assert torch.load(tmp_path / "amp" / "last.pth", weights_only=True)["model"]["head.weight"].dtype == torch.float32


def test_recipe_reuses_a_teacher(trained, tmp_path):
    """run_recipe(teacher=...): no teacher stage, Phase 1 and 2 distil from the given checkpoint,
    whose top-1 the summary measures; a missing checkpoint is refused before anything trains."""
    from ftervit.cli.quickstart import summary_table
    from ftervit.training.recipe import run_recipe

    common = dict(model=TINY, data="digits", batch_size=64, threads=1, quiet=True)
    stages = {"phase1": dict(epochs=1, lr=1e-3), "phase2": dict(epochs=1)}
    summary = run_recipe(tmp_path / "r", stages, teacher=trained["teacher"], **common)
    assert not (tmp_path / "r" / "teacher").exists() and set(summary["epochs"]) == {"phase1", "phase2"}
    assert summary["checkpoints"]["teacher"] == str(trained["teacher"])
    want = evaluate_checkpoints(TINY, trained["phase1"], "digits", teacher=trained["teacher"])["teacher"]["top1"]
    assert summary["teacher_top1"] == want
    table = summary_table(summary).splitlines()
    assert any(line.split()[:2] == ["FP32", "teacher"] and "given" in line and line.rstrip().endswith("-")
               for line in table), table
    assert torch.load(tmp_path / "r" / "phase1" / "last.pth", weights_only=True)["config"]["teacher"] == str(
        trained["teacher"])
    with pytest.raises(FtervitError, match="teacher checkpoint .*missing.pth not found"):
        run_recipe(tmp_path / "s", stages, teacher=tmp_path / "missing.pth", **common)
    assert not (tmp_path / "s").exists()
