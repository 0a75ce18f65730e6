"""``ftervit demo``: the API through FastAPI's test client, the command, and the page in a real
Chromium (Debian's, driven by Playwright; never a browser download)."""
from __future__ import annotations

import io
import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the demo extra is not installed: pip install -e '.[demo]' (make test does)")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from ftervit import create_model  # noqa: E402
from ftervit.cli import main  # noqa: E402
from ftervit.demo.server import create_app  # noqa: E402
from ftervit.engine import Engine  # noqa: E402
from ftervit.engine.preprocess import load_image  # noqa: E402
from ftervit.export import export_model  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("demo") / "digits.ftv"
    export_model(create_model("ftervit_digits").eval(), path, "tq2")
    return path


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's first 20 digits as PNG bytes (8x8 grey, 0-16 scaled to 0-255, upscaled 16x)."""
    from sklearn.datasets import load_digits

    images = []
    for d in load_digits().images[:20]:
        img = Image.fromarray(np.round(d * 255 / 16).astype(np.uint8)).resize((128, 128), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        images.append(buf.getvalue())
    return images


@pytest.fixture(scope="module")
def engine(model_file):
    with Engine(model_file) as e:
        yield e


@pytest.fixture(scope="module")
def client(engine, model_file):
    with TestClient(create_app(engine, top_k=5, max_bytes=100_000, file_name=str(model_file))) as c:
        yield c


def post(client, data: bytes, field="image", filename="x.png"):
    return client.post("/api/classify", files={field: (filename, data, "application/octet-stream")})


def expected(engine, data: bytes):
    """Logits and map of the engine on the image decoded as `ftervit run` decodes it."""
    cfg = engine.config
    x = load_image(data, engine.input_shape, cfg["mean"], cfg["std"])
    return engine.forward_rollout(x[None])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixel data (a few dozen bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # nothing fetched from elsewhere: no absolute URL in src/href/url()/fetch, no @import or font file
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"url\(|@import|@font-face|https?://", html)
    for needed in ('type="file"', "drop", "paste", "getUserMedia", 'name="viewport"', "api/classify", 'id="top"'):
        assert needed in html


def test_info(client, engine):
    info = client.get("/api/info").json()
    assert info["model"]["num_classes"] == 10 and info["model"]["img_h"] == 8 and info["grid"] == [4, 4]
    assert info["class_names"] == engine.class_names and info["format"] == "tq2"
    assert info["kernels"] == engine.kernels and info["threads"] == 1 and info["file"] == "digits.ftv"
    assert info["max_bytes"] == 100_000 and info["top_k"] == 5


def test_classify_agrees_with_ftervit_run(client, engine, digits, model_file, tmp_path, capsys):
    image = tmp_path / "digit.png"
    image.write_bytes(digits[3])
    assert main(["run", str(model_file), str(image), "--json", "-k", "5"]) == 0
    want = json.loads(capsys.readouterr().out)[0]["top"]
    r = post(client, digits[3])
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"top", "ms", "kernels", "rollout"}
    assert [t["index"] for t in got["top"]] == [t["class"] for t in want]
    for g, w in zip(got["top"], want):
        assert set(g) == {"index", "name", "prob", "logit"}
        assert g["name"] == w["name"] and g["prob"] == pytest.approx(w["prob"]) and g["logit"] == w["logit"]
    assert got["kernels"] == engine.kernels and got["ms"] > 0
    # one rollout value per patch, the engine's own map for the same input
    logits, maps = expected(engine, digits[3])
    assert got["rollout"]["grid"] == [4, 4] and len(got["rollout"]["values"]) == 16
    np.testing.assert_array_equal(np.array(got["rollout"]["values"], np.float32), maps[0].ravel())
    assert got["top"][0]["logit"] == float(logits[0].max())


def test_probabilities_sum_to_one(engine, digits):
    with TestClient(create_app(engine, top_k=50)) as c:  # k above the class count: every class
        top = post(c, digits[0]).json()["top"]
    assert len(top) == 10 and sum(t["prob"] for t in top) == pytest.approx(1, abs=1e-9)
    probs = [t["prob"] for t in top]
    assert probs == sorted(probs, reverse=True)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("data,message", [
    (b"this is not an image", "not an image"),
    (b"", "empty"),
    (png_header_only(16, 16), "cannot read the uploaded image"),  # no pixel data
    (png_header_only(10_000, 10_000), "decompression bomb"),  # over Pillow's limit: refused before decoding
    (png_header_only(100_000, 100_000), "decompression bomb"),  # Pillow's decompression-bomb error
], ids=["text", "empty", "no-pixels", "10000x10000", "100000x100000"])
def test_bad_images_get_400(client, data, message):
    r = post(client, data)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_damaged_image_gets_400(client, digits):
    r = post(client, digits[0][: len(digits[0]) * 2 // 3])  # truncated in the pixel data
    assert r.status_code == 400 and "uploaded image" in r.json()["error"]


def test_bad_requests_get_400_as_json(client, digits):
    r = post(client, digits[0], field="file")
    assert r.status_code == 400 and "named 'image'" in r.json()["error"]
    r = client.post("/api/classify", json={"image": "x"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/api/classify", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "error" in r.json()
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_over_max_bytes_gets_413(client):
    big = b"\0" * 100_001
    r = post(client, big)
    assert r.status_code == 413 and "100,000 bytes" in r.json()["error"]
    # far over: refused by Content-Length before the body is read
    r = post(client, b"\0" * 1_000_000)
    assert r.status_code == 413 and "error" in r.json()
    # a chunked body (no Content-Length) is counted as it arrives
    body = [b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n\r\n"] + [b"\0" * 65536] * 4
    r = client.post("/api/classify", content=iter(body), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "error" in r.json()


def test_fifty_concurrent_requests(client, engine, digits):
    want = [expected(engine, d) for d in digits]
    jobs = [i % len(digits) for i in range(50)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: post(client, digits[i]), jobs))
    for i, r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        logits, maps = want[i]
        got = r.json()
        assert got["top"][0]["index"] == int(logits[0].argmax())
        assert [t["logit"] for t in got["top"]] == sorted(logits[0].tolist(), reverse=True)[:5]
        np.testing.assert_array_equal(np.array(got["rollout"]["values"], np.float32), maps[0].ravel())


def test_command_refusals(model_file, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert main(["demo", str(model_file), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["demo", str(model_file), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["demo", str(model_file) + ".missing"]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.fixture()
def server(model_file):
    """``ftervit demo FILE --port 0`` in a subprocess; yields its URL; stopped with Ctrl-C (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-m", "ftervit", "demo", str(model_file), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        pytest.fail(f"no URL printed: {line!r} {proc.stderr.read()[-2000:]}")
    yield match.group(0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130  # the CLI's exit code for Ctrl-C, after a clean shutdown
    err = proc.stderr.read()
    assert "ftervit demo: interrupted" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_page_in_chromium(server, digits, engine, tmp_path):
    """Upload a digit through the page's file input in headless Chromium: the top-k list appears,
    its first class is the API's, the overlay is drawn; a screenshot is saved."""
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[demo]'")
    import httpx

    image = tmp_path / "digit.png"
    image.write_bytes(digits[7])
    api = httpx.post(server + "api/classify", files={"image": ("digit.png", digits[7])}).json()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            page.wait_for_function("document.getElementById('meta').textContent.includes('kernels')")
            page.set_input_files("input[type=file]", str(image))
            page.wait_for_selector("#top li", timeout=30_000)
            first = page.locator("#top li").first
            assert int(first.get_attribute("data-index")) == api["top"][0]["index"]
            assert page.locator("#top li").count() == 5
            assert "engine" in page.inner_text("#latency") and engine.kernels in page.inner_text("#latency")
            # the canvas holds the image and a coloured overlay: not blank, not grey only
            colourful = page.evaluate("""() => {
                const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i + 2]) > 40) n++;
                return n / (d.length / 4);
            }""")
            assert colourful > 0.2
            # nothing wider than the phone's screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            assert (tmp_path / "demo.png").stat().st_size > 5000 and not errors
        finally:
            browser.close()
