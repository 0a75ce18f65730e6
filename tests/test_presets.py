"""Presets for the built-in data are ordinary timm names."""
import pytest
import timm
import torch

from ftervit import create_model
from ftervit.layers import BitLinear


@pytest.mark.parametrize("name,shape", [("ftervit_digits", (1, 8, 8)), ("ftervit_fashion_mnist", (1, 28, 28))])
def test_preset_through_timm_and_ftervit(name, shape):
    assert name in timm.list_models("ftervit_*")
    fp32 = timm.create_model(name)
    assert fp32.pretrained_cfg["input_size"] == shape and len(fp32.pretrained_cfg["mean"]) == 1
    model = create_model(name, num_classes=5).eval()
    assert isinstance(model.head, BitLinear) and model.head.out_features == 5
    with torch.no_grad():
        assert model(torch.randn(3, *shape)).shape == (3, 5)
