"""Comparison recipes (distill --quant/--scope/--weight-scale/--ce-weight) and --save-epochs snapshots."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn

from conftest import TINY, state_of, tiny_config, train_stopped_after
from ftervit import create_model, create_student
from ftervit.cli import main
from ftervit.conversion import StudentRecipe, convert
from ftervit.errors import FtervitError
from ftervit.evaluation import evaluate_checkpoints
from ftervit.layers import BitConv2d, BitLinear, QuantConv2d, QuantLayerNorm, QuantLinear, TernaryLayerNorm
from ftervit.quantization import (
    int8_per_output_channel,
    int8_per_tensor,
    ternary_absmax,
    ternary_absmax_per_channel,
    ternary_twn,
    ternary_twn_per_channel,
)
from ftervit.training import train
from ftervit.training.config import build_config

QUANTIZED = (BitLinear, BitConv2d, TernaryLayerNorm, QuantLinear, QuantConv2d, QuantLayerNorm)


# ---- quantizers against hand computations ----------------------------------------------------

def test_tervit_channel_wise_ternarization_by_hand():
    w = torch.tensor([[0.1, -0.5, 0.9, 0.05],     # mean|w| 0.3875, threshold 0.27125: -0.5 and 0.9 kept
                      [0.2, 0.2, -0.2, 0.2],      # threshold 0.14: all kept, alpha 0.2
                      [0.0, 0.0, 0.0, 0.0]])      # nothing kept: codes 0, finite scale
    codes, scale = ternary_twn_per_channel(w)
    assert codes.tolist() == [[0, -1, 1, 0], [1, 1, -1, 1], [0, 0, 0, 0]]
    assert scale.shape == (3, 1)
    assert (1 / scale[:2, 0]).tolist() == pytest.approx([0.7, 0.2])  # alpha: mean |w| of the kept weights
    assert torch.isfinite(codes / scale).all()
    assert (codes / scale)[0].tolist() == pytest.approx([0, -0.7, 0.7, 0])


def test_tervit_per_tensor_form_and_conv_weights():
    w = torch.tensor([0.7, -0.7, 1.3, 0.3])  # mean|w| 0.75, threshold 0.525: 0.3 dropped
    codes, scale = ternary_twn(w)
    assert codes.tolist() == [1, -1, 1, 0] and (1 / scale).item() == pytest.approx(0.9)
    torch.manual_seed(0)
    conv = torch.randn(4, 1, 3, 3)
    codes, scale = ternary_twn_per_channel(conv)
    assert scale.shape == (4, 1, 1, 1)
    for c in range(4):
        mag = conv[c].abs()
        keep = mag > 0.7 * mag.mean()
        assert torch.equal(codes[c], torch.sign(conv[c]) * keep)
        assert (1 / scale[c]).item() == pytest.approx(mag[keep].mean().item(), rel=1e-6)


def test_int8_per_output_channel_and_per_tensor_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 2.54, -1.27]])
    codes, scale = int8_per_output_channel(w)
    assert scale[:, 0].tolist() == pytest.approx([127.0, 50.0])
    assert codes.tolist() == [[127, -64, 32], [0, 127, -64]]  # -63.5 and 31.75 round half to even / nearest
    codes, scale = int8_per_tensor(torch.tensor([0.5, -2.0]))
    assert scale.item() == pytest.approx(63.5) and codes.tolist() == [32, -127]


def test_ternary_absmax_by_hand():
    codes, scale = ternary_absmax(torch.tensor([0.4, -1.0, 0.5, 0.6]))  # s = 1: only |w| > 0.5 survives
    assert scale.item() == 1.0 and codes.tolist() == [0, -1, 0, 1]
    codes, scale = ternary_absmax_per_channel(torch.tensor([[2.0, 1.2], [0.1, -0.04]]))
    assert scale[:, 0].tolist() == pytest.approx([0.5, 10.0]) and codes.tolist() == [[1, 1], [1, 0]]


# ---- the operators ------------------------------------------------------------------------------

def test_quant_linear_adds_the_bias_and_quantizes_as_tervit():
    torch.manual_seed(0)
    layer = QuantLinear(8, 5, quant="tervit")
    x = torch.randn(3, 8)
    xs = 127 / x.abs().amax(-1, keepdim=True)
    x_q = (x * xs).round().clamp(-128, 127) / xs
    codes, scale = ternary_twn_per_channel(layer.weight.detach())
    expected = x_q @ (codes / scale).T + layer.bias.detach()
    assert torch.allclose(layer(x), expected, atol=1e-6)
    y = layer(x)
    y.sum().backward()  # straight-through: the weight's gradient is that of a plain linear layer at x_q
    assert torch.allclose(layer.weight.grad, torch.ones(3, 5).T @ x_q, atol=1e-5)


def test_int8_layers_are_close_to_fp32():
    torch.manual_seed(0)
    fp = nn.Linear(16, 8)
    q = QuantLinear(16, 8, quant="int8")
    q.load_state_dict(fp.state_dict())
    x = torch.randn(4, 16)
    assert (q(x) - fp(x)).abs().max() < 0.05 * fp(x).abs().max()
    with pytest.raises(ValueError, match="quant must be one of tervit, int8"):
        QuantLinear(4, 4, quant="int4")


# ---- conversion per recipe ----------------------------------------------------------------------

ENCODER = {f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}


def _quantized(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, QUANTIZED)}


def _fp32_layers(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and not isinstance(m, QUANTIZED)}


@pytest.mark.parametrize("quant", ["ftervit", "tervit", "int8"])
def test_encoder_scope_leaves_exactly_the_named_modules_fp32(quant):
    model = convert(timm.create_model("ftervit_digits"), StudentRecipe(quant, "encoder"))
    assert _quantized(model) == ENCODER
    assert _fp32_layers(model) == {"patch_embed.proj", "norm", "head"} | {
        f"blocks.{i}.{n}" for i in range(2) for n in ("norm1", "norm2")}
    kinds = {type(model.get_submodule(n)) for n in ENCODER}
    assert kinds == {BitLinear if quant == "ftervit" else QuantLinear}


@pytest.mark.parametrize("quant, kinds", [("tervit", {QuantLinear, QuantConv2d, QuantLayerNorm}),
                                          ("int8", {QuantLinear, QuantConv2d, QuantLayerNorm})])
def test_full_scope_quantizes_everything(quant, kinds):
    teacher = timm.create_model("ftervit_digits")
    model = convert(timm.create_model("ftervit_digits"), StudentRecipe(quant, "full"))
    model.load_state_dict(teacher.state_dict())  # the same parameter names as the FP32 model
    assert _fp32_layers(model) == set()
    assert {type(m) for m in model.modules() if isinstance(m, QUANTIZED)} == kinds
    assert all(m.quant == quant for m in model.modules() if isinstance(m, QUANTIZED))


def test_absmax_weight_scale_reaches_every_ternary_operator():
    model = convert(timm.create_model("ftervit_digits"), StudentRecipe(weight_scale="absmax"))
    layers = [m for m in model.modules() if isinstance(m, (BitLinear, BitConv2d, TernaryLayerNorm))]
    assert layers and all(m.weight_scale == "absmax" for m in layers)
    qkv = model.blocks[0].attn.qkv
    h = qkv.norm(torch.randn(2, 17, 64))
    xs = 127 / h.abs().amax(-1, keepdim=True)
    w = qkv.weight.detach()
    expected = ((h * xs).round().clamp(-128, 127) / xs) @ ((w / w.abs().max()).round().clamp(-1, 1) * w.abs().max()).T
    with torch.no_grad():
        assert torch.allclose(qkv(h), expected, atol=1e-5)


def test_recipe_refusals():
    with pytest.raises(FtervitError, match="quant must be one of ftervit, tervit, int8"):
        StudentRecipe("int4")
    with pytest.raises(FtervitError, match="scope must be one of full, encoder"):
        StudentRecipe(scope="head")
    with pytest.raises(FtervitError, match="weight_scale absmax applies to --quant ftervit only"):
        StudentRecipe("tervit", weight_scale="absmax")


# ---- training, checkpoints, eval, export --------------------------------------------------------

@pytest.fixture(scope="module")
def tervit_run(trained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tervit")
    teacher = str(trained["teacher"])
    train(tiny_config(tmp, "int8", mode="distill", teacher=teacher, quant="int8", scope="encoder", lr=1e-3))
    result = train(tiny_config(tmp, "tervit", mode="distill", teacher=teacher, quant="tervit", scope="encoder",
                               init=str(tmp / "int8" / "last.pth"), lr=1e-3))  # TerViT's progressive 2nd stage
    return {"dir": tmp, "teacher": teacher, "ckpt": tmp / "tervit" / "last.pth", "result": result}


def test_checkpoint_records_the_recipe_and_eval_rebuilds_it(tervit_run, capsys):
    ckpt = torch.load(tervit_run["ckpt"], weights_only=True)
    assert (ckpt["config"]["quant"], ckpt["config"]["scope"]) == ("tervit", "encoder")
    assert "blocks.0.attn.qkv.norm.weight" not in ckpt["model"]  # no RMSNorm: TerViT's layers
    model = create_student(TINY, tervit_run["ckpt"])
    assert isinstance(model.blocks[0].mlp.fc1, QuantLinear) and not isinstance(model.head, QUANTIZED)
    metrics = evaluate_checkpoints(TINY, tervit_run["ckpt"], "digits")
    assert metrics["ternary"]["top1"] == pytest.approx(tervit_run["result"]["top1"])
    assert main(["eval", "--model", TINY, "--checkpoint", str(tervit_run["ckpt"]), "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ternary"]["top1"] == pytest.approx(tervit_run["result"]["top1"])


def _one_line_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_export_and_engine_refuse_other_recipes(tervit_run, tmp_path, capsys):
    ckpt = str(tervit_run["ckpt"])
    line = _one_line_error(capsys, "export", "--model", TINY, "--checkpoint", ckpt, "-o", str(tmp_path / "m.ftv"))
    assert "--quant tervit --scope encoder" in line and "FTerViT students only" in line and "ftervit eval" in line
    assert not (tmp_path / "m.ftv").exists()
    export_from = create_model(TINY, num_classes=10).eval()
    from ftervit.export import export_model

    export_model(export_from, tmp_path / "ok.ftv")
    line = _one_line_error(capsys, "eval", "--model", TINY, "--checkpoint", ckpt, "--data", "digits",
                           "--engine", str(tmp_path / "ok.ftv"))
    assert "FTerViT students only" in line
    with pytest.raises(FtervitError, match="FTerViT students only"):
        create_model(TINY, checkpoint=ckpt)
    with pytest.raises(FtervitError, match="export needs a ternary timm VisionTransformer"):
        export_model(create_student(TINY, ckpt), tmp_path / "no.ftv")
    absmax = convert(timm.create_model(TINY), StudentRecipe(weight_scale="absmax"))
    with pytest.raises(FtervitError, match="ternary scale absmax"):
        export_model(absmax, tmp_path / "no.ftv")


def test_init_of_another_recipe_names_both(tervit_run, trained, tmp_path, capsys):
    line = _one_line_error(capsys, "distill", "--model", TINY, "--teacher", tervit_run["teacher"], "--phase", "2",
                           "--init", str(tervit_run["ckpt"]), "--out", str(tmp_path / "o"))
    assert line.endswith("it was trained with --quant tervit --scope encoder, this run uses "
                         "--quant ftervit --scope full")


@pytest.mark.parametrize("args, message", [
    (["--quant", "int4"], "quant must be one of ftervit, tervit, int8, got 'int4'"),
    (["--scope", "head"], "scope must be one of full, encoder"),
    (["--quant", "tervit", "--weight-scale", "absmax"], "weight_scale absmax applies to --quant ftervit only"),
    (["--weight-scale", "absmedian"], "weight_scale must be one of absmean, absmax"),
    (["--ce-weight", "-1"], "ce_weight must be 0 or more"),
    (["--save-epochs", "1,x"], "save_epochs must be epoch numbers separated by commas"),
    (["--save-epochs", "0"], "save_epochs must be epoch numbers"),
    (["--save-epochs", "2,5", "--epochs", "3"], "save_epochs 5 exceeds epochs (3)"),
])
def test_bad_recipe_and_snapshot_options(tmp_path, capsys, args, message):
    line = _one_line_error(capsys, "distill", "--model", TINY, "--teacher", "t.pth", *args, "--out", str(tmp_path / "o"))
    assert message in line
    assert not (tmp_path / "o").exists()


def test_save_epochs_yaml_list_and_teacher_option(tmp_path):
    assert build_config(None, {"save_epochs": [4, 1, 2], "epochs": 4}).snapshot_epochs == (1, 2, 4)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("save-epochs: [2, 1]\nepochs: 3\n")
    from ftervit.cli import build_parser
    from ftervit.cli.training_args import config_from_args

    args = build_parser().parse_args(["teacher", "-c", str(cfg_file)])
    assert config_from_args(args, "teacher").snapshot_epochs == (1, 2)


def test_snapshot_equals_the_weights_at_that_epoch_of_an_uninterrupted_run(trained, tmp_path):
    settings = dict(mode="distill", teacher=str(trained["teacher"]), epochs=3, lr=1e-3)
    train(tiny_config(tmp_path, "full", save_epochs="1,2", **settings))
    out = tmp_path / "full"
    assert sorted(p.name for p in out.glob("epoch_*.pth")) == ["epoch_001.pth", "epoch_002.pth"]
    # The reference: the same run, stopped after epoch 2 (its last.pth holds epoch 2's weights).
    train_stopped_after(tiny_config(tmp_path, "cut", **settings), 2)
    snap, ref = state_of(out / "epoch_002.pth"), state_of(tmp_path / "cut" / "last.pth")
    assert snap.keys() == ref.keys() and all(torch.equal(snap[k], ref[k]) for k in snap)
    assert torch.load(out / "epoch_001.pth", weights_only=True)["epoch"] == 1
    assert not all(torch.equal(snap[k], state_of(out / "last.pth")[k]) for k in snap)  # epoch 3 moved on
    # --resume is unchanged: it continues from last.pth (epoch 2) and adds the snapshots asked for now
    train(tiny_config(tmp_path, "cut", resume=True, save_epochs="3", **settings))
    final = state_of(out / "last.pth")
    assert all(torch.equal(final[k], state_of(tmp_path / "cut" / "epoch_003.pth")[k]) for k in final)


def test_snapshot_is_accepted_by_init_and_eval(trained, tmp_path, capsys):
    teacher = str(trained["teacher"])
    train(tiny_config(tmp_path, "p1", mode="distill", teacher=teacher, epochs=2, lr=1e-3, save_epochs="1"))
    snap = tmp_path / "p1" / "epoch_001.pth"
    before = torch.load(snap, weights_only=True)["history"][-1]["val_top1"]
    assert main(["eval", "--model", TINY, "--checkpoint", str(snap), "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ternary"]["top1"] == pytest.approx(before)
    result = train(tiny_config(tmp_path, "p2", mode="distill", phase=2, teacher=teacher, init=str(snap), lr=None))
    assert result["epochs"] == 1 and 0 <= result["top1"] <= 1
    # the teacher takes snapshots too, and --init of a teacher snapshot starts another teacher run
    train(tiny_config(tmp_path, "t", epochs=2, save_epochs="1"))
    train(tiny_config(tmp_path, "t2", init=str(tmp_path / "t" / "epoch_001.pth")))


def test_ce_weight_adds_the_cross_entropy(trained, tmp_path, monkeypatch):
    import ftervit.training.trainer as trainer

    seen = []
    real_ce = trainer.cross_entropy

    def recorded(*args, **kwargs):
        loss = real_ce(*args, **kwargs)
        seen.append(loss.item())
        return loss

    monkeypatch.setattr(trainer, "cross_entropy", recorded)
    monkeypatch.setattr(trainer, "distillation_kl", lambda s, t, temperature: 0.0 * s.sum())
    result = train(tiny_config(tmp_path, "ce", mode="distill", teacher=str(trained["teacher"]), ce_weight=0.5))
    assert len(seen) == 1437 // 64
    assert result["history"][0]["train_loss"] == pytest.approx(0.5 * sum(seen) / len(seen), rel=1e-5)


def test_resume_of_a_checkpoint_written_before_these_options(trained, tmp_path):
    settings = dict(mode="distill", teacher=str(trained["teacher"]), epochs=2, lr=1e-3)
    train_stopped_after(tiny_config(tmp_path, "old", **settings), 1)
    last = tmp_path / "old" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    for key in ("quant", "scope", "weight_scale", "ce_weight", "save_epochs"):
        del ckpt["config"][key]
    torch.save(ckpt, last)
    assert train(tiny_config(tmp_path, "old", resume=True, **settings))["epochs"] == 2
