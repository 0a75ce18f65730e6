"""Published-format checkpoints load strictly and reproduce the SPEC semantics."""
import numpy as np
import pytest
import torch

import reference as ref
import reference_torch as ref_torch
from ftervit import CheckpointError, FtervitError, create_model
from ftervit.checkpoint import load_state_dict, resolve_checkpoint


def randomized_published_state(name, **kwargs):
    """A state dict as the authors publish it: reference key names, `timm_model.` prefix."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("norm.weight") and p.dim() == 1 and "blocks" in k or k.endswith("channel_scale"):
                p.uniform_(0.5, 1.5)  # RMSNorm weights and channel scales: not all ones
            elif k.endswith(("ls1.gamma", "ls2.gamma")):
                p.uniform_(0.05, 0.5)
            elif p.dim() == 1:
                p.normal_(0.0, 0.2)
            else:
                p.normal_(0.0, 0.05)
    return {f"timm_model.{k}": v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,classes,heads,no_embed_class", [
    ("deit_tiny_patch16_224", 10, 3, False),
    ("deit3_small_patch16_224", 100, 6, True),
])
def test_published_checkpoint_reproduces_reference_logits(tmp_path, name, classes, heads, no_embed_class):
    state = randomized_published_state(name, num_classes=classes)
    path = tmp_path / "published.pth"
    torch.save(state, path)
    model = create_model(name, checkpoint=str(path)).eval()
    assert model.num_classes == classes  # inferred from the checkpoint
    img = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(img)
    sd = {k.removeprefix("timm_model."): v for k, v in state.items()}
    expect = ref_torch.vit_forward(sd, img, patch=16, heads=heads, no_embed_class=no_embed_class)
    rel = ((logits - expect).abs().max() / expect.abs().max()).item()
    assert rel < 1e-3, rel
    assert torch.equal(logits.argmax(1), expect.argmax(1))


@pytest.mark.parametrize("no_embed_class", [False, True])
def test_shallow_model_matches_numpy_reference(tmp_path, no_embed_class):
    """One block: few enough rounding flips for float32 NumPy (other summation order) to stay within 1e-3."""
    kwargs = dict(num_classes=10, depth=1, no_embed_class=no_embed_class, init_values=0.1 if no_embed_class else None)
    state = randomized_published_state("deit_tiny_patch16_224", **kwargs)
    torch.save(state, tmp_path / "m.pth")
    model = create_model("deit_tiny_patch16_224", checkpoint=tmp_path / "m.pth", **{k: v for k, v in kwargs.items()
                                                                                  if k != "num_classes"}).eval()
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(img)[0].numpy()
    sd = {k.removeprefix("timm_model."): v.numpy() for k, v in state.items()}
    expect = ref.vit_forward(sd, img[0].numpy(), patch=16, heads=3, no_embed_class=no_embed_class)
    assert np.abs(logits - expect).max() / np.abs(expect).max() < 1e-3
    assert logits.argmax() == expect.argmax()


def test_renamed_key_is_refused_with_its_name(tmp_path):
    state = randomized_published_state("ftervit_digits")
    state["timm_model.blocks.0.attn.qkv.rms.weight"] = state.pop("timm_model.blocks.0.attn.qkv.norm.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        create_model("ftervit_digits", checkpoint=tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing keys: blocks.0.attn.qkv.norm.weight" in msg
    assert "unexpected keys: blocks.0.attn.qkv.rms.weight" in msg


def test_shape_mismatch_and_class_count_named(tmp_path):
    state = randomized_published_state("ftervit_digits")
    state["timm_model.pos_embed"] = torch.zeros(1, 5, 64)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"pos_embed \(checkpoint \(1, 5, 64\), model \(1, 17, 64\)\)"):
        create_model("ftervit_digits", checkpoint=tmp_path / "bad.pth")
    torch.save(randomized_published_state("ftervit_digits"), tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="num_classes=3 but the checkpoint's head has 10"):
        create_model("ftervit_digits", checkpoint=tmp_path / "ok.pth", num_classes=3)


def test_checkpoint_of_another_architecture_refused(tmp_path):
    torch.save(randomized_published_state("ftervit_digits"), tmp_path / "digits.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("ftervit_fashion_mnist", checkpoint=tmp_path / "digits.pth")


def test_fp32_timm_checkpoint_refused_as_not_ternary(tmp_path):
    import timm
    torch.save(timm.create_model("ftervit_digits").state_dict(), tmp_path / "fp32.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: .*norm\.weight"):
        create_model("ftervit_digits", checkpoint=tmp_path / "fp32.pth")


def test_safetensors_and_nested_and_unprefixed_forms(tmp_path):
    from safetensors.torch import save_file
    state = randomized_published_state("ftervit_digits")
    plain = {k.removeprefix("timm_model."): v.contiguous() for k, v in state.items()}
    save_file(plain, tmp_path / "m.safetensors")
    torch.save({"model": plain, "epoch": 3}, tmp_path / "train.pt")
    a = create_model("ftervit_digits", checkpoint=tmp_path / "m.safetensors").state_dict()
    b = create_model("ftervit_digits", checkpoint=tmp_path / "train.pt").state_dict()
    for k, v in plain.items():
        assert torch.equal(a[k], v) and torch.equal(b[k], v)


class Payload:
    """Any non-tensor object: torch.load(weights_only=True) must refuse to unpickle it."""


def test_unsafe_pickle_refused(tmp_path):
    torch.save({"weight": torch.zeros(1), "obj": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict(tmp_path / "evil.pth")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="state dict"):
        load_state_dict(tmp_path / "list.pth")


def test_directory_empty_file_and_ftv_file_named(tmp_path):
    from ftervit.export import export_model

    with pytest.raises(CheckpointError, match="is a directory; give a .pth"):
        load_state_dict(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)"):
        load_state_dict(tmp_path / "empty.pth")
    export_model(create_model("ftervit_digits"), tmp_path / "m.ftv")
    with pytest.raises(CheckpointError, match=r"packed \.ftv model file, not a checkpoint: use it with ftervit run"):
        create_model("ftervit_digits", checkpoint=tmp_path / "m.ftv")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint or truncated"):
        load_state_dict(tmp_path / "notes.pth")


def test_teacher_and_student_mix_up_named_by_every_loader(tmp_path):
    import timm

    from ftervit.factory import create_fp32_model

    fp32 = timm.create_model("ftervit_digits", num_classes=10)
    torch.save(fp32.state_dict(), tmp_path / "teacher.pth")
    torch.save(create_model("ftervit_digits", num_classes=10).state_dict(), tmp_path / "student.pth")
    with pytest.raises(CheckpointError, match=r"\(FP32 weights given, ternary expected: FP32 checkpoints come from "
                                              r"ftervit teacher, ternary ones from ftervit distill\)"):
        create_model("ftervit_digits", checkpoint=tmp_path / "teacher.pth")
    with pytest.raises(CheckpointError, match=r"\(ternary weights given, FP32 expected"):
        create_fp32_model("ftervit_digits", checkpoint=tmp_path / "student.pth")
    loaded = create_fp32_model("ftervit_digits", checkpoint=tmp_path / "teacher.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in fp32.state_dict().items())
    with pytest.raises(CheckpointError, match="num_classes=3 but the checkpoint's head has 10 classes"):
        create_fp32_model("ftervit_digits", checkpoint=tmp_path / "teacher.pth", num_classes=3)


def test_hub_spec_parsing_and_download(monkeypatch, tmp_path):
    import huggingface_hub
    with pytest.raises(CheckpointError, match="hf-hub:<owner>/<repo>/"):
        resolve_checkpoint("hf-hub:szymonrucinski/FTerViT")
    torch.save(randomized_published_state("ftervit_digits"), tmp_path / "f.pth")
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(tmp_path / "f.pth")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = create_model("ftervit_digits", checkpoint="hf-hub:szymonrucinski/FTerViT/cifar10/x.pth")
    assert calls == [("szymonrucinski/FTerViT", "cifar10/x.pth")]
    assert model.num_classes == 10

    def offline(repo_id, filename):
        raise OSError("network unreachable")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="local path"):
        resolve_checkpoint("hf-hub:szymonrucinski/FTerViT/cifar10/x.pth")


def test_unknown_model_name():
    with pytest.raises(FtervitError, match="unknown model 'deit_tiny_patch16_22'.*deit_tiny_patch16_224"):
        create_model("deit_tiny_patch16_22")
