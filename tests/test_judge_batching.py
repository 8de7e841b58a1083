"""The one batch driver (`judge.batching.analyze_in_batches`) and the one judge builder (`Judge.from_options`)
that `judge`, `judge-eval`, the audit cascade and the web app share."""

from __future__ import annotations

import pytest
import torch

from animatch import config
from animatch.judge import judge as judge_module
from animatch.judge.batching import OOM_MESSAGE, analyze_in_batches


class FakeJudge:
    """Scores a pair by its text; runs out of GPU memory on batches larger than `fits` or on the text 'huge'."""

    def __init__(self, fits: int):
        self.fits, self.calls = fits, []

    def analyze_batch(self, pairs):
        self.calls.append(len(pairs))
        if len(pairs) > self.fits or any(text == "huge" for _, text in pairs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [{"status": "ok", "score": len(text)} for _, text in pairs]


def test_batches_keep_order_and_report_each_batch():
    judge, seen = FakeJudge(fits=3), []
    pairs = [(f"img{i}.png", "x" * i) for i in range(1, 8)]
    results = analyze_in_batches(judge, pairs, 3, on_batch=lambda first, batch: seen.append((first, len(batch))))
    assert [r["score"] for r in results] == list(range(1, 8))
    assert judge.calls == [3, 3, 1] and seen == [(0, 3), (3, 3), (6, 1)]


def test_out_of_memory_backs_off_to_single_pairs_and_never_stops_the_run():
    judge = FakeJudge(fits=1)
    pairs = [("a.png", "ab"), ("b.png", "huge"), ("c.png", "abc")]
    results = analyze_in_batches(judge, pairs, 3)
    assert [r["status"] for r in results] == ["ok", "error", "ok"]
    assert results[1]["error"] == OOM_MESSAGE and [results[0]["score"], results[2]["score"]] == [2, 3]
    assert judge.calls == [3, 1, 1, 1]


def test_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        analyze_in_batches(FakeJudge(fits=1), [("a.png", "t")], 0)


@pytest.fixture
def built(monkeypatch):
    """What Judge.from_options passes to the constructor (nothing is loaded)."""
    calls = []

    def fake_init(self, model, adapter, device, dtype, load_in_4bit, attn_implementation, **settings):
        calls.append({"model": model, "adapter": adapter, "device": device, "dtype": dtype,
                      "load_in_4bit": load_in_4bit, "attn_implementation": attn_implementation, **settings})

    monkeypatch.setattr(judge_module.Judge, "__init__", fake_init)
    return calls


def test_commands_build_their_judge_from_their_options(built, tmp_path):
    judge_cfg = config.JudgeConfig(model="m", threshold=7, temperature=0.5, dtype="bfloat16", reuse_prefix=False)
    judge_module.Judge.from_options(judge_cfg)
    serve_cfg = config.ServeConfig(index=str(tmp_path), model="clip", judge_model="llava", judge_threshold=8,
                                   judge_max_analysis_tokens=50, judge_dtype="float16", judge_load_in_4bit=True,
                                   judge_attn_implementation="eager", device="cpu", max_image_pixels=1000)
    judge_module.Judge.from_options(serve_cfg, prefix="judge_")
    eval_cfg = config.JudgeEvalConfig(data=str(tmp_path), split_dir=str(tmp_path), out="o", model="m",
                                      adapter=str(tmp_path), baseline="b", seed=3)
    judge_module.Judge.from_options(eval_cfg, model="b", adapter=None)
    single, serve, baseline = built
    assert (single["model"], single["threshold"], single["temperature"], single["dtype"]) == ("m", 7, 0.5, "bfloat16")
    assert single["reuse_prefix"] is False
    # serve's own --model is its CLIP model: the judge is --judge-model, with every judge_* option
    assert (serve["model"], serve["threshold"], serve["max_analysis_tokens"]) == ("llava", 8, 50)
    assert (serve["dtype"], serve["load_in_4bit"], serve["attn_implementation"]) == ("float16", True, "eager")
    assert (serve["device"], serve["max_image_pixels"]) == ("cpu", 1000)
    assert serve["temperature"] == config.JudgeConfig.temperature  # serve has none: the judge's default
    # judge-eval's baseline: its own model and no adapter, the shared generation settings
    assert (baseline["model"], baseline["adapter"], baseline["seed"]) == ("b", None, 3)
