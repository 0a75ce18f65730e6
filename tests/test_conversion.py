"""make_ternary: coverage, weight copying, refusal of unsupported models."""
import pytest
import timm
import torch
import torch.nn as nn

from ftervit import UnsupportedModelError, create_model, make_ternary
from ftervit.analysis.params import summarize
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm

PLAIN = (nn.Linear, nn.Conv2d, nn.LayerNorm)


def plain_layers(model):
    return [n for n, m in model.named_modules() if type(m) in PLAIN or
            (isinstance(m, PLAIN) and not isinstance(m, (BitLinear, BitConv2d, TernaryLayerNorm)))]


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit3_small_patch16_224",
                                  "deit3_small_patch16_384", "vit_small_patch16_224"])
def test_no_plain_layer_left_and_full_coverage(name):
    model = create_model(name)
    assert plain_layers(model) == []
    counts = {t: sum(isinstance(m, t) for m in model.modules()) for t in (BitLinear, BitConv2d, TernaryLayerNorm)}
    depth = len(model.blocks)
    assert counts == {BitLinear: 4 * depth + 1, BitConv2d: 1, TernaryLayerNorm: 2 * depth + 1}
    cov = summarize(model)["coverage_percent"]
    assert cov == {"weight_matrices": 100.0, "norm_params": 100.0}


def test_weights_copied_and_extras_start_at_one():
    teacher = timm.create_model("deit3_small_patch16_224", num_classes=7, img_size=64)
    student = make_ternary(timm.create_model("deit3_small_patch16_224", num_classes=7, img_size=64))
    student.load_state_dict({k: v for k, v in teacher.state_dict().items()}, strict=False)
    ref_sd = teacher.state_dict()
    student = make_ternary(teacher)  # in place: the same object comes back
    assert student is teacher
    sd = student.state_dict()
    for k, v in ref_sd.items():
        assert torch.equal(sd[k], v), k
    extra = set(sd) - set(ref_sd)
    assert extra and all(k.endswith(("norm.weight", "channel_scale")) for k in extra)
    assert all(sd[k].eq(1).all() for k in extra)
    assert student.blocks[0].ls1.gamma.dtype == torch.float32


def test_any_geometry_and_class_count():
    model = create_model("deit_tiny_patch16_224", img_size=48, patch_size=8, in_chans=1, num_classes=3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 48, 48))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_converting_twice_is_a_no_op():
    model = create_model("ftervit_digits")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make_ternary(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_vit_refused():
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        make_ternary(nn.Sequential(nn.Linear(2, 2)))


def test_unknown_layer_refused_and_model_untouched():
    model = timm.create_model("ftervit_digits")
    model.blocks[1].extra = nn.BatchNorm1d(64)
    with pytest.raises(UnsupportedModelError, match=r"blocks\.1\.extra \(BatchNorm1d\)"):
        make_ternary(model)
    assert not any(isinstance(m, (BitLinear, BitConv2d, TernaryLayerNorm)) for m in model.modules())


def test_unsupported_block_type_refused():
    model = timm.create_model("vit_small_patch16_224", img_size=32, block_fn=timm.models.vision_transformer.ResPostBlock)
    with pytest.raises(UnsupportedModelError, match="ResPostBlock"):
        make_ternary(model)


def test_attention_pool_refused():
    model = timm.create_model("vit_small_patch16_224", img_size=32, global_pool="map")
    with pytest.raises(UnsupportedModelError, match="global_pool"):
        make_ternary(model)
