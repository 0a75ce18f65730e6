"""Model -> .ftv bytes, and the atomic write of the file (layout in format.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from timm.layers import LayerScale, Mlp
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from ftervit.errors import FtervitError, UnsupportedModelError
from ftervit.fileio import atomic_write
from ftervit.export.format import (
    ALIGNMENT,
    CLASS_NAMES,
    CRC_SIZE,
    CRC_STRUCT,
    ENTRY_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_ABS_MEAN,
    MAX_CHANNELS,
    MAX_STD,
    MIN_STD,
    NAME_SIZE,
    ROW_SCALE,
    TERNARY,
    TERNARY_ROWS,
    VERSION,
    Flag,
    FormatError,
    Kind,
    ModelConfig,
    TensorEntry,
    WeightFormat,
    align_up,
    crc32,
    pack_header,
    pack_ternary,
    row_bytes,
    rows_and_k,
    tensor_specs,
    ternary_kind,
)
from ftervit.export.reader import parse
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm
from ftervit.quantization import EPS, ternary_absmean, ternary_absmean_per_channel

_FTERVIT_TYPES = (BitLinear, BitConv2d, TernaryLayerNorm)
# Storage of the floating-point leftovers (docs/format.md gives the measurements of
# benchmarks/format_precision.py). FP16 changes a trained model's logits measurably, though
# less than the reference's bf16 eval path; it is used only where the published file sizes
# need it: pos_embed and the RMSNorm weights hold 91% of the leftover values in DeiT-III-S.
FLOAT_KINDS: dict[str, Kind] = {
    "patch_bias": Kind.F32,
    "channel_scale": Kind.F32,
    "cls_token": Kind.F32,
    "pos_embed": Kind.F16,
    "rmsnorm": Kind.F16,
    "layerscale": Kind.F32,
}
_F16_EPS = 2.0 ** -11  # FP16 round-to-nearest relative error bound


@dataclass(frozen=True)
class Packed:
    """A model encoded as a .ftv file: the bytes and the table that describes them."""

    config: ModelConfig
    format: WeightFormat
    entries: list[TensorEntry]
    data: bytes


def _fits_f16(v: np.ndarray) -> bool:
    """True when FP16 keeps the tensor to FP16's precision relative to its largest value.

    This rejects overflow (|x| > 65504) and tensors whose values are all tiny (FP16
    subnormals), which FP16 would store with a large relative error.
    """
    err = np.abs(v.astype(np.float16).astype(np.float32) - v)
    return bool(np.isfinite(err).all() and err.max(initial=0.0) <= _F16_EPS * np.abs(v).max(initial=0.0))


def _unsupported_parts(model: VisionTransformer) -> list[str]:
    """What in ``model`` the format cannot express (empty when it can be exported)."""
    problems = []
    if getattr(model, "dist_token", None) is not None:
        problems.append("a distillation token (deit *_distilled_* models)")
    if model.num_reg_tokens:
        problems.append("register tokens (reg_tokens > 0)")
    if not isinstance(model.norm_pre, nn.Identity):
        problems.append("a pre-norm (pre_norm=True)")
    if model.pos_embed is None:
        problems.append("no position embedding (pos_embed='none')")
    if model.global_pool not in ("token", "avg") or (model.global_pool == "avg" and model.pool_include_prefix):
        problems.append(f"global_pool={model.global_pool!r} (use 'token' or 'avg' over patch tokens)")
    if not isinstance(model.head, BitLinear):
        problems.append("no ternary classifier head (num_classes=0?)")
    img, patch = tuple(model.patch_embed.img_size), tuple(model.patch_embed.patch_size)
    if any(i % p for i, p in zip(img, patch)):  # timm crops the remainder; the engine does not
        problems.append(f"image size {img[0]}x{img[1]} that is not a multiple of the patch size "
                        f"{patch[0]}x{patch[1]} (choose --img-size accordingly)")
    proj = model.patch_embed.proj
    if (proj.kernel_size != proj.stride or proj.padding != (0, 0) or proj.dilation != (1, 1)
            or proj.groups != 1 or not isinstance(model.patch_embed.norm, nn.Identity)):
        problems.append("a patch embedding other than one conv with kernel = stride = patch")
    for i, blk in enumerate(model.blocks):
        attn, mlp = blk.attn, blk.mlp
        if type(blk) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
            problems.append(f"blocks.{i}: only timm's Block, Attention and Mlp are supported")
            continue
        if not all(isinstance(m, nn.Identity) for m in (attn.q_norm, attn.k_norm, attn.norm, mlp.norm)):
            problems.append(f"blocks.{i}: extra norms (qk_norm, scale_attn_norm or scale_mlp_norm)")
        if type(mlp.act) is not nn.GELU or mlp.act.approximate != "none":
            problems.append(f"blocks.{i}: activation {mlp.act} (only exact nn.GELU)")
        if isinstance(blk.ls1, LayerScale) != isinstance(model.blocks[0].ls1, LayerScale) or any(
                not isinstance(ls, (LayerScale, nn.Identity)) for ls in (blk.ls1, blk.ls2)):
            problems.append(f"blocks.{i}: LayerScale must be in every block or in none")
        if blk.attn.num_heads != model.blocks[0].attn.num_heads or mlp.fc1.out_features != model.blocks[0].mlp.fc1.out_features:
            problems.append(f"blocks.{i}: heads and MLP width must be the same in every block")
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and not isinstance(m, _FTERVIT_TYPES):
            problems.append(f"{name}: {type(m).__name__} is not an FTerViT operator (FP32 or another "
                            "recipe's, e.g. ftervit distill --quant tervit or --scope encoder)")
        elif getattr(m, "weight_scale", "absmean") != "absmean":
            problems.append(f"{name}: ternary scale {m.weight_scale} (the format stores absmean codes)")
        if isinstance(m, nn.LayerNorm) and (m.weight is None or m.bias is None):
            problems.append(f"{name}: LayerNorm without weight or bias")
        if isinstance(m, nn.RMSNorm) and m.eps is None:
            problems.append(f"{name}: RMSNorm without an explicit eps")
    return problems


def _single(values: set, what: str) -> float:
    if len(values) != 1:
        raise UnsupportedModelError(f"the .ftv format stores one {what} for the model; found {sorted(values)}")
    return values.pop()


def _channel_stats(values: Sequence[float] | None, default: Sequence[float] | None, in_chans: int, what: str) -> tuple[float, ...]:
    values = default if values is None else values
    if values is None:
        raise FtervitError(f"the model has no input {what} in its pretrained_cfg; pass --{what}")
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values *= in_chans
    if len(values) != in_chans:
        raise FtervitError(f"input {what} has {len(values)} values; the model has {in_chans} input channels")
    lo, hi = (MIN_STD, MAX_STD) if what == "std" else (-MAX_ABS_MEAN, MAX_ABS_MEAN)
    if not all(lo <= v <= hi for v in values):
        need = f"positive numbers in [{lo:g}, {hi:g}]" if what == "std" else f"finite numbers in [{lo:g}, {hi:g}]"
        raise FtervitError(f"input {what} must be {need} (the engine computes (x - mean) / std), got {list(values)}")
    return values


def model_config(
    model: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    has_class_names: bool = False,
) -> ModelConfig:
    """The header configuration of a ternary timm VisionTransformer.

    Args:
        model: a model from :func:`ftervit.create_model` (or :func:`ftervit.make_ternary`).
        mean, std: input normalization per channel (one value: all channels); default the
            model's ``pretrained_cfg``.
        has_class_names: whether the file will carry class names.

    Raises:
        UnsupportedModelError: the model is not ternary or uses something the format
            cannot express (all such parts are named).
    """
    if not isinstance(model, VisionTransformer) or not isinstance(getattr(model.patch_embed, "proj", None), BitConv2d):
        raise UnsupportedModelError(
            "export needs a ternary timm VisionTransformer: build it with ftervit.create_model "
            f"or convert it with ftervit.make_ternary (got {type(model).__name__})")
    problems = _unsupported_parts(model)
    if problems:
        raise UnsupportedModelError("the .ftv format cannot express: " + "; ".join(problems))
    proj, blk = model.patch_embed.proj, model.blocks[0]
    in_chans = proj.in_channels
    if in_chans > MAX_CHANNELS:
        raise UnsupportedModelError(f"the .ftv header holds up to {MAX_CHANNELS} input channels; the model has {in_chans}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    flags = Flag(0)
    for flag, on in ((Flag.CLASS_TOKEN, model.cls_token is not None),
                     (Flag.NO_EMBED_CLASS, model.no_embed_class),
                     (Flag.LAYER_SCALE, isinstance(blk.ls1, LayerScale)),
                     (Flag.FINAL_NORM, isinstance(model.norm, TernaryLayerNorm)),
                     (Flag.FC_NORM, isinstance(model.fc_norm, TernaryLayerNorm)),
                     (Flag.AVG_POOL, model.global_pool == "avg"),
                     (Flag.PATCH_BIAS, proj.bias is not None),
                     (Flag.CLASS_NAMES, has_class_names)):
        if on:
            flags |= flag
    return ModelConfig(
        img_size=tuple(model.patch_embed.img_size), patch_size=tuple(model.patch_embed.patch_size),
        in_chans=in_chans, embed_dim=model.embed_dim, depth=len(model.blocks),
        num_heads=blk.attn.num_heads, mlp_hidden=blk.mlp.fc1.out_features,
        num_classes=model.head.out_features, flags=flags,
        mean=_channel_stats(mean, cfg.get("mean"), in_chans, "mean"),
        std=_channel_stats(std, cfg.get("std"), in_chans, "std"),
        ln_eps=_single({m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}, "LayerNorm eps"),
        rms_eps=_single({m.eps for m in model.modules() if isinstance(m, nn.RMSNorm)}, "RMSNorm eps"),
        quant_eps=EPS,
    )


def source_params(model: nn.Module) -> int:
    """Parameters of the FP32 model ``model`` was converted from (without the RMSNorm
    weights and channel scales that the ternary operators add): the paper's FP32 size / 4."""
    added = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.RMSNorm))
    added += sum(m.channel_scale.numel() for m in model.modules() if isinstance(m, BitConv2d))
    return sum(p.numel() for p in model.parameters()) - added


def encode_class_names(names: Sequence[str], num_classes: int) -> bytes:
    if len(names) != num_classes:
        raise FtervitError(f"{len(names)} class names for a model with {num_classes} classes")
    if any(not n or "\0" in n for n in names):
        raise FtervitError("class names must be non-empty and contain no NUL character")
    return b"".join(n.encode("utf-8") + b"\0" for n in names)


def _payloads(model: nn.Module, config: ModelConfig, fmt: WeightFormat,
              class_names: Sequence[str] | None) -> list[tuple[TensorEntry, bytes]]:
    """(entry without offset, data) for every tensor, in file order."""
    params = {k: v.detach().float().cpu() for k, v in model.named_parameters()}
    tkind = ternary_kind(fmt)
    row_scales: dict[str, np.ndarray] = {}
    out = []
    for spec in tensor_specs(config):
        if spec.group == CLASS_NAMES:
            blob = encode_class_names(class_names, config.num_classes)
            out.append((TensorEntry(spec.name, Kind.U8, (len(blob),), 0, len(blob)), blob))
            continue
        if spec.group == ROW_SCALE:
            data = row_scales.pop(spec.name).astype("<f4")
            out.append((TensorEntry(spec.name, Kind.F32, spec.shape, 0, data.nbytes), data.tobytes()))
            continue
        p = params[spec.name]
        if not torch.isfinite(p).all():
            raise FtervitError(f"parameter {spec.name} holds NaN or infinite values; the checkpoint is damaged")
        if spec.group in (TERNARY, TERNARY_ROWS):
            rows, k = rows_and_k(spec.shape)
            if spec.group == TERNARY:
                codes, scale = ternary_absmean(p)
                entry_scale = float(scale)
            else:
                codes, scale = ternary_absmean_per_channel(p)
                row_scales[spec.name + "_scale"] = scale.reshape(rows).numpy()
                entry_scale = 0.0
            data = pack_ternary(codes.reshape(rows, k).to(torch.int8).numpy(), tkind).tobytes()
            out.append((TensorEntry(spec.name, tkind, spec.shape, 0, len(data), entry_scale,
                                    row_bytes(k, tkind)), data))
            continue
        value = p.numpy()
        kind = Kind.F16 if FLOAT_KINDS[spec.group] == Kind.F16 and _fits_f16(value) else Kind.F32
        data = value.astype("<f2" if kind == Kind.F16 else "<f4").tobytes()
        out.append((TensorEntry(spec.name, kind, spec.shape, 0, len(data)), data))
    return out


def build(
    model: nn.Module,
    fmt: str | WeightFormat = "tq2",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> Packed:
    """Encode a ternary model as .ftv bytes (see docs/format.md).

    Args:
        model: a ternary timm VisionTransformer (:func:`ftervit.create_model`).
        fmt: ``"tq2"`` (2-bit codes) or ``"tq1"`` (base-3, 1.6 bits).
        mean, std: input normalization; default the model's ``pretrained_cfg``.
        class_names: optional, one per class.
    """
    fmt = fmt if isinstance(fmt, WeightFormat) else _weight_format(fmt)
    with torch.no_grad():
        config = model_config(model, mean, std, has_class_names=class_names is not None)
        payloads = _payloads(model, config, fmt, class_names)
    return assemble(config, fmt, payloads, source_params(model))


def assemble(config: ModelConfig, fmt: WeightFormat, payloads: Sequence[tuple[TensorEntry, bytes]],
             n_source_params: int, alignment: int = ALIGNMENT) -> Packed:
    """Lay out header, table and data of a file (the tensors of ``tensor_specs(config)`` in
    order, as (entry without offset, data) pairs) and check it with the reader.

    Raises:
        UnsupportedModelError: the reader would refuse the file (its reason is given).
    """
    entries, offset = [], align_up(HEADER_SIZE + ENTRY_SIZE * len(payloads), alignment)
    for entry, data in payloads:
        if len(entry.name.encode("utf-8")) >= NAME_SIZE:
            raise UnsupportedModelError(f"tensor name {entry.name!r} is longer than {NAME_SIZE - 1} bytes")
        entries.append(TensorEntry(entry.name, entry.kind, entry.shape, offset, entry.nbytes,
                                   entry.scale, entry.row_bytes))
        end = offset + entry.nbytes
        offset = align_up(end, alignment)
    file_size = end + CRC_SIZE
    buf = bytearray(file_size)
    c = config
    buf[:HEADER_SIZE] = pack_header({
        "magic": MAGIC, "version": VERSION, "header_size": HEADER_SIZE, "entry_size": ENTRY_SIZE,
        "num_tensors": len(entries), "file_size": file_size, "source_params": n_source_params,
        "format": int(fmt), "flags": int(c.flags), "alignment": alignment,
        "img_h": c.img_size[0], "img_w": c.img_size[1], "patch_h": c.patch_size[0], "patch_w": c.patch_size[1],
        "in_chans": c.in_chans, "embed_dim": c.embed_dim, "depth": c.depth, "num_heads": c.num_heads,
        "mlp_hidden": c.mlp_hidden, "num_classes": c.num_classes, "ln_eps": c.ln_eps,
        "rms_eps": c.rms_eps, "quant_eps": c.quant_eps,
        "mean": c.mean + (0.0,) * (MAX_CHANNELS - c.in_chans),
        "std": c.std + (0.0,) * (MAX_CHANNELS - c.in_chans), "reserved": b"",
    })
    for i, (entry, (_, data)) in enumerate(zip(entries, payloads)):
        buf[HEADER_SIZE + i * ENTRY_SIZE:HEADER_SIZE + (i + 1) * ENTRY_SIZE] = entry.pack()
        buf[entry.offset:entry.offset + entry.nbytes] = data
    CRC_STRUCT.pack_into(buf, file_size - CRC_SIZE, crc32(memoryview(buf)[:file_size - CRC_SIZE]))
    data = bytes(buf)
    try:  # what the reader (and the C loader, which checks the same) would refuse is never written
        parse(data)
    except FormatError as exc:
        raise UnsupportedModelError(f"the model cannot be stored in a .ftv file: {exc}") from None
    return Packed(config, fmt, entries, data)


def _weight_format(name: str) -> WeightFormat:
    try:
        return WeightFormat[name.upper()]
    except KeyError:
        raise FtervitError(f"unknown format {name!r}; use tq2 (2-bit) or tq1 (1.6-bit)") from None


def export_model(model: nn.Module, path: str | Path, fmt: str | WeightFormat = "tq2", **kwargs) -> Packed:
    """:func:`build` the file and write it atomically to ``path``; returns what was written."""
    packed = build(model, fmt, **kwargs)
    atomic_write(path, packed.data)
    return packed
