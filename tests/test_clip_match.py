import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from animatch.cli import main
from animatch.data.images import list_image_files

TOP_K = 5


def _match(images, model, out, *extra):
    return main(["match", "--images", str(images), "--model", str(model), "--out", str(out), "--workers", "0",
                 "--top-k", str(TOP_K), *map(str, extra)])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture()
def images(synth_root, tmp_path):
    """A private copy of the synthetic images folder (tests add files to it)."""
    return Path(shutil.copytree(synth_root / "images", tmp_path / "images"))


def test_match_ranks_the_right_character_and_outputs_parse(images, synth_root, clip_matched_dir, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert _match(images, clip_matched_dir, out, "--metadata", synth_root / "metadata.jsonl", "--cache-dir", cache) == 0
    summary = _summary(out)
    printed = capsys.readouterr().out.splitlines()
    header = next(n for n, line in enumerate(printed) if line.startswith("image "))
    assert printed[header].split() == ["image", "best", "match", "cosine", "true?"]
    table = printed[header + 1:header + 21]
    assert all(line.endswith((" yes", "no: " + line.split("no: ")[-1])) for line in table)
    assert sum(line.endswith(" yes") for line in table) >= 16
    assert printed[header + 21] == "... 28 more images: every image's top matches are in matches.csv"
    assert printed[header + 22].startswith("top-1 accuracy on the 48 images whose character is known: ")
    assert summary["images_matched"] == 48 and summary["candidates"] == 48 and summary["images_failed"] == 0
    assert summary["top1_accuracy"] >= 0.8
    assert summary["cache"]["images_embedded"] == 48 and summary["cache"]["images_cached"] == 0

    rows = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == [p.relative_to(images).as_posix() for p in list_image_files(images)]
    right = 0
    for r in rows:
        assert [m["rank"] for m in r["matches"]] == list(range(1, TOP_K + 1))
        cosines = [m["cosine"] for m in r["matches"]]
        assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)
        assert all(0 < m["probability"] <= 1 for m in r["matches"])
        right += r["expected"] == f"{r['matches'][0]['candidate']} ({r['matches'][0]['title']})"
    assert right / len(rows) >= 0.8
    with open(out / "matches.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 48 * TOP_K and set(table[0]) == {"image", "rank", "candidate", "title", "cosine",
                                                           "probability"}
    assert float(table[0]["cosine"]) == rows[0]["matches"][0]["cosine"]

    # 48 images with known characters, 48 candidates, 30 columns a page: pages of 15 images (truths, bests, rest)
    assert summary["heatmaps"] == [f"heatmap_00{n}.png" for n in (1, 2, 3, 4)]
    for name in summary["heatmaps"][:3]:  # full pages: 30 columns wide, 15 rows high
        with Image.open(out / name) as page:
            assert page.width > 1.4 * page.height
    for name in ("report.md", "config.yaml"):
        assert (out / name).is_file()

    assert _match(images, clip_matched_dir, out, "--metadata", synth_root / "metadata.jsonl", "--cache-dir", cache) == 0
    assert _summary(out)["cache"] == {"images_embedded": 0, "images_cached": 48, "texts_embedded": 0,
                                      "texts_cached": _summary(out)["cache"]["texts_cached"]}
    for n, path in enumerate(list_image_files(images)[:3]):
        shutil.copy(path, images / f"added_{n}.png")
    assert _match(images, clip_matched_dir, out, "--metadata", synth_root / "metadata.jsonl", "--cache-dir", cache) == 0
    assert _summary(out)["cache"]["images_embedded"] == 3 and _summary(out)["images_matched"] == 51


def test_unreadable_files_are_listed_with_their_reason(synth_root, clip_tiny_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    good = list_image_files(synth_root)[:2]
    shutil.copy(good[0], folder / "good.png")
    shutil.copy(good[1], folder / "sub" / "good.jpg")  # PNG bytes behind a .jpg name still decode
    (folder / "corrupt.png").write_bytes(good[0].read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "html.png").write_text("<!doctype html><html><body>404</body></html>")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    texts = tmp_path / "texts.txt"
    texts.write_text("long silver hair\n\nshort red hair, green eyes\ncat ears and a hoodie\n")
    out = tmp_path / "out"
    assert _match(folder, clip_tiny_dir, out, "--texts", texts, "--no-cache") == 0
    summary = _summary(out)
    assert summary["images_found"] == 5 and summary["images_matched"] == 2 and summary["candidates"] == 3
    reasons = {f["image"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"corrupt.png", "empty.png", "html.png"}
    assert reasons["empty.png"] == "zero-byte file" and all(reasons.values())
    assert summary["cache"] == {}
    rows = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == ["good.png", "sub/good.jpg"]
    assert [m["line"] for m in rows[0]["matches"]] != [] and len(rows[0]["matches"]) == 3
    assert min(Image.open(out / "heatmap.png").size) > 300
    assert summary["top1_accuracy"] is None and "true?" not in capsys.readouterr().out
    assert "corrupt.png" in (out / "report.md").read_text()


def test_images_named_after_their_character_are_known(synth_root, clip_matched_dir, tmp_path, capsys):
    records = [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]
    folder = tmp_path / "named"
    folder.mkdir()
    for r in records[:3]:  # `Akano_Yaniku.png` for Akano Yaniku, as a user names a folder
        shutil.copy(synth_root / r["file_name"], folder / f"{r['character'].replace(' ', '_')}.png")
    shutil.copy(synth_root / records[3]["file_name"], folder / "unnamed.png")
    out = tmp_path / "out"
    assert _match(folder, clip_matched_dir, out, "--metadata", synth_root / "metadata.jsonl", "--no-cache") == 0
    rows = {json.loads(line)["image"]: json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()}
    assert "expected" not in rows["unnamed.png"]
    for r in records[:3]:
        assert rows[f"{r['character'].replace(' ', '_')}.png"]["expected"] == f"{r['character']} ({r['title']})"
    assert _summary(out)["images_with_known_character"] == 3
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line for line in printed.splitlines() if line.split() and line.split()[0] in rows}
    assert rows[f"{records[0]['character'].replace(' ', '_')}.png"].endswith(" yes")
    assert re.fullmatch(r"-?\d\.\d{3}", rows["unnamed.png"].split()[-1]) and "true?" in printed  # unknown: no verdict
    report = (out / "report.md").read_text()
    assert "| true character |" in report and report.count(" | yes |") == printed.count(" yes\n")


def test_empty_folder_is_a_one_line_error(clip_tiny_dir, tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    texts = tmp_path / "texts.txt"
    texts.write_text("red hair\n")
    assert _match(folder, clip_tiny_dir, tmp_path / "out", "--texts", texts) == 2
    err = capsys.readouterr().err.strip()
    assert "no image files" in err and len(err.splitlines()) == 1
    assert _match(folder, clip_tiny_dir, tmp_path / "out", "--texts", texts, "--metadata", texts) == 2


@pytest.mark.slow
def test_two_process_run_equals_one_process_run(synth_root, clip_tiny_dir, tmp_path):
    args = ["match", "--images", str(synth_root / "images"), "--model", str(clip_tiny_dir), "--metadata",
            str(synth_root / "metadata.jsonl"), "--workers", "0", "--no-cache"]
    # Both runs on the CPU: the two processes share it (ACCELERATE_USE_CPU; one GPU cannot host two processes),
    # and a GPU's reduced-precision embeddings would not be comparable with them.
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "one")]) == 0
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "animatch.cli", *args,
                             "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _summary(tmp_path / "two")["processes"] == 2
    one, two = ([json.loads(line) for line in (tmp_path / run / "matches.jsonl").read_text().splitlines()]
                for run in ("one", "two"))
    # Identical order, images and rankings; scores equal up to float rounding (batches differ per process).
    assert [(r["image"], [m["candidate"] for m in r["matches"]]) for r in one] == \
        [(r["image"], [m["candidate"] for m in r["matches"]]) for r in two]
    for a, b in zip(one, two):
        for x, y in zip(a["matches"], b["matches"]):
            assert x["cosine"] == pytest.approx(y["cosine"], abs=1e-5)
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-5)
    assert len((tmp_path / "two" / "matches.csv").read_text().splitlines()) == 48 * TOP_K + 1
