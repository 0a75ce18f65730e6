"""How much does storing each floating-point leftover group in FP16 change the logits?

For every group the .ftv writer stores as floats (docs/format.md), the group's parameters are
rounded to FP16 and back, and the logits are compared with those of the untouched FP32 model.
Two yardsticks: the same groups moved by one FP32 ulp (random direction), the noise any change
of summation order in an engine makes; and BitLinear's bf16 eval path, the reference
implementation's own rounding (SPEC section 2), which the project accepts as "near".

Models: random-init presets/timm ViTs whose leftovers are redrawn from trained-like
distributions (at init, RMSNorm weights and channel scales are exactly 1, which FP16 stores
exactly, so init values would measure nothing), a ftervit_digits model trained here for a few
seconds on scikit-learn's digits, and any --checkpoint given.

    python benchmarks/format_precision.py [--models deit_tiny_patch16_224 ...] [--json]
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F

import ftervit
from ftervit.export.format import FLOAT_GROUPS, tensor_specs
from ftervit.export.writer import model_config


def trained_like_leftovers(model: torch.nn.Module, seed: int = 0) -> None:
    """Redraw the leftovers that init sets to constants (assumed spreads, for measurement)."""
    g = torch.Generator().manual_seed(seed)
    specs = tensor_specs(model_config(model))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for spec in (s for s in specs if s.group in FLOAT_GROUPS):
            p = params[spec.name]
            noise = torch.randn(p.shape, generator=g)
            if spec.group in ("rmsnorm", "channel_scale"):
                p.copy_(torch.exp(0.5 * noise))  # log-normal around 1
            elif spec.group == "layerscale":
                p.copy_(torch.exp(noise + torch.log(torch.tensor(0.1))))  # ~1e-2..1, as trained DeiT-III
            elif spec.group == "patch_bias":
                p.copy_(0.05 * noise)


def train_digits(epochs: int = 50, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """A ftervit_digits model (with LayerScale) trained briefly with cross-entropy; returns it
    and the test images."""
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    x, y = load_digits(return_X_y=True)
    x = (torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0 - 0.5) / 0.5
    y = torch.tensor(y)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = ftervit.create_model("ftervit_digits", init_values=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train)).split(64):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
    print(f"ftervit_digits trained {epochs} epochs: test accuracy {100 * acc:.1f}%")
    return model, x_test


def compare(base: torch.Tensor, other: torch.Tensor) -> dict:
    diff = (other - base).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "max_rel": (diff.max() / base.std()).item(),
            "top1_agree": (other.argmax(-1) == base.argmax(-1)).float().mean().item()}


def _fp16(p: torch.Tensor) -> torch.Tensor:
    return p.half().float()


def _one_ulp(p: torch.Tensor) -> torch.Tensor:
    direction = torch.where(torch.rand_like(p) < 0.5, -torch.inf, torch.inf)
    return torch.nextafter(p, direction)


def _perturbed(model: torch.nn.Module, names: set[str], fn) -> torch.nn.Module:
    """A copy of ``model`` with ``fn`` applied to the parameters in ``names``."""
    m = copy.deepcopy(model)
    for name, p in m.named_parameters():
        if name in names:
            p.copy_(fn(p))
    return m


def measure(model: torch.nn.Module, images: torch.Tensor) -> dict[str, dict]:
    """Logit changes from FP16 storage of each group, all groups, and the bf16 eval path."""
    model.eval()
    specs = tensor_specs(model_config(model))
    with torch.no_grad():
        base = model(images)
        groups = {g: {s.name for s in specs if s.group == g} for g in FLOAT_GROUPS}
        groups = {g: names for g, names in groups.items() if names}
        every = set().union(*groups.values())
        results = {g: compare(base, _perturbed(model, names, _fp16)(images)) for g, names in groups.items()}
        results["all"] = compare(base, _perturbed(model, every, _fp16)(images))
        results["all, FP32 +-1 ulp (yardstick)"] = compare(base, _perturbed(model, every, _one_ulp)(images))
        results["bf16 eval path (yardstick)"] = compare(
            base, ftervit.set_eval_precision(copy.deepcopy(model), "bf16")(images))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ftervit_digits", "deit_tiny_patch16_224", "deit3_small_patch16_224"])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=FILE",
                        help="also measure a trained checkpoint, e.g. deit_tiny_patch16_224=ckpt.pth")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    runs: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}
    for name in args.models:
        model = ftervit.create_model(name, num_classes=10 if name == "deit_tiny_patch16_224" else None)
        trained_like_leftovers(model)
        runs[f"{name} (random, trained-like leftovers)"] = (model, torch.randn(args.batch, *model.pretrained_cfg["input_size"]))
    for item in args.checkpoint:
        name, path = item.split("=", 1)
        model = ftervit.create_model(name, checkpoint=path)
        runs[f"{name} ({path})"] = (model, torch.randn(args.batch, *model.pretrained_cfg["input_size"]))
    runs["ftervit_digits + LayerScale (trained here, digits test images)"] = train_digits()
    report = {label: measure(model, images) for label, (model, images) in runs.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for label, results in report.items():
        print(f"\n{label}\n| stored in FP16 | max abs dlogit | mean abs dlogit | max / logit std | top-1 agree |\n|---|---|---|---|---|")
        for group, r in results.items():
            print(f"| {group} | {r['max_abs']:.2e} | {r['mean_abs']:.2e} | {r['max_rel']:.2e} | {100 * r['top1_agree']:.1f}% |")


if __name__ == "__main__":
    main()
