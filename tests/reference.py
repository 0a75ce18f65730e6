"""An independent NumPy implementation of SPEC sections 1-2, for tests only.

It shares no code with ftervit: quantizers, operators and the whole ViT forward are written
again from the SPEC, in float32 NumPy (np.rint rounds half to even, like torch.round).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

F32 = np.float32


def ternary(w):
    s = F32(1.0) / max(F32(np.abs(w).mean(dtype=F32)), F32(1e-5))
    return np.clip(np.rint(w * s), -1, 1), s


def ternary_rows(w):
    m = np.abs(w.reshape(w.shape[0], -1)).mean(axis=1, dtype=F32)
    s = (F32(1.0) / np.maximum(m, F32(1e-5))).astype(F32)
    return np.clip(np.rint(w * s.reshape(-1, *([1] * (w.ndim - 1)))), -1, 1), s


def int8_tokens(x):
    s = (F32(127.0) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), F32(1e-5))).astype(F32)
    return np.clip(np.rint(x * s), -128, 127), s


def int8_channels(x):
    s = (F32(127.0) / np.maximum(np.abs(x).max(axis=(-2, -1), keepdims=True), F32(1e-5))).astype(F32)
    return np.clip(np.rint(x * s), -128, 127), s


def rmsnorm(x, g, eps=1e-5):
    return (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + F32(eps)) * g).astype(F32)


def bit_linear(x, p):
    """p: dict with weight, norm (RMSNorm weight). The bias is not added (reference)."""
    q, sx = int8_tokens(rmsnorm(x, p["norm"]))
    c, sw = ternary(p["weight"])
    return ((q @ c.T) / (sx * sw)).astype(F32)


def layer_norm(x, p, eps):
    g, sg = ternary(p["weight"])
    b, sb = ternary(p["bias"])
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + F32(eps)) * (g / sg) + b / sb).astype(F32)


def patch_conv(img, p, patch):
    """Patch embedding (kernel = stride = patch) of one CHW image -> (tokens, dim)."""
    q, s = int8_channels(img)
    x = q / s
    c, h, w = x.shape
    gh, gw = h // patch, w // patch
    patches = x.reshape(c, gh, patch, gw, patch).transpose(1, 3, 0, 2, 4).reshape(gh * gw, -1)
    wc, ws = ternary_rows(p["weight"])
    wq = (wc / ws.reshape(-1, 1, 1, 1)) * p["channel_scale"].reshape(-1, 1, 1, 1)
    return (patches @ wq.reshape(wq.shape[0], -1).T + p["bias"]).astype(F32)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def vit_forward(sd: dict, img, *, patch, heads, eps=1e-6, no_embed_class=False):
    """Full FTerViT forward of one CHW image from a state dict of float32 arrays (timm names)."""
    def lin(prefix, x):
        return bit_linear(x, {"weight": sd[f"{prefix}.weight"], "norm": sd[f"{prefix}.norm.weight"]})

    def ln(prefix, x):
        return layer_norm(x, {"weight": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}, eps)

    x = patch_conv(img, {k: sd[f"patch_embed.proj.{k}"] for k in ("weight", "bias", "channel_scale")}, patch)
    cls = sd["cls_token"][0]
    pos = sd["pos_embed"][0]
    x = np.concatenate([cls, x + pos]) if no_embed_class else np.concatenate([cls, x]) + pos
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n, dim = x.shape
    hd = dim // heads
    for i in range(depth):
        b = f"blocks.{i}"
        ls1 = sd.get(f"{b}.ls1.gamma", np.ones(dim, F32))
        ls2 = sd.get(f"{b}.ls2.gamma", np.ones(dim, F32))
        qkv = lin(f"{b}.attn.qkv", ln(f"{b}.norm1", x)).reshape(n, 3, heads, hd).transpose(1, 2, 0, 3)
        q, k, v = qkv
        att = softmax(q @ k.transpose(0, 2, 1) * F32(hd ** -0.5))
        o = (att @ v).transpose(1, 0, 2).reshape(n, dim)
        x = x + ls1 * lin(f"{b}.attn.proj", o)
        h = lin(f"{b}.mlp.fc1", ln(f"{b}.norm2", x))
        h = F32(0.5) * h * (F32(1.0) + erf(h / np.sqrt(F32(2.0))))
        x = x + ls2 * lin(f"{b}.mlp.fc2", h.astype(F32))
    x = ln("norm", x)
    return lin("head", x[:1])[0]
