"""The C engine's attention rollout (ftv_model_forward_rollout) against ftervit.analysis.rollout
on the PyTorch model, and its logits against the plain forward pass."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from ftervit import create_model
from ftervit.analysis.rollout import attention_rollout
from ftervit.engine import Engine, EngineError
from ftervit.export import export_model
from test_engine import ENGINE, file_model


def exported(tmp_path, name, fmt="tq2", **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    path = tmp_path / f"m.{fmt}.ftv"
    export_model(model, path, fmt)
    return model, path


@pytest.mark.parametrize("name,kwargs,fmt", [
    ("ftervit_digits", {}, "tq1"),
    ("deit_tiny_patch16_224", dict(num_classes=10, depth=2), "tq2"),  # 3 heads: whole and split heads on 2 threads
    ("deit3_small_patch16_224", dict(num_classes=100, depth=2), "tq2"),  # LayerScale, no_embed_class
    ("deit_tiny_patch16_224", dict(num_classes=10, depth=2, global_pool="avg"), "tq2"),  # class token, mean pool
    ("deit_tiny_patch16_224", dict(num_classes=10, depth=2, class_token=False, global_pool="avg"), "tq2"),
], ids=["digits", "deit-tiny", "deit3-small", "deit-tiny-avg-pool", "deit-tiny-no-class-token"])
@pytest.mark.parametrize("threads", [1, 2])
def test_rollout_matches_pytorch(tmp_path, name, kwargs, fmt, threads):
    model, path = exported(tmp_path, name, fmt, **kwargs)
    engine = Engine(path, threads=threads)
    x = torch.randn(3, *engine.input_shape, generator=torch.Generator().manual_seed(1))
    logits, maps = engine.forward_rollout(x)
    _, want = attention_rollout(file_model(model, path), x)
    assert maps.shape == (3, *model.patch_embed.grid_size) == (3, *engine.grid)
    np.testing.assert_allclose(maps, want.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(logits, engine.forward(x))
    # rows of the rollout sum to 1: the patches' share is 1 without a class token, less with one
    total = maps.sum(axis=(1, 2))
    if engine.config["num_tokens"] == maps[0].size:
        np.testing.assert_allclose(total, 1, atol=1e-5)
    else:
        assert np.all((total > 0.5) & (total < 1))


@pytest.mark.slow
def test_rollout_full_depth_deit3(tmp_path):
    """Twelve blocks: the products stay within 1e-4 of PyTorch's float64 rollout."""
    model, path = exported(tmp_path, "deit3_small_patch16_224", num_classes=100)
    engine = Engine(path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    logits, maps = engine.forward_rollout(x)
    _, want = attention_rollout(file_model(model, path), x)
    np.testing.assert_allclose(maps, want.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(logits, engine.forward(x))


@pytest.mark.parametrize("fmt", ["tq2", "tq1"])
def test_rollout_identical_on_every_kernel_set_and_thread_count(tmp_path, each_kernel_set, fmt):
    """The logits equal the plain pass's to the bit, and the map is the same on every kernel
    set and thread count (it is computed from bit-identical queries and keys)."""
    _, path = exported(tmp_path, "deit_tiny_patch16_224", fmt, num_classes=10, depth=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    want_logits = Engine(path).forward(x)
    _, want_maps = Engine(path).forward_rollout(x)
    seen = set()
    for _ in each_kernel_set():
        for threads in (1, 2):
            engine = Engine(path, threads=threads)
            seen.add(engine.kernels)
            logits, maps = engine.forward_rollout(x)
            np.testing.assert_array_equal(logits, want_logits)
            np.testing.assert_array_equal(logits, engine.forward(x))
            np.testing.assert_array_equal(maps, want_maps)
    assert "scalar" in seen


def test_rollout_workspace_is_outside_the_arena(tmp_path):
    _, path = exported(tmp_path, "deit_tiny_patch16_224", num_classes=10, depth=2)
    engine = Engine(path)
    arena = engine.arena_bytes
    x = np.zeros((1, 3, 224, 224), np.float32)
    engine.forward_rollout(x)
    assert engine.arena_bytes == arena
    t = engine.config["num_tokens"]
    # (heads + depth) token x token float matrices, and two token vectors of doubles
    assert (3 + 2) * t * t * 4 <= engine.rollout_bytes <= (3 + 2) * t * t * 4 + 16 * t + 1024


def test_non_finite_input_refused(tmp_path):
    _, path = exported(tmp_path, "ftervit_digits")
    engine = Engine(path)
    x = np.zeros((2, 1, 8, 8), np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x[1, 0, 3, 3] = bad
        with pytest.raises(EngineError, match="image 1: the input holds NaN or infinite values"):
            engine.forward_rollout(x)
        with pytest.raises(EngineError, match="image 1: the input holds NaN or infinite values"):
            engine.forward(x)
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.forward_rollout(x[:1] * 0)


def _cli(binary, *args, env=None):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env)


def _parse(stdout):
    logits, rollout = stdout.splitlines()
    assert rollout.startswith("rollout ")
    return np.array(logits.split(), np.float32), np.array(rollout.split()[1:], np.float32)


def test_sanitized_cli_rollout(tmp_path):
    """ftervit-run --rollout under AddressSanitizer and UBSan agrees with the binding."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    subprocess.run(["make", "-s", "-C", str(ENGINE), "build/san/ftervit-run"], check=True, capture_output=True)
    _, path = exported(tmp_path, "ftervit_digits")
    x = np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    proc = _cli(ENGINE / "build" / "san" / "ftervit-run", "-t", "2", "--logits", "--rollout", path, tmp_path / "x.f32")
    assert proc.returncode == 0, proc.stderr
    logits, rollout = _parse(proc.stdout)
    want_logits, want_maps = Engine(path).forward_rollout(x[None])
    np.testing.assert_array_equal(logits, want_logits[0])
    np.testing.assert_array_equal(rollout, want_maps[0].ravel())
    top = _cli(ENGINE / "build" / "san" / "ftervit-run", "--rollout", path, tmp_path / "x.f32").stdout
    assert top.splitlines()[-1].startswith("rollout ") and "1. class" in top
    np.full(64, np.nan, np.float32).tofile(tmp_path / "nan.f32")
    proc = _cli(ENGINE / "build" / "san" / "ftervit-run", "--rollout", path, tmp_path / "nan.f32")
    assert proc.returncode == 2 and "NaN or infinite" in proc.stderr and "Sanitizer" not in proc.stderr


def test_rollout_race_free_under_thread_sanitizer(tmp_path):
    """Rollout on 2 threads (DeiT-Tiny's 3 heads: two whole, one split among the threads), built
    with ThreadSanitizer: no data race, and the logits and map of one thread."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    build = subprocess.run(["make", "-s", "-C", str(ENGINE), "tsan"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"no ThreadSanitizer here: {build.stderr.strip()[-200:]}")
    _, path = exported(tmp_path, "deit_tiny_patch16_224", num_classes=10, depth=2)
    x = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    want_logits, want_maps = Engine(path).forward_rollout(x[None])
    for force_scalar in ("0", "1"):
        env = dict(os.environ, FTV_FORCE_SCALAR=force_scalar)
        proc = _cli(ENGINE / "build" / "tsan" / "ftervit-run", "-t", "2", "--logits", "--rollout", path,
                    tmp_path / "x.f32", env=env)
        assert proc.returncode == 0 and "ThreadSanitizer" not in proc.stderr, proc.stderr[-2000:]
        logits, rollout = _parse(proc.stdout)
        np.testing.assert_array_equal(logits, want_logits[0])
        np.testing.assert_array_equal(rollout, want_maps[0].ravel())


def test_one_engine_shared_by_python_threads(tmp_path):
    """Calls from several Python threads are serialized by the engine's lock: every answer is
    the one a lone call gives (without it they share one arena and workspace)."""
    from concurrent.futures import ThreadPoolExecutor

    _, path = exported(tmp_path, "deit_tiny_patch16_224", num_classes=10, depth=1)
    engine = Engine(path, threads=2)
    xs = np.random.default_rng(4).standard_normal((6, 1, 3, 224, 224)).astype(np.float32)
    want = [engine.forward_rollout(x) for x in xs]

    def call(i):
        return (i, *engine.forward_rollout(xs[i % 6])) if i % 2 else (i, engine.forward(xs[i % 6]), None)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for i, logits, maps in pool.map(call, range(24)):
            np.testing.assert_array_equal(logits, want[i % 6][0])
            if maps is not None:
                np.testing.assert_array_equal(maps, want[i % 6][1])
