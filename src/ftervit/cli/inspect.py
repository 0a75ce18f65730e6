"""``ftervit inspect FILE``: header, tensor table, totals and checksum of a .ftv file."""
from __future__ import annotations

import argparse

from ftervit.cli.common import format_table, print_json
from ftervit.export.format import Flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="show and check a .ftv file",
        description="Check a .ftv file (magic, version, sizes, CRC32, every tensor) and print its "
                    "header, tensor table, totals, bits per weight and compression against FP32 "
                    "(MB = 1e6). A damaged file is a one-line error with exit code 2.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def describe(path: str) -> dict:
    """Everything ``inspect`` shows, as plain data (raises FormatError for a bad file)."""
    from ftervit.analysis.size import file_totals
    from ftervit.export import read

    f = read(path)
    c = f.config
    config = {
        "img_size": list(c.img_size), "patch_size": list(c.patch_size), "in_chans": c.in_chans,
        "embed_dim": c.embed_dim, "depth": c.depth, "num_heads": c.num_heads, "mlp_hidden": c.mlp_hidden,
        "num_classes": c.num_classes, "flags": [flag.name.lower() for flag in Flag if flag in c.flags],
        "mean": list(c.mean), "std": list(c.std), "ln_eps": c.ln_eps, "rms_eps": c.rms_eps,
        "quant_eps": c.quant_eps,
    }
    tensors = [{"name": e.name, "kind": e.kind.name.lower(), "shape": list(e.shape), "offset": e.offset,
                "nbytes": e.nbytes, **({"scale": e.scale} if e.scale else {})} for e in f.entries]
    return {
        "file": str(path), "format_version": f.version, "format": f.format.name.lower(), "config": config,
        "class_names": f.class_names, "tensors": tensors, "source_params": f.source_params,
        **file_totals(c, f.entries, f.file_size, f.source_params),
        "checksum": f"{f.checksum:08x}", "checksum_ok": True,  # read() refuses a file whose CRC differs
    }


def run(args: argparse.Namespace) -> int:
    d = describe(args.file)
    if args.json:
        print_json(d)
        return 0
    c = d["config"]
    print(f"{d['file']}: FTerViT .ftv version {d['format_version']}, {d['format']}, "
          f"{d['total_bytes']:,} bytes ({d['total_mb']:.2f} MB), CRC32 {d['checksum']} OK")
    print(f"model: {c['img_size'][0]}x{c['img_size'][1]} input, {c['in_chans']} channels, patch "
          f"{c['patch_size'][0]}x{c['patch_size'][1]}, dim {c['embed_dim']}, depth {c['depth']}, "
          f"{c['num_heads']} heads, MLP {c['mlp_hidden']}, {c['num_classes']} classes")
    print(f"flags: {', '.join(c['flags']) or '-'}; eps: LayerNorm {c['ln_eps']:.3g}, RMSNorm "
          f"{c['rms_eps']:.3g}, quantizers {c['quant_eps']:.3g}")
    print(f"input: mean {tuple(round(m, 4) for m in c['mean'])}, std {tuple(round(s, 4) for s in c['std'])}")
    if d["class_names"]:
        shown = ", ".join(d["class_names"][:10]) + (", ..." if len(d["class_names"]) > 10 else "")
        print(f"class names: {shown}")
    print()
    rows = [[t["name"], t["kind"], "x".join(map(str, t["shape"])), t["offset"], t["nbytes"],
             f"{t['scale']:.6g}" if "scale" in t else ""] for t in d["tensors"]]
    print(format_table(["tensor", "kind", "shape", "offset", "bytes", "scale"], rows))
    print()
    print(f"ternary: {d['ternary_params']:,} weights in {d['ternary_bytes']:,} bytes "
          f"({d['bits_per_weight']:.3f} bits per weight)")
    print(f"float: {d['float_params']:,} parameters in {d['float_bytes']:,} bytes; header, table, "
          f"scales, padding, CRC: {d['other_bytes']:,} bytes")
    print(f"whole file: {d['bits_per_param']:.3f} bits per parameter, {d['leftover_percent']:.1f}% "
          f"of the bytes outside ternary codes")
    print(f"FP32 model: {d['source_params']:,} parameters, {d['fp32_mb']:.2f} MB -> "
          f"{d['total_mb']:.2f} MB, compression {d['compression']:.1f}x (MB = 1e6)")
    return 0
