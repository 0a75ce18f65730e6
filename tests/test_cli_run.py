"""``ftervit run``: images in, top classes from the C engine out."""
import json

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
