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


def _one_line(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI in-process; exactly one line on stderr and the expected exit code."""
    try:
        assert main(argv) == code
    except SystemExit as exc:  # argparse's own exit
        assert exc.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_usage_errors_are_one_line_with_a_pointer_to_help(capsys):
    line = _one_line(capsys, ["teacher", "--epochs", "1.5"])
    assert line == "ftervit teacher: error: argument --epochs: invalid int value: '1.5' (see 'ftervit teacher --help')"
    for argv, what in ((["info", "ftervit_digits", "--num-classes", "0"], "--num-classes"),
                       (["info", "ftervit_digits", "--img-size", "-8"], "--img-size"),
                       (["eval", "--model", "m", "--checkpoint", "c", "--data", "digits", "--batch-size", "0"],
                        "--batch-size"),
                       (["eval", "--model", "m", "--checkpoint", "c", "--data", "digits", "--workers", "-1"],
                        "--workers")):
        assert f"argument {what}: expected" in _one_line(capsys, argv)


def test_fp32_info_loads_the_fp32_checkpoint(capsys, tmp_path):
    fp32 = timm.create_model("ftervit_digits", num_classes=7)
    torch.save({"model": fp32.state_dict()}, tmp_path / "teacher.pth")
    assert main(["info", "ftervit_digits", "--fp32", "--checkpoint", str(tmp_path / "teacher.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == sum(p.numel() for p in fp32.parameters())
    torch.save(create_model("ftervit_digits").state_dict(), tmp_path / "student.pth")
    line = _one_line(capsys, ["info", "ftervit_digits", "--fp32", "--checkpoint", str(tmp_path / "student.pth")])
    assert "ternary weights given, FP32 expected" in line


def test_os_errors_no_check_caught_are_one_line(capsys, monkeypatch):
    import ftervit.cli.info as info

    def refused(args):
        raise PermissionError(13, "Permission denied", "/ro/out.json")

    monkeypatch.setattr(info, "run", refused)
    line = _one_line(capsys, ["info", "ftervit_digits"])
    assert line == "ftervit info: error: Permission denied: /ro/out.json"
