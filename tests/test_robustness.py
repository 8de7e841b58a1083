"""Never clobber, never escape, never crash (issue 15): the output policy, paths from data kept inside their
root, corrupt caches, checkpoints and adapters, metrics after --resume, and the audit's clean file. Each test
names the row of the issue it reruns. The serve rows (6, 7) are in test_serve.py, the property-based test in
test_robustness_properties.py."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import CLIPImageProcessor

from animatch.cli import main
from animatch.clip.cache import EmbeddingCache
from animatch.clip.measures import embed_split
from animatch.config import opt
from animatch.data.datasets import PairDataset
from animatch.data.safepath import UnsafePath, name_problem, path_inside, read_bounded
from animatch.errors import UserError
from animatch.judge.cli import read_pairs
from animatch.judge.loading import load_judge_model
from animatch.models.hub import load_clip
from animatch.runs import OUTPUT_MARKER, claim_output
from animatch.training.runtime import cut_metrics

CLIP_TRAIN = ["--batch-size", "8", "--lr", "5e-4", "--workers", "0", "--report-to", "none", "--log-every", "1",
              "--mixed-precision", "no"]


@dataclass
class _Job:
    out: str
    data: str | None = opt(None, exists="dir")
    pairs: str | None = opt(None, exists="file")
    overwrite: bool = False


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def mini_root(synth_root, tmp_path) -> Path:
    """A private dataset root with the first 6 synth records (tests add bad records and files to it)."""
    root = tmp_path / "root"
    records = _records(synth_root / "metadata.jsonl")[:6]
    for r in records:
        (root / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_root / r["file_name"], root / r["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _add_records(root: Path, names: list[str]) -> None:
    """Append one record per file name, each a distinct character with its own appearance text."""
    template = _records(root / "metadata.jsonl")[0]
    with open(root / "metadata.jsonl", "a") as f:
        for n, name in enumerate(names):
            f.write(json.dumps({**template, "file_name": name, "character": f"Extra {n}",
                                "appearance": f"{template['appearance']} Extra sentence number {n}."}) + "\n")


# ------------------------------------------------------------------------------------ output policy (1, 2, 8)
def test_output_policy_uses_new_empty_or_own_dirs_and_refuses_the_rest(tmp_path):
    fresh = claim_output(_Job(out=str(tmp_path / "a" / "b")), "index")
    assert json.loads((fresh / OUTPUT_MARKER).read_text()) == {"command": "index"}
    (tmp_path / "empty").mkdir()
    claim_output(_Job(out=str(tmp_path / "empty")), "index")
    (fresh / "images.faiss").write_text("x")
    claim_output(_Job(out=str(fresh)), "index")  # its own output: reused
    with pytest.raises(UserError, match="written by `animatch index`; refusing to overwrite"):
        claim_output(_Job(out=str(fresh)), "prepare")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="holds 'notes.txt', not written by animatch; refusing"):
        claim_output(_Job(out=str(dataset)), "index")
    claim_output(_Job(out=str(dataset), overwrite=True), "index")
    assert (dataset / "notes.txt").read_text() == "keep"  # --overwrite lets the job write; claiming deletes nothing


def test_output_never_is_or_holds_an_input_even_with_overwrite(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("{}\n")
    for out in (data, tmp_path):
        with pytest.raises(UserError, match="a result never replaces an input"):
            claim_output(_Job(out=str(out), data=str(data), overwrite=True), "index")
    with pytest.raises(UserError, match="is the input --pairs"):
        claim_output(_Job(out=str(pairs), pairs=str(pairs), overwrite=True), "judge", file=True)
    claim_output(_Job(out=str(data / "prepared"), data=str(data)), "prepare")  # inside an input is fine


def test_result_files_beside_inputs(tmp_path):
    foreign = tmp_path / "metadata.jsonl"
    foreign.write_text('{"a": 1}\n')
    with pytest.raises(UserError, match="exists and was not written by animatch"):
        claim_output(_Job(out=str(foreign)), "judge", file=True)
    results = tmp_path / "results.jsonl"
    claim_output(_Job(out=str(results)), "judge", file=True)
    results.write_text('{"line": 1}\n')
    claim_output(_Job(out=str(results)), "judge", file=True)  # a rerun resumes it
    with pytest.raises(UserError, match="is a directory"):
        claim_output(_Job(out=str(tmp_path)), "judge", file=True)


def test_row1_index_into_an_existing_dataset_dir_is_refused(mini_root, clip_tiny_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(mini_root, other)
    before = _tree(other)
    for out in (other, mini_root):
        assert main(["index", "--data", str(mini_root), "--model", str(clip_tiny_dir), "--out", str(out)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _tree(other) == before


def test_row2_judge_results_never_replace_an_input(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"image": f"{n}.png", "text": "red hair"}) + "\n" for n in range(60)))
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text(pairs.read_text())
    for out, message in ((pairs, "a result never replaces an input"), (metadata, "refusing to overwrite")):
        assert main(["judge", "--pairs", str(pairs), "--out", str(out), "--model", "unused"]) == 2
        assert message in capsys.readouterr().err
    assert len(pairs.read_text().splitlines()) == 60 and metadata.read_text() == pairs.read_text()


def test_row8_out_a_file_or_below_a_file_fails_before_any_work(mini_root, tmp_path, monkeypatch, capsys):
    import animatch.data.prepare as prepare

    monkeypatch.setattr(prepare, "_text_stage", lambda *a: pytest.fail("prepare worked before checking --out"))
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    for out, message in ((a_file, "exists and is not a directory"), (a_file / "sub", "Not a directory")):
        assert main(["prepare", "--data", str(mini_root), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert a_file.read_text() == "keep"


def test_the_demo_dir_is_replaced_only_when_it_is_the_demos(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2  # refused before anything is deleted
    assert (tmp_path / "mine.txt").read_text() == "keep"
    own = tmp_path / "demo"
    claim_output(_Job(out=str(own)), "demo")
    (own / "old.txt").write_text("stale")
    claim_output(_Job(out=str(own)), "demo", replace=True)
    assert [p.name for p in own.iterdir()] == [OUTPUT_MARKER]


# ---------------------------------------------------------------------------------- paths from data (3, 4, 5)
def test_safe_names_and_bounded_reads(tmp_path):
    assert name_problem("images/a.png") is None
    for bad, why in (("a\x00b.png", "control"), ("a\nb", "control"), ("/etc/passwd", "absolute"),
                     ("C:/x.png", "absolute"), ("a/../../x.png", ".."), ("", "empty")):
        assert why in name_problem(bad)
    (tmp_path / "big").write_bytes(b"x" * 100)
    assert read_bounded(tmp_path / "big", 100) == b"x" * 100
    with pytest.raises(UnsafePath, match="too large"):
        read_bounded(tmp_path / "big", 99)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafePath, match="FIFO"):  # opened non-blocking: no writer needed, no hang
        read_bounded(tmp_path / "fifo")
    with pytest.raises(UnsafePath, match="character device"):
        read_bounded("/dev/zero")
    with pytest.raises(UnsafePath, match="not a regular file: a FIFO"):
        path_inside(tmp_path, "fifo")
    (tmp_path / "inner.png").symlink_to(tmp_path / "big")  # a symlink that stays inside the root is fine
    assert path_inside(tmp_path, "inner.png") == tmp_path / "inner.png"
    assert path_inside(tmp_path, "missing.png") == tmp_path / "missing.png"  # the loader reports it missing


def _hostile_files(root: Path, outside: Path) -> list[str]:
    """Image names that must never be opened: symlinks out of the root (a file, /etc/passwd, /dev/zero),
    a FIFO (opening it would hang), a NUL in the name, `..` and an absolute path."""
    bad = root / "images" / "bad"
    bad.mkdir(parents=True)
    (bad / "out.png").symlink_to(outside)
    (bad / "passwd.png").symlink_to("/etc/passwd")
    (bad / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(bad / "fifo.png")
    return ["images/bad/out.png", "images/bad/passwd.png", "images/bad/zero.png", "images/bad/fifo.png",
            "images/bad/x.png\x00.png", "../outside.png", str(outside)]


def test_rows3_4_prepare_drops_hostile_paths_with_reasons_and_keeps_the_rest(mini_root, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(next(mini_root.rglob("*.png")), outside)
    _add_records(mini_root, _hostile_files(mini_root, outside))
    out = tmp_path / "prepared"
    assert main(["prepare", "--data", str(mini_root), "--out", str(out), "--workers", "1"]) == 0
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["kept"] == 6 and report["dropped"] == 7
    assert {k: v["count"] for k, v in report["drops"].items()} == {
        "unsafe path": 3, "not a regular file": 1, "unsafe file_name": 3}
    assert "\\x00" in (out / "prepare_report.md").read_text()  # shown escaped, never raw


def test_rows4_5_index_and_training_data_never_open_paths_outside_the_root(mini_root, prepared_dir, clip_tiny_dir,
                                                                            tmp_path, capsys):
    outside = tmp_path / "outside.png"
    shutil.copy(next(mini_root.rglob("*.png")), outside)
    (mini_root / "images" / "out.png").symlink_to(outside)
    split = tmp_path / "split"
    split.mkdir()
    good = [r for r in _records(prepared_dir / "optimized_metadata.jsonl") if (mini_root / r["file_name"]).is_file()]
    hand_edited = good + [{**good[0], "id": f"x{n}", "file_name": name}
                          for n, name in enumerate(["../../outside.png", str(outside), "images/out.png"])]
    (split / "optimized_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hand_edited))
    out = tmp_path / "index"
    assert main(["index", "--data", str(mini_root), "--split-dir", str(split), "--model", str(clip_tiny_dir),
                 "--out", str(out), "--workers", "0", "--no-cache"]) == 0
    assert "dropped 2 records with an unsafe file_name" in capsys.readouterr().err
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["images_indexed"] == len(good)
    assert [u["reason"] for u in manifest["unreadable_images"]] == ["unsafe path: a symlink leaving the root"]

    processor = CLIPImageProcessor.from_pretrained(clip_tiny_dir)
    dataset = PairDataset([{"file_name": "images/out.png", "appearance": "x"}], mini_root, processor, train=False)
    assert dataset[0] == {"error": "unsafe path: a symlink leaving the root", "file_name": "images/out.png"}


def test_row4_eval_and_judge_eval_never_open_a_symlink_leaving_the_root(mini_root, prepared_dir, clip_tiny_dir,
                                                                        llava_tiny_dir, tmp_path, capsys):
    outside = tmp_path / "outside.png"
    shutil.copy(next(mini_root.rglob("*.png")), outside)
    (mini_root / "images" / "out.png").symlink_to(outside)
    good = [r for r in _records(prepared_dir / "optimized_metadata.jsonl") if (mini_root / r["file_name"]).is_file()]
    split = tmp_path / "split"
    shutil.copytree(prepared_dir, split)
    test = good[:5] + [{**good[5], "id": "x", "file_name": "images/out.png"}]
    (split / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))

    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    emb = embed_split(model, processor, test, mini_root, batch_size=4, progress=False)
    assert len(emb["records"]) == 5 and emb["failures"] == [
        (str(mini_root / "images" / "out.png"), "unsafe path: a symlink leaving the root")]

    out = tmp_path / "judge-eval"
    assert main(["judge-eval", "--data", str(mini_root), "--split-dir", str(split), "--model", str(llava_tiny_dir),
                 "--max-description-tokens", "4", "--max-analysis-tokens", "4", "--no-semantic",
                 "--out", str(out)]) == 0
    result = json.loads((out / "judge_eval.json").read_text())
    assert result["characters"] == 5 and [u["reason"] for u in result["images_left_out"]] == [
        "unsafe path: a symlink leaving the root"]
    assert "1 images left out, never opened" in capsys.readouterr().err


def test_judge_pairs_keep_relative_images_inside_the_image_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to("/etc/passwd")
    lines = [{"image": "../x.png", "text": "t"}, {"image": "link.png", "text": "t"},
             {"image": "a\x00.png", "text": "t"}, {"image": "ok.png", "text": "t"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    pairs, bad = read_pairs(path, root)
    assert [p["image"] for p in pairs] == ["ok.png"]
    assert [b["error"].split(":")[0] for b in bad] == ["unsafe file_name", "unsafe path", "unsafe file_name"]


def test_match_reports_a_symlink_leaving_the_folder(synth_root, clip_tiny_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(synth_root.rglob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "link.png").symlink_to("/etc/passwd")
    texts = tmp_path / "texts.txt"
    texts.write_text("red hair\nblue eyes\n")
    out = tmp_path / "match"
    assert main(["match", "--images", str(folder), "--model", str(clip_tiny_dir), "--texts", str(texts),
                 "--out", str(out), "--workers", "0", "--no-cache"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_matched"] == 2 and summary["failures"] == [
        {"image": "link.png", "reason": "unsafe path: a symlink leaving the root"}]


# ------------------------------------------------------------------------------- corrupt files (9, 10)
def test_row9_a_corrupt_cache_shard_is_reported_dropped_and_rebuilt(tmp_path, capsys):
    key = "0" * 64
    EmbeddingCache(tmp_path, None, key=key).put("image", ["a", "b"], torch.ones(2, 4))
    (shard,) = (tmp_path / key[:32] / "image").glob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:-8])  # truncated; its JSON is intact
    cache = EmbeddingCache(tmp_path, None, key=key)
    assert "dropped the corrupt shard" in capsys.readouterr().err
    assert cache.get("image", ["a"]) == [None] and not shard.exists()
    cache.put("image", ["a"], torch.ones(1, 4))
    assert EmbeddingCache(tmp_path, None, key=key).get("image", ["a"])[0].tolist() == [1.0] * 4


def test_row10_corrupt_checkpoints_and_adapters_are_one_line_naming_the_file(clip_tiny_dir, llava_tiny_dir,
                                                                             tmp_path):
    garbage = tmp_path / "garbage"
    shutil.copytree(clip_tiny_dir, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match=f"{garbage / 'model.safetensors'}: .*header"):
        load_clip(str(garbage))
    bad_field = tmp_path / "bad_field"
    shutil.copytree(clip_tiny_dir, bad_field)
    config = json.loads((bad_field / "config.json").read_text())
    config["text_config"]["hidden_size"] = "wide"
    (bad_field / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"{bad_field / 'config.json'}: .*hidden_size"):
        load_clip(str(bad_field))

    pickled = tmp_path / "adapter"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    torch.save({"weights": torch.ones(1), "code": print}, pickled / "adapter_model.bin")
    with pytest.raises(UserError, match="no adapter_model.safetensors .*never loaded"):
        load_judge_model(str(llava_tiny_dir), str(pickled), device="cpu")
    (pickled / "adapter_model.safetensors").write_bytes(b"\x01" * 16)
    with pytest.raises(UserError, match="cannot load adapter .*adapter_model.safetensors"):
        load_judge_model(str(llava_tiny_dir), str(pickled), device="cpu")


# --------------------------------------------------------------------------------------- metrics (11)
def test_cut_metrics_keeps_each_step_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    cut_metrics(path, 2)
    assert [r["step"] for r in _records(path)] == [1, 2]
    cut_metrics(path, None)
    assert path.read_text() == ""


def test_row11_clip_metrics_after_resume_and_after_a_fresh_rerun(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    def train(*extra) -> int:
        return main(["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                     str(clip_tiny_dir), "--out", str(out), *CLIP_TRAIN, "--eval-every", "2", *extra])

    out = tmp_path / "run"
    assert train("--max-steps", "2") == 0
    with open(out / "metrics.jsonl", "a") as f:  # what a kill after step 2's checkpoint leaves behind
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    assert train("--max-steps", "4", "--resume") == 0
    rows = _records(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val/mean_recall" in r] == [2, 4]

    fresh = tmp_path / "fresh"  # killed before its first checkpoint, then started again
    claim_output(_Job(out=str(fresh)), "train")
    (fresh / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.0}) + "\n")
    out = fresh
    assert train("--max-steps", "1") == 0
    assert [r["step"] for r in _records(fresh / "metrics.jsonl") if "loss" in r] == [1]
    assert all(r.get("loss") != 9.0 for r in _records(fresh / "metrics.jsonl"))


@pytest.mark.slow
def test_row11_judge_train_metrics_after_resume(synth_root, prepared_dir, llava_tiny_dir, tmp_path):
    def train(*extra) -> int:
        return main(["judge-train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                     str(llava_tiny_dir), "--out", str(out), "--batch-size", "2", "--accum-steps", "1",
                     "--workers", "0", "--description-tokens", "40", "--candidate-tokens", "32",
                     "--max-eval-examples", "2", "--log-every", "1", "--lora-r", "4", "--lora-alpha", "8",
                     "--report-to", "none", *extra])

    out = tmp_path / "run"
    assert train("--max-steps", "2") == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    assert train("--max-steps", "3", "--resume") == 0
    assert [r["step"] for r in _records(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ audit (12)
def test_row12_audit_withholds_clean_metadata_when_its_flags_are_unreliable(synth_root, clip_tiny_dir, tmp_path):
    args = ["audit", "--data", str(synth_root), "--model", str(clip_tiny_dir), "--workers", "0", "--no-cache"]
    out = tmp_path / "weak"
    assert main([*args, "--out", str(out)]) == 0  # an untrained CLIP cannot tell swaps from real pairs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] and summary["clean_withheld"] and summary["clean_records"] is None
    assert not (out / "clean_metadata.jsonl").exists()
    report = (out / "report.md").read_text()
    assert "clean_metadata.jsonl: not written" in report and "after the judge" not in report
    assert main([*args, "--out", str(out), "--force-clean"]) == 0
    assert (out / "clean_metadata.jsonl").is_file()
    assert json.loads((out / "summary.json").read_text())["clean_records"] is not None
