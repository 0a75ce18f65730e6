"""Attention rollout: captured probabilities and the folding against an independent NumPy computation."""
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from ftervit import make_ternary
from ftervit.analysis.rollout import attention_probabilities, attention_rollout, rollout
from ftervit.errors import FtervitError


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=24, depth=3, num_heads=3)
    return timm.models.VisionTransformer(**{**args, **kw}).eval()


def _numpy_rollout(attns: list[np.ndarray], prefix: int, class_token: bool) -> np.ndarray:
    """Abnar & Zuidema's recipe written out per image with explicit loops over layers."""
    n, _, t, _ = attns[0].shape
    maps = []
    for i in range(n):
        r = np.eye(t)
        for a in attns:
            m = 0.5 * (a[i].astype(np.float64).mean(axis=0) + np.eye(t))
            m /= m.sum(axis=1, keepdims=True)
            r = m @ r
        maps.append(r[0, prefix:] if class_token else r.mean(axis=0)[prefix:])
    return np.stack(maps)


def test_captured_probabilities_match_a_hand_computed_first_block():
    model = _vit(depth=1)
    x = torch.randn(2, 3, 16, 16)
    _, (probs,) = attention_probabilities(model, x)
    with torch.no_grad():
        h = model._pos_embed(model.patch_embed(x))
        h = model.blocks[0].norm1(h)
        qkv = model.blocks[0].attn.qkv(h).reshape(2, 17, 3, 3, 8).permute(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(-2, -1) / np.sqrt(8)
    np.testing.assert_allclose(probs.numpy(), scores.softmax(-1).numpy(), rtol=1e-5, atol=1e-6)
    assert model.blocks[0].attn.fused_attn == timm.layers.use_fused_attn()  # restored after capture


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_rollout_matches_numpy_and_sums_to_one(pool):
    model = make_ternary(_vit(global_pool=pool, class_token=pool == "token"))
    x = torch.randn(3, 3, 16, 16)
    logits, maps = attention_rollout(model, x)
    _, attns = attention_probabilities(model, x)
    prefix = model.num_prefix_tokens
    expect = _numpy_rollout([a.numpy() for a in attns], prefix, pool == "token")
    assert maps.shape == (3, 4, 4)
    np.testing.assert_allclose(maps.reshape(3, -1).numpy(), expect, rtol=1e-12)
    with torch.no_grad():  # the unfused attention path differs from the fused one by rounding only
        np.testing.assert_allclose(logits.numpy(), model(x).numpy(), atol=1e-6)
    # rows of R sum to 1, so a map plus its prefix share sums to 1
    assert float(maps.sum()) <= 3 + 1e-9


def test_rollout_of_uniform_attention_is_uniform():
    t = 5
    uniform = torch.full((2, 4, t, t), 1 / t)
    maps = rollout([uniform] * 3, num_prefix_tokens=1, grid=(2, 2), class_token=True)
    # every (A + I)/2 keeps the class token's self-weight above the rest; the patches stay equal
    assert torch.allclose(maps, maps[:, :1, :1].expand_as(maps))


def test_rollout_refusals():
    with pytest.raises(FtervitError, match="no timm ViT attention"):
        attention_rollout(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), torch.zeros(1, 3))
    with pytest.raises(FtervitError, match="grid"):
        rollout([torch.full((1, 1, 5, 5), 0.2)], num_prefix_tokens=1, grid=(3, 3), class_token=True)
