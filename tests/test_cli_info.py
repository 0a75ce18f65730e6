"""``ftervit info`` and the CLI's error handling."""
import json
import subprocess
import sys

import timm
import torch

from ftervit import create_model
from ftervit.cli import main


def test_info_json_deit3_small_reports_full_coverage(capsys):
    assert main(["info", "deit3_small_patch16_224", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["coverage_percent"] == {"weight_matrices": 100.0, "norm_params": 100.0}
    model = create_model("deit3_small_patch16_224")
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["fp32_bytes"] == 4 * info["params"]
    # every Linear/conv weight + LayerNorm affine is ternary; the rest is FP32 or unused bias
    ternary = sum(p.numel() for n, p in model.named_parameters()
                  if (n.endswith("weight") and p.dim() > 1) or ".norm1." in n or ".norm2." in n or n.startswith("norm."))
    assert info["totals"]["ternary"] == ternary
    assert info["totals"]["unused"] == sum(m.bias.numel() for m in model.modules()
                                          if isinstance(m, torch.nn.Linear) and m.bias is not None)
    assert info["components"]["layerscale"]["fp32"] == 2 * 12 * 384


def test_info_text_fp32_model(capsys):
    assert main(["info", "ftervit_digits", "--fp32"]) == 0
    out = capsys.readouterr().out
    assert "weight matrices 0.0%" in out
    n = sum(p.numel() for p in timm.create_model("ftervit_digits").parameters())
    assert f"{n:,}" in out and f"{4 * n / 1e6:.2f} MB" in out


def test_bad_model_is_one_line_error_exit_2():
    proc = subprocess.run([sys.executable, "-m", "ftervit", "info", "no_such_vit"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("ftervit info: error: unknown model 'no_such_vit'")
    assert "Traceback" not in proc.stderr


def test_missing_checkpoint_is_one_line_error(capsys, tmp_path):
    assert main(["info", "ftervit_digits", "--checkpoint", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftervit info: error: checkpoint not found")
