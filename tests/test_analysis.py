"""The analyses (ftervit.analysis) against independent math: closed forms, NumPy, known traces."""
import copy
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from ftervit import BitLinear, create_model, make_ternary
from ftervit.analysis import analyze, compare_rollout, fidelity, ftv_weight_counts, importance, map_agreement
from ftervit.analysis import tensor_scores, weight_counts
from ftervit.analysis.report import one_per_class
from ftervit.analysis.weights import compare_counts
from ftervit.errors import FtervitError
from ftervit.export import export_model
from ftervit.training.losses import cross_entropy, distillation_kl

from conftest import TINY


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=24, depth=2, num_heads=3)
    return timm.models.VisionTransformer(**{**args, **kw}).eval()


def _batches(n_batches: int, size: int, shape: tuple[int, ...], classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n_batches)]


def test_taylor_of_a_linear_model_matches_the_closed_form():
    torch.manual_seed(0)
    model = nn.Linear(6, 4).double()
    batches = [(x.double(), y) for x, y in _batches(3, 10, (6,), 4)]
    scores = tensor_scores(model, batches, nn.functional.cross_entropy, probes=1)  # in float64
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    expect = np.zeros(2)
    for x, y in batches:
        x, y = x.numpy(), y.numpy()
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - np.eye(4)[y]) / len(y)  # d(mean CE)/dz
        expect += [((g.T @ x * w) ** 2).sum(), ((g.sum(0) * b) ** 2).sum()]
    assert scores.names == ["weight", "bias"]
    np.testing.assert_allclose(scores.taylor, expect / len(batches), rtol=1e-9)


def test_hutchinson_trace_of_a_quadratic_within_three_standard_errors():
    m, d = 3, 8
    model = nn.Linear(d, m).double()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(4):
        x = torch.randn(16, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, d, dtype=torch.float64)
        batches.append((x - x.mean(0), torch.randn(16, m, generator=g, dtype=torch.float64)))

    def loss(out, target):  # L = mean_n ||W x_n + b - y_n||^2: a quadratic in (W, b)
        return ((out - target) ** 2).sum(-1).mean()

    scores = tensor_scores(model, batches, loss, probes=64, seed=3)
    # Hessian w.r.t. W: (2/n) sum_n I_m (x) x_n x_n^T, trace 2 m mean ||x||^2; w.r.t. b: 2 I_m; the
    # cross block (2/n) sum_n x_n vanishes for centred batches, so every probe of b gives 2 m exactly.
    true_w = 2 * m * float(torch.cat([x for x, _ in batches]).pow(2).sum(1).mean())
    samples = scores.hessian[:, 0]
    stderr = samples.std(ddof=1) / math.sqrt(len(samples))
    assert 0 < stderr < 0.1 * true_w
    assert abs(samples.mean() - true_w) < 3 * stderr
    np.testing.assert_allclose(scores.hessian[:, 1], 2 * m, rtol=1e-12)


@pytest.mark.parametrize("deit3", [False, True])
def test_importance_shares_sum_to_one_and_count_every_used_parameter(deit3):
    teacher = _vit(init_values=0.1, no_embed_class=True) if deit3 else _vit()  # DeiT-III: LayerScale
    student = make_ternary(copy.deepcopy(teacher))
    teacher.requires_grad_(False)  # a frozen teacher, as create_teacher makes it
    batches = _batches(2, 8, (3, 16, 16), 5)
    with torch.no_grad():
        distill = [(x, teacher(x)) for x, _ in batches]
    for model, data, loss in ((teacher, batches, cross_entropy), (student, distill, distillation_kl)):
        r = importance(model, data, loss, probes=4)
        unused = sum(m.bias.numel() for m in model.modules() if isinstance(m, BitLinear))
        assert r["params"] == sum(p.numel() for p in model.parameters()) - unused
        for rows in (list(r["components"].values()), r["layers"]):
            assert sum(row["params"] for row in rows) == r["params"]
            for key in ("param_share", "taylor_share", "hessian_share"):
                assert sum(row[key] for row in rows) == pytest.approx(1.0, abs=1e-9)
        assert set(r["components"]) == {"patch_embed", "layernorm", "attention", "mlp", "head", "embeddings",
                                        "layerscale", "rmsnorm"}
        assert (r["components"]["rmsnorm"]["params"] > 0) == (model is student)
        assert (r["components"]["layerscale"]["params"] > 0) == deit3
        top = max(r["layers"], key=lambda row: row["taylor"])
        assert r["most_important_layer"] == top["layer"]
        assert all(p.requires_grad == (model is student) for p in model.parameters())  # restored


def test_zero_fraction_of_a_gaussian_matrix():
    layer = BitLinear(1000, 1000, bias=False)
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.normal_()
    r = weight_counts(nn.Sequential(layer))["overall"]
    # absmean zeroes |w| < mean|w| / 2 = sqrt(2/pi) / 2, a share of erf(1 / (2 sqrt(pi))) of N(0, 1)
    assert math.erf(1 / (2 * math.sqrt(math.pi))) == pytest.approx(0.3101, abs=5e-5)
    assert r["zero_fraction"] == pytest.approx(0.3101, abs=0.002)
    w = layer.weight.detach().numpy()
    assert r["absmax_zero_fraction"] == pytest.approx(np.mean(np.abs(w) < np.abs(w).max() / 2), abs=1e-6)
    assert r["minus"] + r["zero"] + r["plus"] == 10**6


def test_ftv_counts_equal_the_checkpoints(trained, tmp_path):
    model = create_model(TINY, checkpoint=trained["phase1"])
    path = tmp_path / "model.ftv"
    export_model(model, path, "tq1")
    ours, theirs = weight_counts(model), ftv_weight_counts(path)
    assert compare_counts(ours, theirs) == []
    assert [t["name"] for t in ours["tensors"]] == [t["name"] for t in theirs["tensors"]]
    for key in ("numel", "minus", "zero", "plus"):
        assert ours["overall"][key] == theirs["overall"][key]
    w = model.blocks[0].mlp.fc1.weight.detach().numpy().astype(np.float64)
    zeros = int((np.clip(np.rint(w / np.abs(w).mean()), -1, 1) == 0).sum())
    assert next(t for t in theirs["tensors"] if t["name"] == "blocks.0.mlp.fc1.weight")["zero"] == zeros
    model.blocks[0].mlp.fc1.weight.data.mul_(-1)
    assert compare_counts(weight_counts(model), theirs) == ["blocks.0.mlp.fc1.weight"]


def test_a_model_against_itself_is_faithful_and_looks_at_the_same_patches():
    student = make_ternary(_vit())
    batches = _batches(2, 6, (3, 16, 16), 5)
    r = fidelity(student, copy.deepcopy(student), batches)
    assert r["images"] == 12
    assert r["patch_embed"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert all(b["class_token"]["mean"] == pytest.approx(1.0, abs=1e-9) and
               b["patch_tokens"]["mean"] == pytest.approx(1.0, abs=1e-9) for b in r["blocks"])
    assert len(r["blocks"]) == 2
    assert r["logits"]["cosine"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert r["logits"]["top1_agreement"] == 1.0 and r["logits"]["kl"] == pytest.approx(0.0, abs=1e-9)
    x, y = batches[0]
    roll = compare_rollout(student, student, x, y)
    assert all(row["teacher_map"] == row["student_map"] for row in roll["images"])
    assert roll["mean_cosine"] == pytest.approx(1.0, abs=1e-12) and roll["mean_iou"] == 1.0


def test_fidelity_against_numpy():
    teacher = _vit()
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.2)
    student = make_ternary(copy.deepcopy(teacher))
    batches = _batches(1, 5, (3, 16, 16), 5)
    r = fidelity(teacher, student, batches)
    x = batches[0][0]
    with torch.no_grad():
        a, b = teacher.patch_embed(x).double().numpy(), student.patch_embed(x).double().numpy()
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert r["patch_embed"]["mean"] == pytest.approx(cos.mean(), rel=1e-9)
    assert r["patch_embed"]["std"] == pytest.approx(cos.std(), rel=1e-6)
    assert sum(r["patch_embed"]["histogram"]["counts"]) == cos.size
    for row in r["layernorm"]["layers"]:
        for key, attr in (("gamma_cosine", "weight"), ("beta_cosine", "bias")):
            w = getattr(teacher.get_submodule(row["name"]), attr).detach().double().numpy()
            mean_abs = np.abs(w).mean()
            q = np.clip(np.rint(w / mean_abs), -1, 1) * mean_abs
            assert row[key] == pytest.approx((w @ q) / np.linalg.norm(w) / np.linalg.norm(q), rel=1e-5)
    assert len(r["layernorm"]["layers"]) == 5  # two per block and the final norm


def test_map_agreement_by_hand():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    cos, iou = map_agreement(a, torch.tensor([[[4.0, 3.0], [2.0, 1.0]]]), top=0.5)
    assert float(cos) == pytest.approx(20 / 30) and float(iou) == 0.0  # top halves {3, 4} and {4, 3}: apart
    _, iou = map_agreement(a, torch.tensor([[[1.0, 2.0], [4.0, 3.0]]]), top=0.5)
    assert float(iou) == 1.0
    _, iou = map_agreement(a, torch.tensor([[[1.0, 4.0], [2.0, 3.0]]]), top=0.5)
    assert float(iou) == pytest.approx(1 / 3)  # {3, 4} vs {4, 3'}: one shared of three


def test_one_image_per_class_first():
    assert one_per_class([1, 0, 1, 2, 0], 4) == [1, 0, 3, 4]
    assert one_per_class([0, 0, 1], 10) == [0, 2, 1]


def test_analyze_refusals(tmp_path):
    teacher, other = _vit(depth=2), make_ternary(_vit(depth=3))
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 16, 16), torch.arange(4))
    with pytest.raises(FtervitError, match="different architectures"):
        analyze(teacher, other, data)
    with pytest.raises(FtervitError, match="no timm ViT attention"):
        analyze(nn.Sequential(nn.Flatten(), nn.Linear(768, 5)), None, data, only="rollout")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FtervitError, match="cannot write to --out"):
        analyze(teacher, None, data, only="weights", out=tmp_path / "file" / "sub")
    with pytest.raises(FtervitError, match="unknown analysis"):
        analyze(teacher, None, data, only="importance,sparsity")
    with pytest.raises(FtervitError, match="needs the FP32 teacher"):
        analyze(None, other, data, only="fidelity")


def test_analyze_in_memory_and_to_files(tmp_path):
    teacher = _vit()
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16), torch.arange(12) % 5)
    r = analyze(teacher, None, data, images=8, batch_size=4, probes=2, rollout_images=6, out=tmp_path)
    assert set(r) == {"importance", "weights", "fidelity", "rollout", "report"}
    assert r["fidelity"]["images"] == 8 and r["importance"]["images"] == 8
    assert [row["label"] for row in r["rollout"]["images"]] == [0, 1, 2, 3, 4, 0]
    for name in ("importance", "weights", "fidelity", "rollout"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.json").stat().st_size > 0
    report = r["report"]
    assert set(report) >= {"settings", "versions", "seconds", "files", "summary"}
    assert report["seconds"]["total"] >= report["seconds"]["importance"] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    assert all(p.requires_grad for p in teacher.parameters())  # left as it was
