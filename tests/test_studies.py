"""The study benchmarks' --smoke mode on digits (benchmarks/recovery_study.py, tervit_baseline.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _smoke(script: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", "--quiet", "--out", str(out / "runs"),
                           "--results-dir", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_recovery_study_smoke(tmp_path):
    _smoke("recovery_study.py", tmp_path)
    result = json.loads((tmp_path / "recovery_study_smoke.json").read_text())
    assert (tmp_path / "recovery_study_smoke.png").stat().st_size > 10_000
    assert "| snapshot |" in (tmp_path / "recovery_study_smoke.md").read_text()
    phase1 = result["phase1"]["phase1"]["history"]
    groups = {r["group"] for r in result["restarts"]}
    assert groups == {"snapshot", "learning rate", "length", "loss", "weight scale"}
    for r in result["restarts"]:
        source = result["phase1"][r["source"]]["history"]
        assert r["before_top1"] == source[r["from_epoch"] - 1]["val_top1"]  # the snapshot's own accuracy
        assert r["after_top1"] == r["curve"][-1] and len(r["curve"]) == r["epochs"]
        assert r["gain_pp"] == pytest.approx(100 * (r["after_top1"] - r["before_top1"]), abs=0.006)
        assert r["gap_pp"] == pytest.approx(100 * (result["teacher_top1"] - r["after_top1"]), abs=0.006)
        # the restart really started from that snapshot, with the settings of its row
        ckpt = torch.load(tmp_path / "runs" / r["name"] / "last.pth", weights_only=True)["config"]
        assert ckpt["init"].endswith(f"{r['source']}/epoch_{r['from_epoch']:03d}.pth")
        assert (ckpt["lr"], ckpt["epochs"], ckpt["ce_weight"], ckpt["weight_scale"]) == (
            r["lr"], r["epochs"], r["ce_weight"], r["weight_scale"])
    assert [r["from_epoch"] for r in result["restarts"] if r["group"] == "snapshot"] == [1, 2, 4]
    assert len(phase1) == 4 and result["findings"]["absmean_beats_absmax_pp"] == pytest.approx(
        100 * (result["restarts"][2]["after_top1"] - result["restarts"][-1]["after_top1"]), abs=0.006)
    # A rerun reuses every finished run: same numbers, nothing retrained.
    before = (tmp_path / "runs" / "phase1" / "last.pth").stat().st_mtime_ns
    _smoke("recovery_study.py", tmp_path)
    again = json.loads((tmp_path / "recovery_study_smoke.json").read_text())
    assert again["restarts"] == result["restarts"] and again["seconds"] == result["seconds"]
    assert (tmp_path / "runs" / "phase1" / "last.pth").stat().st_mtime_ns == before


@pytest.mark.slow
def test_tervit_baseline_smoke(tmp_path):
    from ftervit.export import read

    _smoke("tervit_baseline.py", tmp_path)
    result = json.loads((tmp_path / "tervit_baseline_smoke.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["ftervit_full", "ftervit_encoder", "tervit_direct", "tervit_progressive", "tervit_full"]
    for r in rows.values():
        assert 0 <= r["top1"] <= 1 and r["gap_pp"] == pytest.approx(100 * (result["teacher_top1"] - r["top1"]), abs=0.006)
        config = torch.load(tmp_path / "runs" / f"{r['name']}_phase2" / "last.pth", weights_only=True)["config"]
        assert (config["quant"], config["scope"], config["phase"]) == (r["quant"], r["scope"], 2)
    # progressive: the ternary stage started from the int8 stage's weights
    init = torch.load(tmp_path / "runs" / "tervit_progressive_phase1" / "last.pth", weights_only=True)["config"]["init"]
    assert init.endswith("tervit_progressive_int8/last.pth")
    for full, twin in (("ftervit_full", "ftervit_encoder"), ("tervit_full", "tervit_direct")):
        assert rows[full]["full_ternarization_drop_pp"] == pytest.approx(
            100 * (rows[twin]["top1"] - rows[full]["top1"]), abs=0.006)
        assert rows[full]["bytes"]["total"] < rows[twin]["bytes"]["total"]  # FP32 leftovers cost bytes
        assert rows[full]["bytes"]["fp32"] < rows[twin]["bytes"]["fp32"]
    assert rows["tervit_direct"]["bytes"]["scales"] > rows["ftervit_encoder"]["bytes"]["scales"]  # one per channel
    # the .ftv size is that of the real export of FTerViT full's checkpoint
    subprocess.run([sys.executable, "-m", "ftervit", "export", "--model", "ftervit_digits", "--checkpoint",
                    str(tmp_path / "runs" / "ftervit_full_phase2" / "last.pth"), "-o", str(tmp_path / "m.ftv")],
                   check=True, capture_output=True)
    assert rows["ftervit_full"]["ftv_bytes"] == read(tmp_path / "m.ftv").file_size
    assert "| TerViT fully ternarized |" in (tmp_path / "tervit_baseline_smoke.md").read_text()
