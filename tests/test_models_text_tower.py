"""The NumPy text tower gives the full model's text embeddings, and a text search through it imports no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from animatch.clip.embed import embed_texts
from animatch.clip.matcher import Matcher
from animatch.models.hub import load_clip
from animatch.models.text_tower import NumpyTextTower

TEXTS = ["pink hair", "", "Ünïcödé 東京 café, twin-tails!!",
         "A tall girl with very long silver hair in twin tails, green eyes and a red ribbon. " * 6]


def _agrees(model_dir) -> None:
    model, processor = load_clip(str(model_dir), device="cpu")
    tower = NumpyTextTower.load(str(model_dir))
    for text in TEXTS:
        assert tower.token_ids(text) == processor.tokenizer(text, truncation=True, max_length=77)["input_ids"]
        full = embed_texts(model, processor, [text]).numpy()
        assert np.abs(tower.embed(text) - full).max() < 1e-5, text


def test_numpy_tower_equals_the_full_model(clip_matched_dir):
    _agrees(clip_matched_dir)


def test_exact_gelu_checkpoints_too(clip_matched_dir, tmp_path):
    copy = shutil.copytree(clip_matched_dir, tmp_path / "gelu")
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["hidden_act"] = "gelu"
    (copy / "config.json").write_text(json.dumps(config))
    _agrees(copy)
    config["text_config"]["hidden_act"] = "silu"  # not covered: the caller loads the full model
    (copy / "config.json").write_text(json.dumps(config))
    assert NumpyTextTower.load(str(copy)) is None
    assert NumpyTextTower.load("nobody/not-cached-anywhere") is None


def test_text_search_imports_no_torch_and_answers_like_the_matcher(synth_index_dir):
    assert json.loads((synth_index_dir / "index.json").read_text())["numpy_text_tower"] is True
    script = ("import json, sys; from animatch.cli import main; assert main(['search', sys.argv[1], 'red hair', "
              "'--k', '5', '--json']) == 0; assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", script, str(synth_index_dir)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    fast = json.loads(out.stdout)
    full = Matcher.from_index(synth_index_dir).search_text("red hair", k=5)
    assert [r["id"] for r in fast] == [r["id"] for r in full]
    assert [r["score"] for r in fast] == pytest.approx([r["score"] for r in full], abs=1e-5)


def test_unchecked_index_falls_back_to_the_full_model(synth_index_dir, tmp_path, capsys):
    from animatch.cli import main

    copy = shutil.copytree(synth_index_dir, tmp_path / "index")
    manifest = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**manifest, "numpy_text_tower": False}))
    assert main(["search", str(copy), "red hair", "--k", "3", "--json"]) == 0
    ids = [r["id"] for r in json.loads(capsys.readouterr().out)]
    assert ids == [r["id"] for r in Matcher.from_index(synth_index_dir).search_text("red hair", k=3)]
