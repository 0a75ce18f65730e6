"""Forward KL distillation loss and top-k accuracy."""
from __future__ import annotations

import torch

from ftervit.evaluation import topk_correct
from ftervit.training.losses import distillation_kl


def test_forward_kl_matches_definition():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    p = t.softmax(-1)
    expected = (p * (p.log() - s.log_softmax(-1))).sum(-1).mean()
    assert torch.allclose(distillation_kl(s, t), expected, atol=1e-6)
    assert distillation_kl(t, t).abs() < 1e-6


def test_temperature_scaling():
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    T = 3.0
    p = (t / T).softmax(-1)
    expected = (p * (p.log() - (s / T).log_softmax(-1))).sum(-1).mean() * T * T
    assert torch.allclose(distillation_kl(s, t, T), expected, atol=1e-6)


def test_gradient_reaches_student_only():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    distillation_kl(s, t.detach()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05]])
    assert topk_correct(logits, torch.tensor([1, 2]), ks=(1, 5)) == [1, 2]  # k capped at 3 classes
