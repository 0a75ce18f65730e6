"""Each operator against the independent NumPy re-computation in reference.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference as ref
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm, set_eval_precision
from ftervit.quantization import int8_per_token, ternary_absmean


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture
def bit_linear():
    torch.manual_seed(0)
    m = BitLinear(48, 20)
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    return m


def test_bit_linear_matches_reference(bit_linear):
    x = torch.randn(3, 5, 48)
    with torch.no_grad():
        y = bit_linear(x)
    expect = ref.bit_linear(x.numpy(), {"weight": bit_linear.weight.detach().numpy(),
                                        "norm": bit_linear.norm.weight.detach().numpy()})
    assert y.shape == (3, 5, 20)
    assert rel_err(y, expect) < 1e-5


def test_bit_linear_bias_is_never_added(bit_linear):
    x = torch.randn(4, 48)
    with torch.no_grad():
        y0 = bit_linear(x)
        bit_linear.bias.add_(100.0)
        y1 = bit_linear(x)
    assert torch.equal(y0, y1)
    y = bit_linear(x.requires_grad_())
    y.sum().backward()
    assert bit_linear.bias.grad is None


def test_bit_linear_training_and_inference_paths_agree(bit_linear):
    x = torch.randn(6, 48, requires_grad=True)
    y_train = bit_linear(x)
    with torch.no_grad():
        y_eval = bit_linear(x)
    assert torch.allclose(y_train, y_eval, rtol=1e-5, atol=1e-5)


def test_bit_linear_straight_through_gradients(bit_linear):
    x = torch.randn(6, 48, requires_grad=True)
    g = torch.randn(6, 20)
    (bit_linear(x) * g).sum().backward()
    # STE: d/dW = g^T xq_deq, with the activation quantizer also passed straight through.
    h = bit_linear.norm(x.detach())
    codes, scale = int8_per_token(h)
    expected_w_grad = g.T @ (codes / scale)
    assert torch.allclose(bit_linear.weight.grad, expected_w_grad, rtol=1e-4, atol=1e-5)
    # d/dh = g W_q, then through RMSNorm: compare against autograd of the explicit formula.
    wc, ws = ternary_absmean(bit_linear.weight.detach())
    x2 = x.detach().clone().requires_grad_()
    (F.linear(bit_linear.norm(x2), wc / ws) * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, rtol=1e-4, atol=1e-6)
    assert bit_linear.norm.weight.grad is not None


def test_bit_linear_bf16_eval_path_is_close_not_exact(bit_linear):
    x = torch.randn(8, 48)
    with torch.no_grad():
        y32 = bit_linear(x)
        set_eval_precision(bit_linear, "bf16")
        y16 = bit_linear(x)
    assert y16.dtype == torch.float32
    assert not torch.equal(y32, y16)
    assert rel_err(y16, y32) < 1e-2
    with pytest.raises(ValueError, match="fp32"):
        bit_linear.eval_precision = "fp8"


def test_bit_conv2d_matches_reference():
    torch.manual_seed(1)
    m = BitConv2d(3, 16, kernel_size=4, stride=4)
    with torch.no_grad():
        m.channel_scale.uniform_(0.5, 2.0)
        m.bias.normal_()
    img = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        y = m(img)  # (1, 16, 4, 4)
    p = {k: getattr(m, k).detach().numpy() for k in ("weight", "bias", "channel_scale")}
    expect = ref.patch_conv(img[0].numpy(), p, 4)  # (16 tokens, 16 channels)
    got = y[0].flatten(1).T.numpy()
    assert rel_err(got, expect) < 1e-5
    y_train = m(img.requires_grad_())
    assert torch.allclose(y_train, y, rtol=1e-5, atol=1e-5)


def test_bit_conv2d_gradients_reach_weight_and_channel_scale():
    m = BitConv2d(1, 4, kernel_size=2, stride=2)
    m(torch.randn(2, 1, 4, 4)).sum().backward()
    assert m.weight.grad.abs().sum() > 0 and m.channel_scale.grad.abs().sum() > 0
    assert m.bias.grad is not None


def test_ternary_layer_norm_matches_reference():
    torch.manual_seed(2)
    m = TernaryLayerNorm(32, eps=1e-6)
    with torch.no_grad():
        m.weight.normal_(1.0, 0.5)
        m.bias.normal_(0.0, 0.3)
    x = torch.randn(5, 32) * 3 + 1
    with torch.no_grad():
        y = m(x)
    expect = ref.layer_norm(x.numpy(), {"weight": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}, 1e-6)
    assert rel_err(y, expect) < 1e-5


def test_ternary_layer_norm_keeps_fp32_statistics_for_low_precision_input():
    m = TernaryLayerNorm(16)
    x = torch.randn(4, 16) * 100
    y16 = m(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    assert torch.allclose(y16.float(), m(x.to(torch.bfloat16).float()), atol=1e-2)
    m(x.requires_grad_()).sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None
