"""Importance of every parameter group: Taylor first order and the Hessian trace.

* Taylor (Molchanov et al. 2019): per parameter ``(g * w)^2`` with ``g`` the gradient of a
  batch's mean loss, averaged over batches, summed over a tensor, layer or component.
* Hessian trace (Hutchinson's estimator, as in HAWQ-V2): ``E[v^T H v] = tr(H)`` for Rademacher
  ``v``. One probe draws ``v`` over all parameters; ``v_g . (H v)_g`` is then an unbiased sample
  of the trace of every group ``g``'s diagonal block at once. Probe ``p`` runs on batch
  ``p mod batches`` and the batches share one forward and first backward, so a probe costs one
  Hessian-vector product on one batch, not a pass over the data. With a probe count that is a
  multiple of the batch count every batch weighs the same and the mean estimates the trace of
  the Hessian of the mean loss over all images; the standard error over probes also holds the
  batch-to-batch spread, so it errs on the large side.

For a ternary model the gradients are the straight-through ones and ``w`` the latent FP32
weight: the quantity training changes. BitLinear biases (saved, never added) are left out.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ftervit.analysis.params import ANALYSIS_COMPONENTS, analysis_component, parameter_table
from ftervit.analysis.rollout import unfused_attention
from ftervit.errors import FtervitError

__all__ = ["TensorScores", "tensor_scores", "importance", "summarize_scores"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TensorScores:
    """Per-tensor importance of one model.

    Attributes:
        names: parameter names, in the model's order.
        numel: elements of each tensor.
        taylor: ``sum((g * w)^2)`` per tensor, averaged over batches.
        hessian: ``(probes, tensors)``: each probe's sample ``v_t . (H v)_t`` of each tensor's trace.
        mean_loss: the loss averaged over batches.
    """

    names: list[str]
    numel: np.ndarray
    taylor: np.ndarray
    hessian: np.ndarray
    mean_loss: float


@contextlib.contextmanager
def _differentiable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Eval mode, gradients on for ``params`` (a frozen teacher has them off), unfused attention."""
    flags, training = [p.requires_grad for p in params], model.training
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(True)
        with unfused_attention(attention):
            yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(training)


def _rademacher(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU so that a seed gives the same probes on every device.
    return (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(device=p.device, dtype=p.dtype)


def tensor_scores(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    probes: int = 32,
    seed: int = 0,
    names: Sequence[str] | None = None,
    progress: bool = False,
    desc: str = "importance",
) -> TensorScores:
    """Taylor scores and Hutchinson trace samples of ``model``'s parameters.

    Args:
        model: any module; evaluated in eval mode, left as it was.
        batches: ``(inputs, targets)`` on the model's device; ``loss_fn(model(inputs), targets)``
            is the batch's mean loss (targets may be labels or a teacher's logits).
        probes: Rademacher probes (at least 1).
        seed: seeds the probes.
        names: the parameters to score (default: all).
        progress: show a tqdm bar.
    """
    if probes < 1 or not batches:
        raise FtervitError("importance needs at least one batch and one probe")
    by_name = dict(model.named_parameters())
    names = list(names) if names is not None else list(by_name)
    params = [by_name[n] for n in names]
    per_batch = [list(range(b, probes, len(batches))) for b in range(len(batches))]
    sizes = [len(t) for _, t in batches]
    total = sum(sizes)
    gen = torch.Generator().manual_seed(seed)
    taylor = np.zeros(len(params))
    hessian = np.zeros((probes, len(params)))
    loss_sum = 0.0
    with _differentiable(model, params), tqdm(total=len(batches) + probes, desc=desc, unit="step",
                                              leave=False, disable=not progress) as bar:
        for b, (x, t) in enumerate(batches):
            loss = loss_fn(model(x), t)
            loss_sum += float(loss.detach())
            grads = torch.autograd.grad(loss, params, create_graph=bool(per_batch[b]), allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None]
            for i in used:
                taylor[i] += float(((grads[i].detach() * params[i].detach()) ** 2).sum())
            bar.update()
            # A gradient that does not depend on the parameters has a zero Hessian row.
            outputs = [i for i in used if grads[i].requires_grad]
            weight = sizes[b] * len(batches) / total  # a short last batch counts for its images
            for p in per_batch[b]:
                v = {i: _rademacher(params[i], gen) for i in used}
                hv = torch.autograd.grad([grads[i] for i in outputs], [params[i] for i in used],
                                         grad_outputs=[v[i] for i in outputs], retain_graph=True,
                                         allow_unused=True)
                for i, h in zip(used, hv):
                    if h is not None:
                        hessian[p, i] = weight * float((v[i] * h).sum())
                bar.update()
            del grads, loss
    numel = np.array([p.numel() for p in params])
    return TensorScores(names, numel, taylor / len(batches), hessian, loss_sum / len(batches))


def _stats(scores: TensorScores, columns: list[int]) -> dict[str, float | int | None]:
    per_probe = scores.hessian[:, columns].sum(axis=1)
    n = len(per_probe)
    return {
        "params": int(scores.numel[columns].sum()),
        "taylor": float(scores.taylor[columns].sum()),
        "hessian_trace": float(per_probe.mean()),
        "hessian_stderr": float(per_probe.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
    }


def _with_shares(rows: list[dict], totals: dict) -> None:
    for row in rows:
        for key, total_key in (("param_share", "params"), ("taylor_share", "taylor"),
                               ("hessian_share", "hessian_trace")):
            row[key] = row[total_key] / totals[total_key] if totals[total_key] else 0.0


def summarize_scores(scores: TensorScores, components: dict[str, str]) -> dict:
    """Totals, the eight components and every layer (the module owning a parameter), with shares.

    Args:
        scores: from :func:`tensor_scores`.
        components: the analysis component of every scored parameter name.

    Returns:
        ``{"params", "taylor", "hessian_trace", "hessian_stderr", "mean_loss", "probes",
        "components": {name: {params, param_share, taylor, taylor_share, hessian_trace,
        hessian_stderr, hessian_share}}, "layers": [{"layer", "component", ...}],
        "most_important_layer"}`` (by Taylor).
    """
    index = {n: i for i, n in enumerate(scores.names)}
    totals = _stats(scores, list(range(len(scores.names))))
    comps = {}
    for c in ANALYSIS_COMPONENTS + ("other",):
        cols = [index[n] for n in scores.names if components[n] == c]
        if cols or c != "other":
            comps[c] = _stats(scores, cols)
    layers: dict[str, list[int]] = {}
    for n in scores.names:
        layers.setdefault(n.rpartition(".")[0] or n, []).append(index[n])
    layer_rows = [{"layer": name, "component": components[scores.names[cols[0]]], **_stats(scores, cols)}
                  for name, cols in layers.items()]
    _with_shares(list(comps.values()), totals)
    _with_shares(layer_rows, totals)
    for name, row in comps.items():  # key order of the contract
        comps[name] = {k: row[k] for k in ("params", "param_share", "taylor", "taylor_share", "hessian_trace",
                                           "hessian_stderr", "hessian_share")}
    top = max(layer_rows, key=lambda r: r["taylor"])
    return {**totals, "mean_loss": scores.mean_loss, "probes": int(scores.hessian.shape[0]),
            "components": comps, "layers": layer_rows, "most_important_layer": top["layer"]}


def importance(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    probes: int = 32,
    seed: int = 0,
    progress: bool = False,
    desc: str = "importance",
) -> dict:
    """Taylor and Hessian-trace importance of ``model`` per component and per layer.

    Every parameter the forward pass uses is scored; a BitLinear's bias (never added) is not.
    See :func:`tensor_scores` for the arguments and :func:`summarize_scores` for the result.
    """
    table = [p for p in parameter_table(model) if p.precision != "unused"]
    components = {p.name: analysis_component(p) for p in table}
    scores = tensor_scores(model, batches, loss_fn, probes, seed, [p.name for p in table], progress, desc)
    return summarize_scores(scores, components)
