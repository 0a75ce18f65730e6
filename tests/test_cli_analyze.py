"""``ftervit analyze``: files, tables, --json, --ftv alone and the refusals (one line, exit code 2)."""
import json

import pytest
import torch

from ftervit import create_model
from ftervit.cli import main
from ftervit.export import export_model

from conftest import TINY

FILES = {f"{a}.{ext}" for a in ("importance", "weights", "fidelity", "rollout") for ext in ("json", "png")}


def _args(trained, out, *extra: str) -> list[str]:
    return ["analyze", "--model", TINY, "--teacher", str(trained["teacher"]), "--data", "digits",
            "--images", "64", "--batch-size", "32", "--probes", "4", "--rollout-images", "3",
            "--out", str(out), *extra]


def test_analyze_writes_every_file_and_prints_report_json(trained, tmp_path, capsys):
    ftv = tmp_path / "model.ftv"
    export_model(create_model(TINY, checkpoint=trained["phase1"]), ftv)
    out = tmp_path / "analysis"
    assert main(_args(trained, out, "--checkpoint", str(trained["phase1"]), "--ftv", str(ftv), "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert {p.name for p in out.iterdir()} == FILES | {"report.json"}
    assert report == json.loads((out / "report.json").read_text())
    assert report["settings"]["model"] == TINY and report["settings"]["images"] == 64
    assert set(report["versions"]) >= {"ftervit", "torch", "timm"}
    assert report["summary"]["weights"]["ftv_matches_model"] is True
    importance = json.loads((out / "importance.json").read_text())
    comp = importance["student"]["components"]["layernorm"]
    assert list(comp) == ["params", "param_share", "taylor", "taylor_share", "hessian_trace", "hessian_stderr",
                          "hessian_share"]
    assert importance["teacher"]["loss"] == "cross_entropy" and importance["student"]["loss"] == "distillation_kl"
    assert "most_important_layer" in importance["teacher"]
    rollout = json.loads((out / "rollout.json").read_text())
    assert [r["label"] for r in rollout["images"]] == [0, 1, 2]
    for name in FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_tables_and_ftv_alone(trained, tmp_path, capsys):
    assert main(_args(trained, tmp_path / "a", "--only", "fidelity,weights")) == 0
    text = capsys.readouterr().out
    assert "patch embedding, per token" in text and "0 with absmax" in text and "0.88" in text
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"weights.json", "weights.png", "fidelity.json",
                                                           "fidelity.png", "report.json"}
    ftv = tmp_path / "model.ftv"
    export_model(create_model(TINY, checkpoint=trained["phase1"]), ftv)
    assert main(["analyze", "--ftv", str(ftv), "--out", str(tmp_path / "b")]) == 0
    assert "ternary weights from" in capsys.readouterr().out
    weights = json.loads((tmp_path / "b" / "weights.json").read_text())
    assert "model" not in weights and weights["ftv"]["overall"]["numel"] > 0


def _refused(args: list[str], capsys, match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftervit analyze: error: ") and err.count("\n") == 1 and match in err, err


def test_analyze_refusals(trained, tmp_path, capsys):
    _refused(_args(trained, tmp_path / "o", "--checkpoint", str(tmp_path / "missing.pth")), capsys, "not found")
    other = tmp_path / "digits.pth"
    torch.save(create_model("ftervit_digits").state_dict(), other)
    _refused(_args(trained, tmp_path / "o", "--checkpoint", str(other)), capsys, "does not fit")
    mixer = tmp_path / "mixer.pth"
    from timm import create_model as timm_create

    torch.save(timm_create("ftervit_test_mixer").state_dict(), mixer)
    _refused(["analyze", "--model", "ftervit_test_mixer", "--teacher", str(mixer), "--data", "digits",
              "--only", "rollout", "--out", str(tmp_path / "o")], capsys, "no timm ViT attention")
    (tmp_path / "file").write_text("x")
    _refused(_args(trained, tmp_path / "file" / "out"), capsys, "cannot write to --out")
    _refused(["analyze", "--out", str(tmp_path / "o")], capsys, "--model and --teacher and --data required")
    _refused(["analyze", "--ftv", str(tmp_path / "file"), "--out", str(tmp_path / "o")], capsys, "bad magic")
    _refused(_args(trained, tmp_path / "o", "--only", "sparsity"), capsys, "unknown analysis")


@pytest.mark.parametrize("only", ["rollout", "importance"])
def test_analyze_without_checkpoint_converts_the_teacher(trained, tmp_path, capsys, only):
    assert main(_args(trained, tmp_path, "--only", only, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["checkpoint"] is None and report["settings"]["only"] == [only]
