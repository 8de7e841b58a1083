import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from animatch.audit import scoring
from animatch.audit.run import run_audit
from animatch.cli import main
from animatch.config import AuditConfig
from corrupt import corrupt_records  # tests/corrupt.py: fault injection with ground truth

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
MARKUP = ' <script>document.title = "pwned"</script><b>bold & "quoted"</b>'


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def corrupted(synth_root, tmp_path_factory) -> tuple[Path, dict]:
    """synth_root's metadata with 6 appearances swapped in pairs and 3 with a wrong sentence appended; one
    swapped text also carries markup (the HTML page must show it, not run it)."""
    records = _jsonl(synth_root / "metadata.jsonl")
    rows, truth = corrupt_records(records, swap_fraction=0.125, sentence_fraction=0.0625, seed=3)
    swapped = next(r for r in rows if truth.get(r["file_name"], {}).get("kind") == "swap")
    swapped["appearance"] += MARKUP
    path = tmp_path_factory.mktemp("audit_data") / "corrupted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, truth


@pytest.fixture(scope="module")
def audited(synth_root, corrupted, clip_matched_dir, tmp_path_factory) -> Path:
    """One CLI audit of the corrupted data with a model fitted to the clean data; on the CPU, as the two-process
    audit that is compared with it (ACCELERATE_USE_CPU: one GPU cannot host two processes)."""
    out = tmp_path_factory.mktemp("audit") / "out"
    cache = tmp_path_factory.mktemp("audit_cache")
    assert main(["audit", "--data", str(synth_root), "--metadata", str(corrupted[0]), "--model", str(clip_matched_dir),
                 "--out", str(out), "--workers", "0", "--cache-dir", str(cache), "--device", "cpu"]) == 0
    return out


def test_pair_stats_equal_a_brute_force_computation():
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(7, 5), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.8 * torch.randn(7, 5), dim=-1)
    stats = scoring.pair_stats(images, texts, block_size=3)
    sim = (images @ texts.T).double().numpy()
    off = ~np.eye(7, dtype=bool)
    for i in range(7):
        row, col = sim[i][off[i]], sim[:, i][off[:, i]]
        assert stats.text_rank[i] == 1 + (row > sim[i, i]).sum()
        assert stats.image_rank[i] == 1 + (col > sim[i, i]).sum()
        z_text, z_image = (sim[i, i] - row.mean()) / row.std(), (sim[i, i] - col.mean()) / col.std()
        assert stats.z_text[i] == pytest.approx(z_text, rel=1e-4)
        assert stats.fit[i] == pytest.approx((z_text + z_image) / 2, rel=1e-4)
    titles = ["a", "a", "a", "b", "b", "c", "a"]
    tz = scoring.title_z(images, texts, titles)
    mates = sim[0, [1, 2, 6]]
    assert tz[0] == pytest.approx((sim[0, 0] - mates.mean()) / mates.std(ddof=1), rel=1e-4)
    assert np.isnan(tz[3]) and np.isnan(tz[5])  # fewer than two title-mates
    fits = scoring.swap_fits(stats, images, texts, np.array([0, 3]), np.array([0, 3]))
    assert fits == pytest.approx(stats.fit[[0, 3]], rel=1e-4)


def test_youden_threshold_sits_mid_gap_and_ignores_swap_like_contamination():
    clean, swaps = np.array([3.0, 4.0, 5.0, 6.0]), np.array([-1.0, 0.0, 1.0])
    assert scoring.youden_threshold(clean, swaps)["value"] == pytest.approx(2.0)
    dirty = np.concatenate([clean, [0.5]])  # a mismatched pair among the "clean" ones
    found = scoring.youden_threshold(dirty, swaps)
    assert found["value"] == pytest.approx(2.0) and found["tpr"] == 1.0 and found["fpr"] == pytest.approx(0.2)
    assert scoring.youden_threshold(np.array([0.0, 1.0]), np.array([2.0, 3.0]))["value"] < 0  # flags nothing
    img, txt = scoring.simulated_swaps(np.arange(10, 20), 3, np.random.default_rng(0))
    assert len(img) == 30 and (img != txt).all() and len(set(zip(img, txt))) == 30


def test_swaps_are_flagged_and_the_clean_file_drops_exactly_the_flagged(audited, corrupted):
    path, truth = corrupted
    records, rows = _jsonl(path), _jsonl(audited / "audit.jsonl")
    assert [r["file_name"] for r in rows] == [r["file_name"] for r in records]
    swaps = {f for f, t in truth.items() if t["kind"] == "swap"}
    flagged = {r["file_name"] for r in rows if r["flag"]}
    assert swaps <= flagged and len(flagged - swaps) <= 2
    for r in rows:
        assert r["status"] == "ok" and r["flag"] == r["clip_flag"] and r["judge"] is None
        assert r["action"] == ("drop" if r["flag"] else "keep")
        assert 1 <= r["text_rank"] <= 48 and 1 <= r["image_rank"] <= 48 and len(r["chunk_cosines"]) >= 1
        assert [s["fits"] for s in r["sentences"]].count(False) == r["nonfitting_sentences"]
    assert _jsonl(audited / "clean_metadata.jsonl") == [rec for rec, r in zip(records, rows) if not r["flag"]]
    summary = json.loads((audited / "summary.json").read_text())
    assert summary["flagged"] == len(flagged) and summary["clean_records"] == 48 - len(flagged)
    assert summary["threshold"]["how"] == "calibrated on all pairs (no --split-dir)"
    assert summary["threshold"]["youden_j"] > 0.8
    for name in ("report.md", "config.yaml", "flagged.html"):
        assert (audited / name).is_file()


def test_trimming_removes_exactly_the_nonfitting_sentences(synth_root, corrupted, clip_matched_dir, tmp_path):
    path, truth = corrupted
    out = tmp_path / "trim"
    assert main(["audit", "--data", str(synth_root), "--metadata", str(path), "--model", str(clip_matched_dir),
                 "--out", str(out), "--workers", "0", "--no-cache", "--trim-sentences", "--force-clean"]) == 0
    # --force-clean: the tiny model's sentence calibration is weak here; this test checks how trimming works
    records, rows = _jsonl(path), _jsonl(out / "audit.jsonl")
    clean = {r["file_name"]: r for r in _jsonl(out / "clean_metadata.jsonl")}
    threshold = json.loads((out / "summary.json").read_text())["threshold"]["value"]
    assert {r["action"] for r in rows} <= {"keep", "trim", "drop"}
    for rec, row in zip(records, rows):
        kept = [s["text"] for s in row["sentences"] if s["fits"]]
        if row["action"] == "drop":
            assert row["flag"] or row["nonfitting_sentences"] == len(row["sentences"])
            assert rec["file_name"] not in clean
        elif row["action"] == "keep":
            assert row["nonfitting_sentences"] == 0 and clean[rec["file_name"]] == rec
        else:
            assert row["nonfitting_sentences"] > 0 and 0 < len(kept) < len(row["sentences"])
            assert clean[rec["file_name"]]["appearance"].split() == " ".join(kept).split()
            assert {k: v for k, v in clean[rec["file_name"]].items() if k != "appearance"} == \
                {k: v for k, v in rec.items() if k != "appearance"}
            if row["flag"]:
                assert row["trimmed_fit"] >= threshold
    assert any(r["action"] == "trim" for r in rows)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_flagged_page_renders_in_headless_chromium_with_text_escaped(audited):
    page = audited / "flagged.html"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = _jsonl(audited / "audit.jsonl")
    flagged = [r for r in rows if r["flag"]]
    assert flagged and dom.count('class="pair flagged"') == len(flagged)
    for r in flagged:
        assert f'id="pair-{r["id"]}"' in dom and r["character"] in dom
    assert dom.count('src="data:image/jpeg;base64,') >= len(flagged)
    assert "&lt;script&gt;document.title" in dom and "<title>animatch audit" in dom and "pwned</title>" not in dom
    assert "&lt;b&gt;bold &amp;" in dom


class SpyJudge:
    """Records what it is asked; says "match" (score 9) for `matching` image paths, else score 2."""

    def __init__(self, matching: set[str]):
        self.matching, self.seen = matching, []

    def analyze_batch(self, pairs):
        self.seen += [str(image) for image, _ in pairs]
        return [{"score": 9 if str(image) in self.matching else 2, "match": str(image) in self.matching,
                 "status": "ok", "analysis": "spy", "description": "spy", "error": None} for image, _ in pairs]


def test_cascade_judges_only_the_flagged_pairs_and_a_sample(synth_root, corrupted, clip_matched_dir, audited,
                                                             tmp_path):
    base = {r["file_name"]: r for r in _jsonl(audited / "audit.jsonl")}
    flagged = sorted((f for f, r in base.items() if r["flag"]), key=lambda f: base[f]["fit"])
    cleared = str(synth_root / flagged[0])
    spy = SpyJudge({cleared})
    cfg = AuditConfig(data=str(synth_root), metadata=str(corrupted[0]), model=str(clip_matched_dir),
                      out=str(tmp_path / "out"), workers=0, cache=False, judge_sample=3, judge_max_pairs=4,
                      judge_batch_size=2)
    assert run_audit(cfg, judge=spy) == 0
    rows = {r["file_name"]: r for r in _jsonl(tmp_path / "out" / "audit.jsonl")}
    judged = {f for f, r in rows.items() if r["judge"]}
    assert sorted(spy.seen) == sorted(str(synth_root / f) for f in judged) and len(spy.seen) == 4 + 3
    assert {f for f in judged if rows[f]["judge"]["role"] == "flagged"} == set(flagged[:4])
    assert all(not rows[f]["clip_flag"] for f in judged if rows[f]["judge"]["role"] == "sample")
    first = rows[flagged[0]]
    assert first["clip_flag"] and not first["flag"] and first["action"] == "keep" and first["judge"]["score"] == 9
    assert all(rows[f]["flag"] and rows[f]["action"] == "drop" for f in flagged[1:])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["judge"]
    assert summary["cleared"] == 1 and summary["confirmed"] == 3 and summary["sample_judged_mismatch"] == 3


def test_real_llava_tiny_judge_runs_in_the_cascade(prepared_dir, synth_root, clip_matched_dir, llava_tiny_dir,
                                                   tmp_path):
    split_dir = tmp_path / "prepared"
    split_dir.mkdir()
    records = _jsonl(prepared_dir / "optimized_metadata.jsonl")
    for field in ("appearance", "appearance_chunks"):  # one swap
        records[0][field], records[1][field] = records[1][field], records[0][field]
    (split_dir / "optimized_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert main(["audit", "--data", str(synth_root), "--split-dir", str(split_dir), "--model", str(clip_matched_dir),
                 "--out", str(out), "--workers", "0", "--no-cache", "--judge-model", str(llava_tiny_dir),
                 "--judge-max-pairs", "1", "--judge-sample", "1", "--judge-max-description-tokens", "6",
                 "--judge-max-analysis-tokens", "6"]) == 0
    rows = _jsonl(out / "audit.jsonl")
    assert rows[0]["clip_flag"] and rows[1]["clip_flag"]
    judged = [r for r in rows if r["judge"]]
    assert sorted(r["judge"]["role"] for r in judged) == ["flagged", "sample"]
    assert all(r["judge"]["status"] in ("ok", "unparsed") and isinstance(r["judge"]["description"], str)
               for r in judged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"]["calibration_set"].startswith("all pairs (val has")
    clean = _jsonl(out / "clean_metadata.jsonl")
    assert len(clean) == 48 - summary["flagged"] and all(r["appearance_chunks"] and r["split"] for r in clean)


def test_user_mistakes_are_one_line_errors(synth_root, clip_tiny_dir, tmp_path, capsys):
    args = ["audit", "--data", str(synth_root), "--model", str(clip_tiny_dir), "--out", str(tmp_path / "o")]
    assert main([*args, "--split-dir", str(tmp_path)]) == 2
    assert "optimized_metadata.jsonl" in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    one.write_text((synth_root / "metadata.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    assert main([*args, "--metadata", str(one)]) == 2
    err = capsys.readouterr().err.strip()
    assert "at least 2 records" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_two_process_audit_equals_one_process_audit(synth_root, corrupted, clip_matched_dir, audited, tmp_path):
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "animatch.cli", "audit",
                             "--data", str(synth_root), "--metadata", str(corrupted[0]), "--model",
                             str(clip_matched_dir), "--out", str(tmp_path / "two"), "--workers", "0", "--no-cache"],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    one, two = _jsonl(audited / "audit.jsonl"), _jsonl(tmp_path / "two" / "audit.jsonl")
    assert [(r["file_name"], r["flag"], r["text_rank"]) for r in one] == \
        [(r["file_name"], r["flag"], r["text_rank"]) for r in two]
    for a, b in zip(one, two):
        assert a["fit"] == pytest.approx(b["fit"], abs=1e-4)
