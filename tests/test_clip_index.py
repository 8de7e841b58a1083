import json

import pytest
import torch

import animatch
from animatch.cli import main
from animatch.clip.matcher import Matcher
from animatch.data.images import load_image
from animatch.data.schema import load_split
from animatch.data.synth import query_text
from animatch.errors import UserError


@pytest.fixture(scope="module")
def records(synth_root):
    return [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def index_dir(synth_index_dir):
    """The session's synth index (conftest), read-only here."""
    return synth_index_dir


def _search_json(capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert main(["search", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_index_holds_images_texts_and_records(index_dir):
    manifest = json.loads((index_dir / "index.json").read_text())
    assert manifest["records"] == manifest["images_indexed"] == manifest["texts_indexed"] == 48
    assert manifest["image_index"] == manifest["text_index"] == "IndexFlatIP"
    rows = [json.loads(line) for line in (index_dir / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and set(rows[0]) == {"id", "character", "title", "file_name", "appearance"}
    assert all(len(r["id"]) == 16 for r in rows)
    for name in ("images.faiss", "texts.faiss", "report.md", "config.yaml"):
        assert (index_dir / name).is_file()


def test_attribute_queries_find_the_character(index_dir, records, capsys):
    matcher = Matcher.from_index(index_dir)
    hits = [matcher.search_text(query_text(r["attributes"]), k=3)[0]["character"] == r["character"]
            for r in records]
    assert sum(hits) / len(hits) >= 0.8
    record = records[5]
    results = _search_json(capsys, index_dir, query_text(record["attributes"]), "--k", 4)
    assert len(results) == 4 and [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results[0]["character"] == record["character"] and results[0]["title"] == record["title"]
    assert results[0]["image"].endswith(record["file_name"]) and load_image(results[0]["image"])
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({(r["character"], r["title"]) for r in results}) == 4  # one hit per character
    assert main(["search", str(index_dir), "red hair", "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_image_queries_find_the_description(index_dir, records, synth_root, capsys):
    record = records[7]
    results = _search_json(capsys, index_dir, "--image", synth_root / record["file_name"], "--k", 3)
    assert results[0]["character"] == record["character"] and results[0]["appearance"]
    pil = load_image(synth_root / records[9]["file_name"])
    assert Matcher.from_index(index_dir).search_image(pil, k=1)[0]["character"] == records[9]["character"]


def test_matcher_api_match(clip_matched_dir, records, synth_root):
    assert animatch.Matcher is Matcher
    matcher = animatch.Matcher.from_model(str(clip_matched_dir))
    paths = [synth_root / r["file_name"] for r in records[:4]] + [synth_root / "missing.png"]
    texts = [query_text(r["attributes"]) for r in records[:4]]
    result = matcher.match(paths, texts, top_k=2)
    assert result.cosine.shape == result.probability.shape == (4, 4)
    assert torch.allclose(result.probability.sum(1), torch.ones(4), atol=1e-5)
    assert result.image_indices == [0, 1, 2, 3] and result.failures == [(str(paths[4]), "missing file")]
    assert [row[0]["candidate"] for row in result.top] == texts
    with pytest.raises(UserError, match="no index"):
        matcher.search_text("red hair")


def test_split_dir_and_approximate_index(prepared_dir, synth_root, clip_matched_dir, tmp_path):
    out = tmp_path / "index"
    assert main(["index", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--split", "train",
                 "--model", str(clip_matched_dir), "--out", str(out), "--workers", "0", "--no-cache",
                 "--approximate-above", "10"]) == 0
    train = load_split(prepared_dir, "train")
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["records"] == len(train) and manifest["image_index"] == "IndexHNSWFlat"
    matcher = Matcher.from_index(out)
    attributes = {r["file_name"]: r["attributes"] for r in train}
    hits = [matcher.search_text(query_text(attributes[r["file_name"]]), k=1)[0]["character"] == r["character"]
            for r in train]
    assert sum(hits) / len(hits) >= 0.8


def test_user_errors(index_dir, tmp_path, synth_root, clip_tiny_dir, capsys):
    assert main(["search", str(index_dir)]) == 2
    assert main(["search", str(tmp_path), "red hair"]) == 2
    assert main(["search", str(index_dir), "--image", str(synth_root / "metadata.jsonl")]) == 2
    assert main(["index", "--data", str(synth_root), "--model", str(clip_tiny_dir), "--out", str(tmp_path / "x"),
                 "--split", "test"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("animatch ")]
    assert [line.split(":")[0] for line in errors] == ["animatch search"] * 3 + ["animatch index"]
    assert "not an index dir" in errors[1] and "cannot read image" in errors[2]
