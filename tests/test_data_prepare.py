"""`animatch prepare` end to end: the real samples, a metadata file full of bad lines and bad images,
deduplication, placeholders, title splits and byte-identical re-runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from animatch.cli import main
from animatch.data.images import load_image
from animatch.data.prepare import OUTPUT_FILES, assign_splits
from animatch.data.schema import SPLITS, load_split, read_jsonl
from animatch.data.text import estimate_clip_tokens


def _prepare(data: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--data", str(data), "--out", str(out), "--workers", "1", *extra])


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_real_samples(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert _prepare(fixtures_dir, out) == 0
    assert "kept 2" in capsys.readouterr().out
    records = {r["character"]: r for r in read_jsonl(out / "optimized_metadata.jsonl")}
    assert set(records) == {"Frieren", "Chika Fujiwara"}
    report = _report(out)
    assert report["records_read"] == 3 and report["kept"] == 2 and report["dropped"] == 1
    # text checks come first: Angewomon is dropped for its text, its (also missing) image is never looked at
    assert list(report["drops"]) == ["not an appearance"]
    assert report["drops"]["not an appearance"]["examples"] == [
        ("line 3 (images/images_16/84fa6eec-01a0-4b23-8259-afe9b3a580d5.jpg): "
         "not an appearance: starts with the section header 'Attacks'")]
    assert report["images_checked"] == 2

    frieren = records["Frieren"]
    assert frieren["id"] == hashlib.sha1(frieren["file_name"].encode()).hexdigest()[:16]
    assert frieren["split"] in SPLITS and frieren["url"] == "https://frieren.fandom.com/wiki/Frieren"
    assert "[7]" not in frieren["personality"] and "differently. As an elf" in frieren["personality"]
    assert "as a mage, she" in frieren["appearance"]
    assert len(frieren["appearance_chunks"]) >= 4
    assert all(estimate_clip_tokens(c) <= 77 for c in frieren["appearance_chunks"])
    image = load_image(fixtures_dir / frieren["file_name"])  # RGBA with a transparent background
    assert image.mode == "RGB" and image.size == (386, 1051) and image.getpixel((0, 0)) == (255, 255, 255)
    chika = records["Chika Fujiwara"]
    assert chika["url"] == "" and chika["personality"].endswith("room...")
    assert load_image(fixtures_dir / chika["file_name"]).getpixel((0, 0)) == (255, 255, 255)
    split_ids = sorted(r["id"] for s in SPLITS for r in load_split(out, s))
    assert split_ids == sorted(r["id"] for r in records.values())


def _image(path: Path, color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 12), color).save(path)


def _rec(i: int, title: str, appearance: str | None = None, file_name: str | None = None, **kw) -> dict:
    return {"file_name": file_name or f"images/images_0/{i:03d}.png", "title": title,
            "character": f"Char {i}",
            "appearance": appearance or f"Char {i} has {i} red ribbons in long black hair and wears a coat.",
            "personality": f"Kind [{i}].", "url": f"https://x.fandom.com/wiki/{i}", **kw}


def test_bad_lines_and_bad_images_are_reported_and_good_ones_kept(tmp_path):
    root = tmp_path / "root"
    for i in range(1, 8):
        _image(root / f"images/images_0/{i:03d}.png", (i * 30, 0, 0))
    _image(root / "images/images_0/050.png", (0, 50, 0), "RGBA")
    shutil.copy(root / "images/images_0/002.png", root / "images/images_0/051.png")   # same bytes as 002
    for i in (52, 53, 54):   # one "No Image" picture shared by three titles
        _image(root / f"images/images_0/{i:03d}.png", (9, 9, 9))
    (root / "images/images_0/055.png").write_bytes(b"")
    (root / "images/images_0/056.jpg").write_text("<html><body>Not Found</body></html>")
    good = [_rec(i, f"Title {i % 3}", extra={"k": i}) for i in range(1, 8)]
    bad: list[tuple[bytes, str]] = [
        (b'{"file_name": "images/x.png", "title"', "malformed JSON"),
        (b'["not", "an", "object"]', "not a JSON object"),
        (json.dumps({k: v for k, v in _rec(40, "T").items() if k != "character"}).encode(), "missing field"),
        (json.dumps(_rec(41, "T", appearance=" ")).encode(), "empty field"),
        (json.dumps({**_rec(42, "T"), "title": 42}).encode(), "wrong type"),
        (b'{"file_name": "images/\xff.png"}', "not UTF-8"),
        (json.dumps(_rec(43, "Title 1", appearance=good[0]["appearance"].upper(),
                         file_name="images/images_0/050.png")).encode(), "duplicate appearance"),
        (json.dumps(_rec(44, "Digimon", appearance="Attacks\n\nHoly Arrow : Attacks with light.")).encode(),
         "not an appearance"),
        (json.dumps(_rec(45, "T")).encode(), "missing file"),
        (json.dumps(_rec(46, "T", file_name="images/images_0/055.png")).encode(), "zero-byte file"),
        (json.dumps(_rec(47, "T", file_name="images/images_0/056.jpg")).encode(), "not an image: text/HTML"),
        (json.dumps(_rec(48, "Title 2", file_name="images/images_0/051.png")).encode(), "duplicate image"),
        (json.dumps(_rec(49, "T", appearance="Tall.")).encode(), "appearance too short"),
        (json.dumps(_rec(50, "T", file_name="../outside.png")).encode(), "unsafe file_name"),
        (json.dumps(_rec(57, "T", file_name=good[0]["file_name"])).encode(), "duplicate file_name"),
    ] + [(json.dumps(_rec(i, f"Other {i}")).encode(), "placeholder image") for i in (52, 53, 54)]
    lines = [json.dumps(r).encode() for r in good[:4]] + [b""]
    expected: dict[int, str] = {}
    for raw, reason in bad:
        lines.append(raw)
        expected[len(lines)] = reason
    lines += [json.dumps(r).encode() for r in good[4:]]
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    out = tmp_path / "out"
    assert _prepare(root, out) == 0
    kept = list(read_jsonl(out / "optimized_metadata.jsonl"))
    assert sorted(r["character"] for r in kept) == [f"Char {i}" for i in range(1, 8)]
    assert all(r["extra"] == {"k": int(r["character"][5:])} for r in kept)  # extra fields kept
    assert all(r["personality"] == "Kind." for r in kept)  # the citation marker "[i]" is gone
    report = _report(out)
    assert report["records_read"] == len(good) + len(bad)
    assert report["kept"] == 7 and report["dropped"] == len(bad)
    by_category: dict[str, int] = {}
    for reason in expected.values():
        category = reason.split(":")[0]
        by_category[category] = by_category.get(category, 0) + 1
    assert {k: v["count"] for k, v in report["drops"].items()} == by_category
    for line_no, reason in expected.items():
        examples = report["drops"][reason.split(":")[0]]["examples"]
        assert any(e.startswith(f"line {line_no}") and reason in e for e in examples), (line_no, reason)
    assert "not an image" in (out / "prepare_report.md").read_text()


def test_placeholder_needs_several_titles_and_duplicates_keep_the_first_line(tmp_path):
    root = tmp_path / "root"
    for i in range(4):
        _image(root / f"images/{i}.png", (1, 2, 3))  # four identical files
    recs = [_rec(i, "Same", file_name=f"images/{i}.png") for i in range(4)]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert _prepare(root, tmp_path / "a") == 0
    assert [r["character"] for r in read_jsonl(tmp_path / "a" / "optimized_metadata.jsonl")] == ["Char 0"]
    assert _report(tmp_path / "a")["drops"]["duplicate image"]["count"] == 3
    recs[3]["title"] = "Elsewhere"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["prepare", "--data", str(root), "--out", str(tmp_path / "b"), "--workers", "1"]) == 2
    assert _report(tmp_path / "b")["drops"]["placeholder image"]["count"] == 4


def test_synth_run_is_idempotent_and_worker_count_free_and_split_by_title(synth_root, prepared_dir, tmp_path):
    first = _snapshot(prepared_dir)
    assert set(OUTPUT_FILES) <= set(first)
    out = tmp_path / "again"
    assert main(["prepare", "--data", str(synth_root), "--out", str(out), "--workers", "2"]) == 0
    assert _prepare(synth_root, out) == 0  # over its own previous output
    second = _snapshot(out)
    assert {k: v for k, v in second.items() if k != "config.yaml"} == \
           {k: v for k, v in first.items() if k != "config.yaml"}
    assert _prepare(synth_root, out) == 0
    assert _snapshot(out) == second

    titles_by_split = {s: {r["title"] for r in load_split(prepared_dir, s)} for s in SPLITS}
    assert all(titles_by_split[s] for s in SPLITS)
    assert not (titles_by_split["train"] & titles_by_split["val"]) and \
        not (titles_by_split["train"] & titles_by_split["test"]) and \
        not (titles_by_split["val"] & titles_by_split["test"])
    records = list(read_jsonl(prepared_dir / "optimized_metadata.jsonl"))
    assert len(records) == sum(len(load_split(prepared_dir, s)) for s in SPLITS)
    assert all({"id", "appearance", "appearance_chunks", "personality", "split", "attributes"} <= set(r)
               for r in records)
    assert all(estimate_clip_tokens(c) <= 77 for r in records for c in r["appearance_chunks"])


def test_assign_splits_is_stable_proportional_and_fills_tiny_sets():
    titles = {f"title {i}" for i in range(2000)}
    splits = assign_splits(titles, 0.1, 0.05, seed=0)
    share = {s: sum(v == s for v in splits.values()) / len(titles) for s in SPLITS}
    assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.05) < 0.03
    fewer = assign_splits(set(sorted(titles)[:1000]), 0.1, 0.05, seed=0)
    assert all(fewer[k] == splits[k] for k in fewer)  # other titles coming or going move nobody
    assert assign_splits(titles, 0.1, 0.05, seed=1) != splits
    tiny = assign_splits({"a", "b", "c"}, 0.05, 0.05, seed=0)
    assert sorted(tiny.values()) == ["test", "train", "val"]
    assert set(assign_splits({"a", "b"}, 0.05, 0.05, seed=0).values()) <= set(SPLITS)
    assert set(assign_splits({"a", "b", "c"}, 0.0, 0.0, seed=0).values()) == {"train"}


@pytest.mark.parametrize("args, message", [
    (["--metadata", "nope.jsonl"], "no nope.jsonl in"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "below 1"),
    (["--chunk-tokens", "4"], "--chunk-tokens must be at least 8"),
])
def test_bad_input_is_one_line_user_error(fixtures_dir, tmp_path, capsys, args, message):
    assert main(["prepare", "--data", str(fixtures_dir), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_data_dir_and_empty_metadata(tmp_path, capsys):
    assert main(["prepare", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "metadata.jsonl").write_text("\n")
    assert main(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "holds no records" in capsys.readouterr().err
