"""Property-based robustness (issue 15): generated metadata lines, file names and option values thrown at
`prepare` and `match`, in-process through `animatch.cli.main`. Whatever comes, the exit code is 0 or 2 (any
other exception fails the test: that would be a traceback), a refusal is one line on stderr, nothing outside
`--out` changes, and every good record (a valid line with a real image) is kept."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from animatch.cli import main
from animatch.data.records import record_id

GOOD = 4  # good records (synth records with their images) in every generated dataset
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)  # NUL and control bytes included
VALUE = st.one_of(TEXT, st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
HOSTILE = ["../outside.png", "/etc/passwd", "images/link.png", "images/fifo.png", "images", "gen/a\x00b.png",
           "gen/a\nb.png", "metadata.jsonl", "", " ", "C:/x.png", "gen\\..\\..\\x.png"]
NAME = st.one_of(TEXT.map(lambda s: f"gen/{s}"), st.sampled_from(HOSTILE))  # "gen/": no good image's path


def _profile(examples: int) -> settings:
    return settings(max_examples=examples, deadline=20_000, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _bad_line(template: dict) -> st.SearchStrategy[bytes]:
    """A metadata line that is malformed, or a record with hostile names or wrong values."""
    record = st.builds(lambda name, field, value, n: json.dumps(
        {**template, "file_name": name, "character": f"Generated {n}", "appearance": f"Generated look {n}.",
         **({field: value} if field else {})}).encode(),
        NAME, st.sampled_from([None, *template]), VALUE, st.integers(0, 10**6))
    raw = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" "))
    return st.one_of(record, raw, TEXT.map(lambda s: s.replace("\n", " ").encode()),
                     st.just(b'{"file_name": "x.png"'), st.just(b"[1, 2]"), st.just(b"\xef\xbb\xbf{}"))


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under `root` (links not followed) with its type, size and mtime, `skip`'s subtree left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if skip is not None and Path(folder) == skip:
            dirs.clear()
            continue
        for name in dirs + files:
            st_ = (Path(folder) / name).lstat()
            found[os.path.join(folder, name)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return {k: v for k, v in found.items() if skip is None or not Path(k).is_relative_to(skip)}


def _draw_bad_lines(data, synth_root: Path, max_size: int) -> tuple[list[bytes], list[int]]:
    """Up to `max_size` hostile metadata lines (`_bad_line` of a real synth record) and where each is spliced in."""
    template = json.loads((synth_root / "metadata.jsonl").read_text().splitlines()[0])
    bad = data.draw(st.lists(_bad_line(template), max_size=max_size))
    return bad, data.draw(st.lists(st.integers(0, 100), min_size=len(bad), max_size=len(bad)))


def _dataset(base: Path, synth_root: Path, bad: list[bytes], positions: list[int]) -> tuple[Path, list[dict]]:
    """A dataset root holding GOOD synth records with their images, a record per HOSTILE name, `bad` lines
    spliced in, a symlink out of the root, a FIFO and a file outside it."""
    root = base / "root"
    records = [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]
    good, other = records[:GOOD], records[GOOD]
    for r in good:
        (root / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_root / r["file_name"], root / r["file_name"])
    (base / "outside.png").write_bytes((synth_root / other["file_name"]).read_bytes())  # a real, unique image
    (root / "images" / "link.png").symlink_to(base / "outside.png")
    os.mkfifo(root / "images" / "fifo.png")
    lines = [json.dumps(r).encode() for r in good] + [json.dumps(  # every known-hostile name, in every example
        {**good[0], "file_name": name, "character": f"Hostile {n}", "appearance": f"Hostile look number {n}."}
    ).encode() for n, name in enumerate(HOSTILE)]
    for line, at in zip(bad, positions):
        lines.insert(at % (len(lines) + 1), line)
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root, good


def _run(args: list[str]) -> int:
    """`animatch ARGS` in-process; argparse's own refusals (e.g. "-1e-05" read as an option) exit via SystemExit."""
    try:
        return main(args)
    except SystemExit as e:
        return e.code


def _check_exit(code: int, err: str, command: str) -> None:
    assert code in (0, 2)
    if code == 2:
        assert err.strip().splitlines()[-1].startswith(f"animatch {command}: error: ")


@_profile(25)
@given(data=st.data(), out_kind=st.sampled_from(["fresh", "fresh", "fresh", "foreign", "input", "file"]),
       options=st.fixed_dictionaries({}, optional={
           "--val-fraction": st.floats(-0.5, 1.5), "--test-fraction": st.floats(-0.5, 1.5),
           "--min-appearance-chars": st.integers(-3, 40), "--chunk-tokens": st.integers(-2, 120),
           "--placeholder-min-characters": st.integers(-1, 5), "--split-seed": st.integers(-2**40, 2**40)}))
def test_prepare_survives_generated_metadata_names_and_options(synth_root, capsys, data, out_kind, options):
    bad, positions = _draw_bad_lines(data, synth_root, 8)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, good = _dataset(base, synth_root, bad, positions)
        out = {"fresh": base / "out", "foreign": base / "foreign", "input": root, "file": base / "outside.png"}[
            out_kind]
        if out_kind == "foreign":
            out.mkdir()
            (out / "notes.txt").write_text("keep")
        before = _snapshot(base, skip=out if out_kind == "fresh" else None)
        args = ["prepare", "--data", str(root), "--out", str(out), "--workers", "1"]
        code = _run([*args, *(str(x) for kv in options.items() for x in kv)])
        _check_exit(code, capsys.readouterr().err, "prepare")
        assert _snapshot(base, skip=out if out_kind == "fresh" else None) == before
        if out_kind != "fresh":
            assert code == 2
        elif code == 0:
            kept = [json.loads(line) for line in (out / "optimized_metadata.jsonl").read_text().splitlines()]
            assert {record_id(r["file_name"]) for r in good} <= {r["id"] for r in kept}
            assert not {r["file_name"] for r in kept} & set(HOSTILE)  # none of them was read


@_profile(8)
@given(data=st.data(), top_k=st.integers(-1, 8), batch_size=st.integers(0, 4), rows=st.integers(1, 4),
       file_names=st.lists(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                                   min_size=1, max_size=12), max_size=5),
       contents=st.lists(st.binary(max_size=64), min_size=5, max_size=5))
def test_match_survives_generated_candidates_file_names_and_options(synth_root, clip_tiny_dir, capsys, data, top_k,
                                                                    batch_size, rows, file_names, contents):
    bad, positions = _draw_bad_lines(data, synth_root, 6)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, good = _dataset(base, synth_root, bad, positions)
        folder = base / "images"
        folder.mkdir()
        for n, r in enumerate(good[:2]):
            shutil.copy(root / r["file_name"], folder / f"good_{n}.png")
        for name, content in zip(file_names, contents):
            if not name.startswith("good_") and name not in (".", ".."):
                (folder / f"{name}.png").write_bytes(content)  # not an image, or an empty file
        (folder / "link.png").symlink_to(base / "outside.png")
        out = base / "out"
        before = _snapshot(base, skip=out)
        code = _run(["match", "--images", str(folder), "--model", str(clip_tiny_dir), "--metadata",
                     str(root / "metadata.jsonl"), "--out", str(out), "--top-k", str(top_k), "--batch-size",
                     str(batch_size), "--heatmap-rows", str(rows), "--workers", "0", "--no-cache"])
        _check_exit(code, capsys.readouterr().err, "match")
        assert _snapshot(base, skip=out) == before
        if top_k < 1 or batch_size < 1:
            assert code == 2 and not out.exists()  # refused before any work
            return
        assert code == 0  # good images and good candidates are always there
        summary = json.loads((out / "summary.json").read_text())
        matched = {json.loads(line)["image"] for line in (out / "matches.jsonl").read_text().splitlines()}
        assert {"good_0.png", "good_1.png"} <= matched and summary["candidates"] >= GOOD
        assert {"image": "link.png", "reason": "unsafe path: a symlink leaving the root"} in summary["failures"]
