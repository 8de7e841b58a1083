import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animatch.cli import main
from animatch.config import SynthConfig
from animatch.data.synth import (
    ATTRIBUTES,
    DESCRIBED,
    appearance_sentences,
    describe,
    draw_character,
    draw_seed,
    plan_records,
    query_text,
    run_synth,
)
from animatch.data.synth_draw import EYE_RGB, HAIR_RGB, OUTFIT_RGB
from animatch.data.synth_text import COLOR_WORDS
from animatch.errors import UserError

FIELDS = ("file_name", "title", "character", "appearance", "personality", "url")


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(("config.yaml", "synth_report", ".animatch"))}


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    run_synth(SynthConfig(out=str(one), n=40, image_size=48, seed=3, characters_per_title=5, workers=1))
    run_synth(SynthConfig(out=str(two), n=40, image_size=48, seed=3, characters_per_title=5, workers=2))
    a, b = _tree_bytes(one), _tree_bytes(two)
    assert len(a) == 41 and a == b
    other = tmp_path / "other"
    run_synth(SynthConfig(out=str(other), n=40, image_size=48, seed=4, characters_per_title=5, workers=1))
    assert (other / "metadata.jsonl").read_bytes() != a["metadata.jsonl"]


def test_layout_matches_anipersonacaps(synth_root):
    records = _records(synth_root)
    assert len(records) == 48
    for r in records:
        assert all(isinstance(r[k], str) for k in FIELDS) and r["appearance"] and r["personality"]
        assert re.fullmatch(r"images/images_\d+/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\.png",
                            r["file_name"])
        assert set(r["attributes"]) == set(ATTRIBUTES)
        with Image.open(synth_root / r["file_name"]) as im:
            assert im.size == (64, 96) and im.mode == "RGB"
    assert len({r["file_name"] for r in records}) == len({r["character"] for r in records}) == 48
    titles = [r["title"] for r in records]
    assert len(set(titles)) == 8 and titles == sorted(titles, key=titles.index)  # grouped by title
    report = json.loads((synth_root / "synth_report.json").read_text())
    assert report["records"] == 48 and report["unique_attribute_combinations"] == 48


def test_drawn_colours_are_visible_inside_the_centre_crop(synth_root):
    for r in _records(synth_root):
        a = r["attributes"]
        pixels = np.asarray(Image.open(synth_root / r["file_name"]))[16:80]  # the 64 x 64 centre crop
        for table, name, least in ((HAIR_RGB, "hair_color", 20), (EYE_RGB, "eye_color", 4),
                                   (OUTFIT_RGB, "outfit_color", 100)):
            count = int((pixels == table[a[name]]).all(-1).sum())
            assert count >= least, (r["file_name"], name, a[name], count)


def test_each_character_is_told_apart_by_its_described_attributes():
    records = plan_records(3000, seed=0, characters_per_title=12)
    combos = {tuple(r["attributes"][k] for k in DESCRIBED) for r in records}
    assert len(combos) == 3000
    assert len({r["title"] for r in records}) == 250
    for name, values in ATTRIBUTES.items():  # every value is used
        assert {r["attributes"][name] for r in records} == set(values)


def test_appearance_states_attributes_and_personality_does_not():
    rng = random.Random(0)
    lengths = []
    for r in plan_records(200, seed=1):
        a, text = r["attributes"], r["appearance"].lower()
        assert any(w in text for w in COLOR_WORDS[a["hair_color"]]), text
        assert any(w in text for w in COLOR_WORDS[a["eye_color"]]), text
        assert not re.search(r"\b(hair|eyes|wears|dress)\b", r["personality"])
        assert not re.search(r"(\w+)-\1\b|colored-colored", text), text  # no doubled words from templates
        lengths.append(len(text.split()))
        sentences = appearance_sentences(a, rng, r["character"], "she")
        stated = {name for s in sentences for name in s.attributes}
        assert {"hair_color", "hair_style", "eye_color", "outfit", "outfit_color"} <= stated
    assert min(lengths) < 40 < max(lengths)  # short and long texts
    assert len({describe(plan_records(1)[0]["attributes"], random.Random(s)) for s in range(20)}) > 10


def test_query_text_and_redrawing_from_a_record(synth_root):
    assert query_text({"hair_color": "silver", "hair_style": "twin tails"}) == "silver hair twin tails"
    r = _records(synth_root)[0]
    redrawn = draw_character(r["attributes"], 64, draw_seed(r["file_name"]))
    assert np.array_equal(np.asarray(redrawn), np.asarray(Image.open(synth_root / r["file_name"])))


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UserError):
        run_synth(SynthConfig(out=str(tmp_path), n=4))
    assert main(["synth", "--out", str(tmp_path), "--n", "4"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"
