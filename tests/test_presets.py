"""Presets for the built-in data are ordinary timm names."""
import pytest
import timm
import torch

from ftervit import create_model
from ftervit.layers import BitLinear


@pytest.mark.parametrize("name,shape", [("ftervit_digits", (1, 8, 8)), ("ftervit_fashion_mnist", (1, 28, 28)),
                                        ("ftervit_fashion_mnist_gap", (1, 28, 28))])
def test_preset_through_timm_and_ftervit(name, shape):
    assert name in timm.list_models("ftervit_*")
    fp32 = timm.create_model(name)
    assert fp32.pretrained_cfg["input_size"] == shape and len(fp32.pretrained_cfg["mean"]) == 1
    model = create_model(name, num_classes=5).eval()
    assert isinstance(model.head, BitLinear) and model.head.out_features == 5
    with torch.no_grad():
        assert model(torch.randn(3, *shape)).shape == (3, 5)


def test_gap_preset_pools_the_patch_tokens_and_exports(tmp_path):
    """ftervit_fashion_mnist_gap: the mean of the 16 patch tokens after fc_norm, not the class token;
    the exported file says so and the C engine computes the same logits."""
    import numpy as np

    from ftervit.engine import Engine
    from ftervit.export import read, write
    from ftervit.export.format import Flag

    torch.manual_seed(0)
    model = create_model("ftervit_fashion_mnist_gap").eval()
    assert model.global_pool == "avg" and model.num_prefix_tokens == 1
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        tokens = model.forward_features(x)
        want = model.head(model.fc_norm(tokens[:, 1:].mean(dim=1)))
        got = model(x)
    torch.testing.assert_close(got, want)
    path = tmp_path / "gap.ftv"
    write(model, path, "tq2")
    assert Flag.AVG_POOL in read(path).config.flags
    engine_logits = Engine(path).forward(x.numpy())
    assert (engine_logits.argmax(1) == got.argmax(1).numpy()).all()
    np.testing.assert_allclose(engine_logits, got.numpy(), rtol=0.05, atol=0.05 * float(got.abs().max()))
