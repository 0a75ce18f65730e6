"""``ftervit export``, ``inspect`` and ``size`` through the CLI entry point."""
from __future__ import annotations

import json

import pytest

from ftervit import create_model
from ftervit.cli import main


def test_export_then_inspect(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    out = tmp_path / "d.ftv"
    assert main(["export", "--model", "ftervit_digits", "--format", "tq1", "-o", str(out),
                 "--class-names", str(names), "--mean", "0.25", "--std", "0.5"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format_version"] == 1 and d["format"] == "tq1" and d["checksum_ok"]
    assert d["total_bytes"] == out.stat().st_size and d["class_names"][3] == "digit 3"
    assert d["config"]["mean"] == [0.25] and d["config"]["embed_dim"] == 64
    assert 1.6 <= d["bits_per_weight"] < 1.7 and d["compression"] > 10
    assert {"name", "kind", "shape", "offset", "nbytes"} <= set(d["tensors"][0])
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CRC32" in text and "bits per weight" in text and "compression" in text


def test_inspect_damaged_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "d.ftv"
    assert main(["export", "--model", "ftervit_digits", "-o", str(out)]) == 0
    data = out.read_bytes()
    capsys.readouterr()
    for bad in (data[:-7], data[:500] + bytes([data[500] ^ 1]) + data[501:], b"GIF89a" + data[6:]):
        out.write_bytes(bad)
        assert main(["inspect", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ftervit inspect: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_size_tables_json_and_plot(tmp_path, capsys):
    png = tmp_path / "size.png"
    assert main(["size", "ftervit_digits", "--json", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["scenario_bytes"]["full"] == r["file"]["total_bytes"]  # computed by the writer
    assert sum(x["bytes"] for x in r["layers"]) + r["overhead_bytes"] == r["file"]["total_bytes"]
    assert r["scenario_bytes"]["fp32"] == r["file"]["fp32_bytes"]
    b = r["scenario_bytes"]
    assert b["fp32"] > b["partial"] > b["partial_w2_paper"] > b["full"]
    assert r["leftover_percent"]["partial"] > r["leftover_percent"]["partial_w2_paper"] > r["leftover_percent"]["full"]
    # partial W2: every linear weight 2-bit (4 a byte) with one FP32 scale per tensor, all else FP32
    model = create_model("ftervit_digits")
    linear = [p for n, p in model.named_parameters()
              if n.endswith(("attn.qkv.weight", "attn.proj.weight", "fc1.weight", "fc2.weight", "head.weight"))]
    codes = sum(p.numel() // 4 for p in linear)
    fp32 = 4 * (r["file"]["fp32_bytes"] // 4 - sum(p.numel() for p in linear) + len(linear))
    assert b["partial_w2_paper"] == codes + fp32
    assert main(["size", "ftervit_digits"]) == 0
    text = capsys.readouterr().out
    assert "blocks.0.attn.qkv" in text and "partially ternary" in text and "leftovers" in text
    assert "partial W2 (paper)" in text


@pytest.mark.slow
@pytest.mark.parametrize("model, paper", [("deit_tiny_patch16_224", 38), ("deit3_small_patch16_224", 24)])
def test_size_partial_w2_reproduces_the_papers_leftovers(model, paper, capsys):
    assert main(["size", model, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert abs(r["leftover_percent"]["partial_w2_paper"] - paper) <= 2


def test_export_refuses_to_replace_its_input_checkpoint(tmp_path, capsys):
    import torch


    ckpt = tmp_path / "best.pth"
    torch.save(create_model("ftervit_digits").state_dict(), ckpt)
    before = ckpt.read_bytes()
    assert main(["export", "--model", "ftervit_digits", "--checkpoint", str(ckpt), "-o", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ftervit export: error: output {ckpt} is the input file") and err.count("\n") == 1
    assert ckpt.read_bytes() == before
    assert main(["size", "ftervit_digits", "--checkpoint", str(ckpt), "--plot", str(ckpt)]) == 2
    assert "is the input file" in capsys.readouterr().err and ckpt.read_bytes() == before


def test_size_plot_errors_are_one_line_and_suffix_decides_the_format(tmp_path, capsys):
    for plot, message in ((tmp_path / "no" / "s.png", "directory"), (tmp_path, "Is a directory"),
                          (tmp_path / "s.txt", "matplotlib does not write .txt files; use .png, .svg or .pdf")):
        assert main(["size", "ftervit_digits", "--plot", str(plot)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ftervit size: error: cannot write {plot}") and message in err and err.count("\n") == 1
    assert main(["size", "ftervit_digits", "--plot", str(tmp_path / "s.svg")]) == 0
    assert b"<svg" in (tmp_path / "s.svg").read_bytes()[:400]
    assert main(["size", "ftervit_digits", "--plot", str(tmp_path / "plain")]) == 0  # no suffix: PNG, as named
    assert (tmp_path / "plain").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "s.svg"]  # no temporary files left


def test_export_refuses_to_overwrite_and_random_init_is_reproducible(tmp_path, capsys):
    """Finding 7: `export -o existing.ftv` replaced the file silently (training refuses an --out
    that holds a run, and takes --overwrite); random-init exports differed from run to run."""
    import torch

    out, again = tmp_path / "a.ftv", tmp_path / "b.ftv"
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    assert main(["export", "--model", "ftervit_digits", "-o", str(out)]) == 0
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    assert main(["export", "--model", "ftervit_digits", "-o", str(again)]) == 0
    assert out.read_bytes() == again.read_bytes()
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["export", "--model", "ftervit_digits", "--seed", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"ftervit export: error: {out} exists; pass --overwrite to replace it, or choose another -o\n"
    assert out.read_bytes() == before
    assert main(["export", "--model", "ftervit_digits", "--seed", "1", "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != before
