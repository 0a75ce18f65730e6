"""A functional PyTorch forward of FTerViT written from SPEC sections 1-2, for tests only.

It shares no code with ftervit and uses no ftervit module: the quantizers and the ViT forward
are written again, in the reference's op order (straight-through values, FP32), from a plain
state dict with timm names. A quantized network amplifies any rounding difference, so this
op order is what an independent implementation must follow to agree to 1e-3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def wq(w):
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    return w + ((w * s).round().clamp(-1, 1) / s - w)


def wq_rows(w):
    s = 1.0 / w.abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-5)
    return w + ((w * s).round().clamp(-1, 1) / s - w)


def aq(x, dims=(-1,)):
    s = 127.0 / x.abs().amax(dim=dims, keepdim=True).clamp(min=1e-5)
    return x + ((x * s).round().clamp(-128, 127) / s - x)


@torch.no_grad()
def vit_forward(sd, img, *, patch, heads, eps=1e-6, no_embed_class=False):
    """Logits (N, classes) for NCHW ``img``; ``sd`` maps timm names to tensors."""
    def lin(p, x):
        h = F.rms_norm(x, (x.shape[-1],), sd[f"{p}.norm.weight"], eps=1e-5)
        return F.linear(aq(h), wq(sd[f"{p}.weight"]))  # the bias is never added

    def ln(p, x):
        return F.layer_norm(x, (x.shape[-1],), wq(sd[f"{p}.weight"]), wq(sd[f"{p}.bias"]), eps)

    w = wq_rows(sd["patch_embed.proj.weight"]) * sd["patch_embed.proj.channel_scale"].view(-1, 1, 1, 1)
    x = F.conv2d(aq(img, dims=(-2, -1)), w, sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    cls = sd["cls_token"].expand(x.shape[0], -1, -1)
    if no_embed_class:
        x = torch.cat([cls, x + sd["pos_embed"]], dim=1)
    else:
        x = torch.cat([cls, x], dim=1) + sd["pos_embed"]
    b_, n, dim = x.shape
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}"
        ls1, ls2 = sd.get(f"{b}.ls1.gamma", 1.0), sd.get(f"{b}.ls2.gamma", 1.0)
        qkv = lin(f"{b}.attn.qkv", ln(f"{b}.norm1", x)).reshape(b_, n, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b_, n, dim)
        x = x + ls1 * lin(f"{b}.attn.proj", o)
        x = x + ls2 * lin(f"{b}.mlp.fc2", F.gelu(lin(f"{b}.mlp.fc1", ln(f"{b}.norm2", x))))
    return lin("head", ln("norm", x)[:, 0])
