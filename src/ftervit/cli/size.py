"""``ftervit size MODEL``: bytes per layer of the .ftv file and by component for FP32,
partially ternary (TerViT's and the paper's partial W2) and fully ternary (the paper's Figure 1b)."""
from __future__ import annotations

import argparse

from ftervit.cli.common import add_model_args, check_not_input, format_table, model_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "size", help="bytes per layer and by component (FP32, partially and fully ternary)",
        description="A per-layer summary of MODEL's .ftv file (precision, parameters, bytes) and its "
                    "bytes by component for FP32, partially ternary (TerViT: encoder linear weights "
                    "only), the paper's partial W2 (every linear weight, head included, 2-bit per tensor) "
                    "and fully ternary (the .ftv file, computed by the exporter). MB = 1e6.")
    add_model_args(p)
    p.add_argument("--format", choices=("tq2", "tq1"), default="tq2", help="packing of the fully ternary file")
    p.add_argument("--plot", metavar="PNG", help="write the stacked bar chart to this file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def report(args: argparse.Namespace) -> dict:
    from ftervit.analysis.size import component_bytes, file_totals, layer_rows, leftover_percent
    from ftervit.export import build
    from ftervit.export.writer import source_params

    model = model_from_args(args)
    packed = build(model, args.format)
    components = component_bytes(model, packed)
    layers = layer_rows(packed)
    return {
        "model": args.model, "format": args.format, "layers": layers,
        "overhead_bytes": len(packed.data) - sum(r["bytes"] for r in layers),
        "unused_bias_params": sum(p.numel() for n, p in model.named_parameters() if n not in
                                  {e.name for e in packed.entries} and n.endswith(".bias")),
        "file": file_totals(packed.config, packed.entries, len(packed.data), source_params(model)),
        "components": components,
        "scenario_bytes": {s: sum(c.values()) for s, c in components.items()},
        "leftover_percent": leftover_percent(components),
    }


def run(args: argparse.Namespace) -> int:
    from ftervit.analysis.size import SCENARIOS, plot_components

    if args.plot:
        check_not_input(args.plot, args.checkpoint)
    r = report(args)
    if args.plot:
        plot_components(r["components"], f"{args.model}: bytes by component", args.plot)
    if args.json:
        print_json(r)
        return 0
    f = r["file"]
    rows = [[x["layer"], x["precision"], x["ternary_params"], x["float_params"], x["bytes"]] for x in r["layers"]]
    rows.append(["header, table, scales, padding, CRC", "", "", "", r["overhead_bytes"]])
    print(f"{args.model}: per layer, as stored in the {args.format} .ftv file")
    print(format_table(["layer", "precision", "ternary params", "float params", "bytes"], rows))
    print(f"\ntotal params: {f['ternary_params'] + f['float_params']:,} (ternary {f['ternary_params']:,}, "
          f"float {f['float_params']:,}); BitLinear biases not stored (never added): {r['unused_bias_params']:,}")
    print(f"file size: {f['total_bytes']:,} bytes = {f['total_mb']:.2f} MB; FP32 equivalent {f['fp32_mb']:.2f} MB; "
          f"compression {f['compression']:.1f}x; {f['bits_per_weight']:.2f} bits per ternary weight\n")
    scen = list(SCENARIOS)
    comp = [[cat] + [r["components"][s][cat] for s in scen] for cat in r["components"]["fp32"]
            if any(r["components"][s][cat] for s in scen)]
    comp.append(["total"] + [r["scenario_bytes"][s] for s in scen])
    comp.append(["total (MB)"] + [f"{r['scenario_bytes'][s] / 1e6:.2f}" for s in scen])
    comp.append(["leftovers (not ternary codes)"] + [f"{r['leftover_percent'][s]:.1f}%" for s in scen])
    print("bytes by component")
    print(format_table(["component"] + [SCENARIOS[s] for s in scen], comp))
    if args.plot:
        print(f"\nwrote {args.plot}")
    return 0
