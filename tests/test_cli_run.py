"""``ftervit run``: images in, top classes from the C engine out."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ftervit import create_model
from ftervit.cli import main
from ftervit.engine import Engine
from ftervit.export import export_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "digits.ftv"
    torch.manual_seed(0)
    export_model(create_model("ftervit_digits"), path, "tq2")
    return path


def test_run_json_matches_engine_on_preprocessed_image(model_file, tmp_path, capsys):
    pixels = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint8)
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "x.png")  # RGB, 16x16: converted and resized
    assert main(["run", str(model_file), str(tmp_path / "x.png"), "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and len(out[0]["top"]) == 3
    # independent preprocessing: grey, bicubic resize to 8x8, scale to [0, 1], (x - 0.5) / 0.5
    grey = Image.fromarray(pixels).resize((8, 8), Image.Resampling.BICUBIC)
    x = ((np.asarray(grey, np.float32) / 255.0 - 0.5) / 0.5)[None, None]
    logits = Engine(model_file).forward(x)[0]
    assert [t["class"] for t in out[0]["top"]] == list(np.argsort(-logits)[:3])
    assert out[0]["top"][0]["logit"] == pytest.approx(float(logits.max()), rel=1e-4, abs=1e-4)
    assert sum(t["prob"] for t in out[0]["top"]) <= 1.0


def test_run_text_output_and_bad_image(model_file, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.pgm")
    assert main(["run", str(model_file), str(tmp_path / "a.pgm")]) == 0
    assert "class" in capsys.readouterr().out
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["run", str(model_file), str(tmp_path / "junk.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # -k -2 once printed all classes but the last two
        main(["run", str(model_file), str(tmp_path / "a.pgm"), "-k", "-2"])
    assert exc.value.code == 2 and "argument -k/--top: expected a positive integer" in capsys.readouterr().err


# --- hardening (issue 10) -----------------------------------------------------------------

def _grey_in_modes(g: np.ndarray) -> dict:
    """The same grey image in every mode Pillow gives files: 8-bit ones, 16-bit, int32, float."""
    grey = Image.fromarray(g)
    rgb = grey.convert("RGB")
    return {"L": grey, "1": None, "LA": grey.convert("LA"), "P": grey.convert("P"), "RGB": rgb,
            "RGBA": rgb.convert("RGBA"), "CMYK": rgb.convert("CMYK"), "PA": grey.convert("P").convert("PA"),
            "I;16": Image.fromarray(g.astype(np.uint16) * 257), "I": Image.fromarray(g.astype(np.int32) * 257),
            "F": Image.fromarray(g.astype(np.float32) / 255.0)}


@pytest.mark.parametrize("chans", [1, 3])
def test_every_image_mode_scaled_alike(tmp_path, chans):
    """Finding 6: a 16-bit grey PNG was classified as a nearly white image (Pillow clips mode
    I;16 to 8 bits). The same grey picture in any mode (8-bit, palette, alpha, CMYK, 16-bit,
    int32, float) now gives the same input, up to the 8-bit path's rounding."""
    from ftervit.engine.preprocess import load_image

    g = (np.add.outer(np.arange(24), np.arange(24)) * 5).astype(np.uint8)
    shape, mean, std = (chans, 8, 8), (0.5,) * chans, (0.5,) * chans
    want = load_image(_save(Image.fromarray(g), tmp_path / "L.png"), shape, mean, std)
    assert want.shape == shape and want.min() < -0.7 and want.max() > 0.7  # dark to light, not white
    for mode, img in _grey_in_modes(g).items():
        if img is None:
            continue
        path = _save(img, tmp_path / f"{mode.replace(';', '')}.{'png' if mode in ('L', 'LA', 'P', 'I;16', 'RGB') else 'tif'}")
        with Image.open(path) as check:
            assert check.mode == mode or (mode, check.mode) == ("PA", "P"), (mode, check.mode)
        got = load_image(path, shape, mean, std)
        np.testing.assert_allclose(got, want, atol=2.5 / 255 / 0.5, err_msg=mode)  # bicubic of 8-bit rounds
        assert np.array_equal(got, load_image(path.read_bytes(), shape, mean, std))  # bytes as the path


def _save(img, path):
    img.save(path)
    return path


def test_sixteen_bit_png_against_independent_preprocessing(model_file, tmp_path, capsys):
    from PIL import Image as PILImage

    g = (np.add.outer(np.arange(16), np.arange(16)) * 2000).astype(np.uint16)
    PILImage.fromarray(g).save(tmp_path / "g16.png")
    assert main(["run", str(model_file), str(tmp_path / "g16.png"), "--json", "-k", "10"]) == 0
    got = json.loads(capsys.readouterr().out)[0]["top"]
    unit = PILImage.fromarray(g.astype(np.float32) / 65535.0, mode="F").resize((8, 8), PILImage.Resampling.BICUBIC)
    logits = Engine(model_file).forward(((np.asarray(unit) - 0.5) / 0.5)[None, None].astype(np.float32))[0]
    assert [t["class"] for t in got] == list(np.argsort(-logits, kind="stable"))
    np.testing.assert_allclose([t["logit"] for t in got], np.sort(logits)[::-1], rtol=1e-6, atol=1e-6)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (IHDR, then IEND): Pillow sizes it at open."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_bad_images_named_and_good_ones_reported(model_file, tmp_path, capsys):
    """Finding 5: a decompression bomb, --crop-pct 1e-5 and one bad image among good ones gave
    tracebacks or hid the good results. Each bad image is one line on stderr naming it, every
    good one is reported, and the exit code is 2."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))  # 400 Mpixels
    (tmp_path / "big.png").write_bytes(_png_header_only(10000, 10000))  # 100 Mpixels: Pillow only warns
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "b.png").read_bytes()[:40])
    (tmp_path / "thin.png").write_bytes(_save_bytes(np.zeros((1, 2_000_000), np.uint8)))  # x8: 8 x 16M pixels
    names = ["a.png", "bomb.png", "junk.png", "big.png", "b.png", "cut.png", "missing.png", "thin.png"]
    assert main(["run", str(model_file), *[str(tmp_path / n) for n in names], "--json"]) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r["image"] for r in out] == [str(tmp_path / n) for n in names]
    assert [("top" in r) for r in out] == [True, False, False, False, True, False, False, False]
    errors = captured.err.splitlines()
    assert len(errors) == 6 and all(e.startswith("ftervit run: error: ") and "Traceback" not in e for e in errors)
    for name, reason in (("bomb.png", "decompression bomb"), ("big.png", "decompression bomb"),
                         ("junk.png", "not an image file"), ("cut.png", "cannot read image"),
                         ("missing.png", "no such file"), ("thin.png", "would exceed")):
        assert any(str(tmp_path / name) in e and reason in e for e in errors), (name, errors)
    nan = np.zeros((8, 8), np.float32)
    nan[2, 2] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")  # a float image: non-finite input, refused
    assert main(["run", str(model_file), str(tmp_path / "nan.tif")]) == 2
    assert "nan.tif: the image holds NaN or infinite values" in capsys.readouterr().err
    assert main(["run", str(model_file), str(tmp_path / "a.png"), "--crop-pct", "1e-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crop_pct 1e-05" in err and "would exceed" in err
    for bad in ("0", "1.5", "nan", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["run", str(model_file), str(tmp_path / "a.png"), "--crop-pct", bad])
        assert exc.value.code == 2 and "--crop-pct: expected a number in (0, 1]" in capsys.readouterr().err


def _save_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_forged_model_files_are_one_line(tmp_path, capsys):
    """A std of 0 once reached the image transform (a traceback); a 65536 x 65536 image size
    asked to resize a photo to it. Both files are refused at load, in one line."""
    corpus = Path(__file__).resolve().parent / "data" / "ftv_corpus"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    for name, reason in (("std_zero.ftv", "input mean/std out of range"), ("image_65536_patch_1.ftv", "img_h=65536")):
        assert main(["run", str(corpus / name), str(tmp_path / "a.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and "Traceback" not in err
