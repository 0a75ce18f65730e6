"""Quantizers against hand-computed values (SPEC section 1)."""
import pytest
import torch

from ftervit.quantization import (
    fake_quant,
    int8_per_channel,
    int8_per_token,
    ste,
    ternary_absmean,
    ternary_absmean_per_channel,
)


def test_ternary_absmean_hand_values():
    w = torch.tensor([0.5, -1.5, 0.25, 0.0])  # mean|w| = 0.5625, s = 16/9
    codes, scale = ternary_absmean(w)
    assert scale.item() == pytest.approx(16 / 9)
    # w*s = [0.889, -2.667, 0.444, 0] -> round [1, -3, 0, 0] -> clamp [1, -1, 0, 0]
    assert codes.tolist() == [1.0, -1.0, 0.0, 0.0]


def test_ternary_ties_round_half_to_even():
    w = torch.tensor([0.5, -0.5, 1.5, 1.5, 1.0])  # mean|w| = 1 exactly, s = 1
    codes, scale = ternary_absmean(w)
    assert scale.item() == 1.0
    # 0.5 and -0.5 round to 0 (half to even), not to +-1 as half-away-from-zero would.
    assert codes.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_ternary_all_zero_tensor_is_finite():
    codes, scale = ternary_absmean(torch.zeros(7))
    assert scale.item() == pytest.approx(1e5)
    assert codes.abs().sum() == 0
    assert torch.isfinite(codes / scale).all()


def test_ternary_per_channel_independent_scales():
    w = torch.zeros(3, 2, 2, 2)
    w[0] = 1.0          # mean 1 -> all +1
    w[1, 0] = -4.0      # mean 2 -> -4*0.5 = -2 -> clamp -1; zeros stay 0
    w[2] = 0.0          # all-zero channel
    codes, scale = ternary_absmean_per_channel(w)
    assert scale.shape == (3, 1, 1, 1)
    assert scale.flatten()[:2].tolist() == [1.0, 0.5]
    assert scale.flatten()[2].item() == pytest.approx(1e5)
    assert codes[0].eq(1).all() and codes[1, 0].eq(-1).all() and codes[1, 1].eq(0).all()
    assert codes[2].eq(0).all()


def test_int8_per_token_hand_values_and_ties():
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, -127.0]])  # max 127 -> s = 1
    codes, scale = int8_per_token(x)
    assert scale.item() == 1.0
    assert codes.tolist() == [[127.0, 0.0, 2.0, 2.0, -0.0, -2.0, -127.0]]


def test_int8_per_token_scales_each_row_and_clamps():
    x = torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 3.0, 1.0]])
    codes, scale = int8_per_token(x)
    assert scale.shape == (3, 1)
    assert codes[0].tolist() == [127.0, -64.0, 0.0]  # -63.5 -> -64 (half to even)
    assert codes[1].tolist() == [0.0, 0.0, 0.0]
    assert scale[1].item() == pytest.approx(127 / 1e-5)
    assert codes[2].tolist() == [-127.0, 127.0, 42.0]  # 42.33 -> 42
    assert codes.min() >= -128 and codes.max() <= 127


def test_int8_tiny_values_use_eps_floor():
    x = torch.full((1, 4), 1e-7)
    codes, scale = int8_per_token(x)
    assert scale.item() == pytest.approx(127 / 1e-5)
    assert codes.tolist() == [[1.0] * 4]  # 1e-7 * 1.27e7 = 1.27 -> 1


def test_int8_per_channel_nchw():
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, 0] = 2.0
    x[0, 0, 1, 1] = 1.0
    x[1, 2] = -0.5
    codes, scale = int8_per_channel(x)
    assert scale.shape == (2, 3, 1, 1)
    assert codes[0, 0, 0, 0] == 127 and codes[0, 0, 1, 1] == 64  # 63.5 -> 64 (even)
    assert codes[1, 2].eq(-127).all()
    assert codes[0, 1].eq(0).all()
    with pytest.raises(ValueError, match="NCHW"):
        int8_per_channel(torch.zeros(3, 4, 4))


def test_ste_forward_value_and_identity_gradient():
    w = torch.tensor([0.3, -2.0, 0.1, 0.9], requires_grad=True)
    y = fake_quant(w, ternary_absmean)
    codes, scale = ternary_absmean(w.detach())
    assert torch.allclose(y.detach(), codes / scale, rtol=0, atol=1e-7)  # x + (q - x): one rounding
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_ste_passes_gradient_through_round():
    x = torch.tensor([0.2, 0.7], requires_grad=True)
    y = ste(x, x.round())
    assert y.tolist() == [0.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
