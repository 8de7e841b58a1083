"""The two-stage judge on llava-tiny: result structure, retries, KV-cache reuse, per-item errors, CLI modes,
batch resume and adapters. An untrained model writes junk, so parsed scores come from patched answers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from animatch.cli import main
from animatch.data.images import load_image
from animatch.errors import UserError
from animatch.judge import prompts
from animatch.judge.judge import Judge
from animatch.judge.loading import load_judge_model, save_projector

KEYS = {"description", "score", "score_expected", "match_probability", "analysis", "match", "status", "error", "raw",
        "attempts", "timings"}
GOOD_TEXT = "A girl with long pink hair, blue eyes and a black school uniform."


@pytest.fixture(scope="module")
def images(fixtures_dir):
    return sorted(str(p) for p in (fixtures_dir / "images").rglob("*.png"))


def tiny_judge(llava_tiny_dir, **kw):
    kw = {"max_description_tokens": 6, "max_analysis_tokens": 6, **kw}
    return Judge(str(llava_tiny_dir), **kw)


def test_both_stages_run_and_return_the_documented_structure(llava_tiny_dir, images):
    result = tiny_judge(llava_tiny_dir).analyze(images[0], GOOD_TEXT)
    assert set(result) == KEYS
    assert isinstance(result["description"], str) and result["description"]
    assert isinstance(result["raw"], str) and result["error"] is None
    assert set(result["timings"]) == {"stage1_s", "stage2_s", "total_s"}
    assert all(v > 0 for v in result["timings"].values())
    if result["status"] == "unparsed":  # the untrained model's junk: retried twice, no invented score
        assert result["score"] is None and result["match"] is None and result["attempts"] == 3
    else:
        assert result["status"] == "ok" and 1 <= result["score"] <= 10


def test_unparsed_answers_are_retried_at_rising_temperature(llava_tiny_dir, images, monkeypatch):
    judge = tiny_judge(llava_tiny_dir, threshold=8)
    script = [["junk", "**Score:** 8/10\nAnalysis: the pink hair matches"], ["still junk"], ["Score: none"]]
    calls = []

    def fake_relevance(described, tails, rows, temperature, seed):
        calls.append((list(rows), temperature))
        return [(answer, None) for answer in script[len(calls) - 1]]  # (answer, score distribution)

    monkeypatch.setattr(judge, "_relevance", fake_relevance)
    unparsed, ok = judge.analyze_batch([(images[0], GOOD_TEXT), (images[1], GOOD_TEXT)])
    assert calls == [([0, 1], 0.3), ([0], 0.6), ([0], 0.9)]
    assert ok["status"] == "ok" and ok["score"] == 8 and ok["match"] is True and ok["attempts"] == 1
    assert ok["analysis"] == "the pink hair matches"
    assert unparsed["status"] == "unparsed" and unparsed["score"] is None and unparsed["match"] is None
    assert unparsed["raw"] == "Score: none" and unparsed["attempts"] == 3


def test_kv_cache_reuse_equals_encoding_from_scratch_under_greedy(llava_tiny_dir, images):
    # A greedy retry (never parsed from an untrained model) runs again on the rolled-back stage-1 cache.
    judge = tiny_judge(llava_tiny_dir, temperature=0.0, retry_temperatures=(0.0,), max_description_tokens=14,
                       max_analysis_tokens=16)
    pairs = [(images[0], GOOD_TEXT), (images[1], "A tall man with a long black coat, red eyes and a sword."),
             (images[0], "Blue eyes.")]
    # End one description early, so the reuse path must mask the tokens after it.
    loaded = [load_image(p) for p, _ in pairs]
    described = judge._describe(loaded)
    prompt_len = described.inputs["input_ids"].shape[1]
    judge._eos.add(int(described.sequences[1, prompt_len + 3]))
    judge.model.generation_config.eos_token_id = sorted(judge._eos)
    described = judge._describe(loaded)
    assert min(described.lengths) < max(described.lengths) == 14
    vision_calls = []
    judge.model.model.vision_tower.register_forward_hook(lambda *args: vision_calls.append(1))

    reused = judge.analyze_batch(pairs)
    assert len(vision_calls) == 1  # the image is encoded once, for stage 1 only
    judge.reuse_prefix = False
    scratch = judge.analyze_batch(pairs)
    assert len(vision_calls) == 4  # stage 1, then stage 2 and its retry each encode the image again
    for a, b in zip(reused, scratch):
        assert a["description"] == b["description"]
        assert a["raw"] and a["raw"] == b["raw"] and a["attempts"] == b["attempts"] == 2

    judge.reuse_prefix = True  # a retry of some rows narrows the cache to them
    tails = [prompts.tail_token_ids(judge.processor.tokenizer, prompts.relevance_tail(judge.processor, text))
             for _, text in pairs]
    assert [a for a, _ in judge._relevance(described, tails, [0, 2], 0.0, 0)] == [scratch[0]["raw"], scratch[2]["raw"]]
    assert [a for a, _ in judge._relevance(described, tails, [2], 0.0, 0)] == [scratch[2]["raw"]]
    assert described.cache_rows == [2]


def test_bad_images_and_non_english_texts_are_reported_per_item(llava_tiny_dir, images, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = tiny_judge(llava_tiny_dir).analyze_batch([
        (images[0], GOOD_TEXT), (str(empty), GOOD_TEXT), (str(tmp_path / "missing.png"), GOOD_TEXT),
        (images[1], "粉色长发的女孩，穿着黑色校服。"), (images[1], "Девушка с розовыми волосами."),
        (images[1], "ピンクの髪の女の子")])
    assert [r["status"] for r in results][1:] == ["error"] * 5
    assert results[0]["status"] in ("ok", "unparsed")
    errors = [r["error"] for r in results[1:]]
    assert "empty.png" in errors[0] and "missing.png" in errors[1]
    assert "Chinese" in errors[2] and "Cyrillic" in errors[3] and "Japanese" in errors[4]
    assert all(set(r) == KEYS and r["score"] is None for r in results)


def _cli(llava_tiny_dir, *args):
    return main(["judge", "--model", str(llava_tiny_dir), "--max-description-tokens", "4",
                 "--max-analysis-tokens", "4", *map(str, args)])


def test_single_mode_prints_json_and_reads_a_config_file(llava_tiny_dir, images, tmp_path, capsys):
    assert _cli(llava_tiny_dir, "--image", images[0], "--text", GOOD_TEXT, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= set(result) and result["image"] == images[0] and result["text"] == GOOD_TEXT

    config = tmp_path / "judge.yaml"
    config.write_text(yaml.safe_dump({"image": images[1], "text": GOOD_TEXT, "threshold": 7}))
    assert _cli(llava_tiny_dir, "--config", config) == 0
    out = capsys.readouterr().out
    for label in ("Image:", "Text:", "Description:", "Score:", "Analysis:", "Verdict:"):
        assert label in out


@pytest.mark.parametrize("args,message", [
    (["--text", "粉色长发的女孩"], "Chinese"),
    (["--model", "/nonexistent/llava"], "not found"),
    (["--load-in-4bit", "--device", "cpu"], "CUDA"),
    (["--attn-implementation", "flash_attention_2", "--device", "cpu"], "flash_attention_2"),
    (["--pairs", "PAIRS"], "--out"),
])
def test_user_mistakes_are_one_line_errors(llava_tiny_dir, images, tmp_path, capsys, args, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("")
    args = [str(pairs) if a == "PAIRS" else a for a in args]
    base = [] if "--pairs" in args else ["--image", images[0]] + ([] if "--text" in args else ["--text", GOOD_TEXT])
    assert _cli(llava_tiny_dir, *base, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_batch_mode_reports_bad_lines_and_resumes(llava_tiny_dir, images, tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    relative = tmp_path / "img" / "a.png"
    shutil.copy(images[0], relative)
    lines = [json.dumps({"image": images[0], "text": GOOD_TEXT}),
             json.dumps({"image": "img/a.png", "text": "Blue eyes and a red ribbon.", "id": "x1"}),
             "{not json",
             json.dumps({"text": "no image"}),
             json.dumps({"image": "img/missing.png", "text": GOOD_TEXT}),
             json.dumps({"image": images[1], "text": "ピンクの髪の女の子"}),
             json.dumps({"image": images[1], "text": GOOD_TEXT})]
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "run" / "results.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    judged = []
    original = Judge.analyze_batch
    monkeypatch.setattr(Judge, "analyze_batch", lambda self, items: judged.extend(items) or original(self, items))

    assert _cli(llava_tiny_dir, "--pairs", pairs, "--out", out, "--batch-size", 2) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 8)) and len(judged) == 5
    status = [r["status"] for r in rows]
    assert status[2:6] == ["error"] * 4 and {status[0], status[1], status[6]} <= {"ok", "unparsed"}
    assert rows[1]["fields"] == {"id": "x1"} and rows[1]["image"] == "img/a.png"
    assert "not valid JSON" in rows[2]["error"] and '"image"' in rows[3]["error"]
    assert "missing.png" in rows[4]["error"] and "Japanese" in rows[5]["error"]
    summary = json.loads((out.parent / "results.summary.json").read_text())
    assert summary["pairs"] == 7 and summary["error"] == 4 and summary["judged"] == 5
    assert (out.parent / "results.report.md").is_file() and (out.parent / "results.config.yaml").is_file()

    judged.clear()  # a rerun judges only what failed before (the two errors that reached the judge)
    assert _cli(llava_tiny_dir, "--pairs", pairs, "--out", out) == 0
    assert sorted(text for _, text in judged) == sorted([GOOD_TEXT, "ピンクの髪の女の子"])
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == [r["key"] for r in rows]

    judged.clear()  # a run killed mid-write: two whole lines and a cut one survive
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + "\n" + '{"line": 7, "key')
    assert _cli(llava_tiny_dir, "--pairs", pairs, "--out", out) == 0
    assert len(judged) == 3 and len(out.read_text().splitlines()) == 7


def test_adapter_and_projector_are_loaded(llava_tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(str(llava_tiny_dir))
    reference = base.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    with torch.no_grad():
        base.model.multi_modal_projector.linear_1.bias.fill_(0.5)
    adapter = tmp_path / "adapter"
    save_projector(base, adapter)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    lora.save_pretrained(adapter)

    model, _ = load_judge_model(str(llava_tiny_dir), adapter=str(adapter), device="cpu")  # `reference` is on the CPU
    assert torch.all(model.model.multi_modal_projector.linear_1.bias == 0.5)
    assert not torch.equal(model.model.language_model.layers[0].self_attn.q_proj.weight, reference)
    with pytest.raises(UserError, match="adapter_config.json"):
        load_judge_model(str(llava_tiny_dir), adapter=str(tmp_path))
