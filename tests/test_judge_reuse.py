"""Stage 2 through stage 1's KV cache (`reuse_prefix`) equals encoding from scratch, in float32 on the CPU under
greedy decoding: the same generated ids and the same score distributions (1e-5), at batch 1 and in a batch
whose descriptions end at different lengths (different masked columns and tail padding per row), on the
first attempt and on retries that run again on the rolled-back cache, narrowed to some rows. An untrained
model writes no score, so the score position is pinned to a fixed step to get a distribution to compare."""

from __future__ import annotations

import pytest
import torch

from animatch.data.images import load_image
from animatch.judge import prompts
from animatch.judge.judge import STATIC_CACHE_STEP, Judge

TEXTS = ["A girl with long pink hair, blue eyes and a black school uniform.",
         "A tall man with a long black coat, red eyes and a sword.", "Blue eyes."]


@pytest.fixture(scope="module")
def judge(llava_tiny_dir):
    judge = Judge(str(llava_tiny_dir), device="cpu", dtype="float32", temperature=0.0, retry_temperatures=(0.0,),
                  max_description_tokens=14, max_analysis_tokens=12)
    judge._scores.position = lambda generated: min(3, len(generated) - 1)
    return judge


@pytest.fixture(scope="module")
def images(fixtures_dir):
    loaded = [load_image(p) for p in sorted((fixtures_dir / "images").rglob("*.png"))]
    return [loaded[i % len(loaded)] for i in range(3)]


def record_generate(judge, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """Every stage-2 generate() call's (new ids, raw logits, the type of the cache it was given), in order."""
    calls, original = [], judge.model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        if kwargs.get("output_logits"):
            calls.append((out.sequences[:, kwargs["input_ids"].shape[1]:], torch.stack(out.logits, dim=1),
                          type(kwargs.get(judge._cache_kwarg)).__name__))
        return out

    monkeypatch.setattr(judge.model, "generate", generate)
    return calls


def described_with_uneven_lengths(judge, images):
    """Stage 1 of `images`, with an end-of-sequence token added so that one description stops early (with room
    for stage 2 in a static cache)."""
    described = judge._describe(images)
    if len(images) > 1:
        prompt_len = described.inputs["input_ids"].shape[1]
        judge._eos.add(int(described.sequences[1, prompt_len + 3]))
        judge.model.generation_config.eos_token_id = sorted(judge._eos)
        described = judge._describe(images, reserve=STATIC_CACHE_STEP)
        assert min(described.lengths) < max(described.lengths) == judge.max_description_tokens
    return described


def assert_same(reused, scratch):
    assert len(reused) == len(scratch)
    for (ids_a, logits_a, _), (ids_b, logits_b, _) in zip(reused, scratch):
        assert torch.equal(ids_a, ids_b)
        assert torch.allclose(logits_a.softmax(-1), logits_b.softmax(-1), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_reuse_and_scratch_generate_the_same_ids_and_scores(judge, images, monkeypatch, batch):
    calls = record_generate(judge, monkeypatch)
    pairs = list(zip(images, TEXTS))[:batch]
    described_with_uneven_lengths(judge, images[:batch])
    results = {}
    for reuse in (True, False):
        judge.reuse_prefix = reuse
        start = len(calls)
        results[reuse] = judge.analyze_batch(pairs)
        assert len(calls) - start == 2  # the first attempt, then its retry (an untrained model writes no score)
    assert_same(calls[:2], calls[2:])
    for a, b in zip(results[True], results[False]):
        assert a["raw"] == b["raw"] and a["attempts"] == b["attempts"] == 2
        assert a["score_expected"] is not None and abs(a["score_expected"] - b["score_expected"]) < 1e-5


@pytest.mark.parametrize("static", [False, True])
def test_retries_of_some_rows_reuse_the_narrowed_cache_exactly(judge, images, monkeypatch, static):
    calls = record_generate(judge, monkeypatch)
    judge.static_cache = static
    described = described_with_uneven_lengths(judge, images)
    tails = [prompts.tail_token_ids(judge.processor.tokenizer, prompts.relevance_tail(judge.processor, text))
             for text in TEXTS]
    attempts = ([0, 1, 2], [0, 1, 2], [0, 1], [1], [1])  # row 1 ends early
    for reuse in (True, False):
        judge.reuse_prefix = reuse
        judge.static_cache = static and reuse
        for rows in attempts:
            judge._relevance(described, tails, rows, 0.0, 0)
    judge.static_cache = False
    assert_same(calls[:len(attempts)], calls[len(attempts):])
    prompt_len = described.inputs["input_ids"].shape[1]
    if static:  # a static cache's rows cannot be selected: retries of some of them re-encode
        assert [cache for _, _, cache in calls[:len(attempts)]] == ["StaticCache"] * len(attempts)
        assert described.cache_rows == [0, 1, 2]
    else:  # narrowed, and cropped after the longest description still cached
        assert described.cache_rows == [1]
        assert described.cache.get_seq_length() == prompt_len + described.lengths[1]


@pytest.mark.parametrize("reuse", [True, False])
def test_a_static_cache_generates_what_the_dynamic_one_does(judge, images, monkeypatch, reuse):
    calls = record_generate(judge, monkeypatch)
    described = {}
    original = judge._describe
    monkeypatch.setattr(judge, "_describe",
                        lambda *args, **kw: described.setdefault(judge.static_cache, original(*args, **kw)))
    judge.reuse_prefix = reuse
    pairs = list(zip(images, TEXTS))
    results = {}
    for static in (True, False):
        judge.static_cache = static
        results[static] = judge.analyze_batch(pairs)
    judge.static_cache = False
    assert [cache for _, _, cache in calls] == ["StaticCache"] * 2 + [("DynamicCache" if reuse else "NoneType")] * 2
    assert_same(calls[:2], calls[2:])
    assert [r["score_expected"] for r in results[True]] == pytest.approx([r["score_expected"] for r in results[False]],
                                                                         abs=1e-5)
    cache = described[True].cache  # stage 1's, sized for stage 2 too, and rolled back after it
    assert type(cache).__name__ == "StaticCache" and cache.layers[0].max_cache_len % STATIC_CACHE_STEP == 0
    prompt_len = described[True].inputs["input_ids"].shape[1]
    assert int(cache.get_seq_length()) <= prompt_len + max(described[True].lengths)
