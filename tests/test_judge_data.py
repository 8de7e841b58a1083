"""Judge training examples: label masking, train prompt == inference prompt token for token, the two-stage
relevance plan (no verbatim positives, names carry no signal, same-title negatives, personality negatives, the
same rules for synthetic and real data), keyword descriptions and the plan on the model's own descriptions."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor
from transformers.generation.utils import GenerateDecoderOnlyOutput

from animatch.config import JudgeTrainConfig
from animatch.data.images import load_image
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.evaluate.keywords import keyword_group
from animatch.judge import prompts
from animatch.judge.data import (
    anonymise,
    description_keywords,
    description_target,
    join_within,
    plan_epoch,
    split_sentences,
)
from animatch.judge.examples import IGNORE_INDEX, ExampleCollator, ExampleEncoder, JudgeExampleDataset
from animatch.judge.judge import Judge
from animatch.judge.parse import parse_relevance

TEXT = "She has long pink hair, blue eyes and a black school uniform."


def _cfg(**kw) -> JudgeTrainConfig:
    return JudgeTrainConfig(data="unused", split_dir="unused", out="unused", **kw)


@pytest.fixture(scope="module")
def processor(llava_tiny_dir):
    return AutoProcessor.from_pretrained(str(llava_tiny_dir))


@pytest.fixture(scope="module")
def synth_records(prepared_dir):
    return load_split(prepared_dir, "train")


@pytest.fixture(scope="module")
def real_records(fixtures_dir):
    return [json.loads(line) for line in (fixtures_dir / "metadata.jsonl").read_text().splitlines()]


def test_labels_mask_prompt_image_and_padding(processor, synth_records, synth_root):
    dataset = JudgeExampleDataset(synth_records, synth_root, processor, _cfg(personality_negatives=1.0), seed=0)
    kinds = {"description", "positive", "negative", "personality"}
    index = [next(i for i, s in enumerate(dataset.plan) if s["kind"] == kind) for kind in sorted(kinds)]
    batch = ExampleCollator(processor.tokenizer.pad_token_id)([dataset[i] for i in index])
    assert set(batch["kinds"]) == kinds and batch["skipped"] == []
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    for row, i in enumerate(index):
        spec, ids, labels = dataset.plan[i], batch["input_ids"][row], batch["labels"][row]
        length = int(batch["attention_mask"][row].sum())
        assert torch.all(batch["attention_mask"][row, :length] == 1)
        answer = processor.tokenizer(spec["answer"], add_special_tokens=False)["input_ids"] + \
            [processor.tokenizer.eos_token_id]
        loss_at = (labels != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        assert loss_at == list(range(length - len(answer), length))  # the answer and its end token only
        assert labels[loss_at].tolist() == ids[loss_at].tolist() == answer
        assert (ids == image_token).sum() == 64 and torch.all(labels[ids == image_token] == IGNORE_INDEX)
        assert torch.all(labels[length:] == IGNORE_INDEX)
        assert torch.all(ids[length:] == processor.tokenizer.pad_token_id)


def test_train_prompt_equals_inference_prompt_token_for_token(llava_tiny_dir, processor, synth_records, synth_root):
    """Capture the ids the judge feeds `generate` in both stages and compare them with the training prompt."""
    record = synth_records[0]
    image = load_image(synth_root / record["file_name"])
    description = record["appearance"]
    # CPU: the fake generate appends CPU token ids, and the captured pixels are compared with the encoder's.
    judge = Judge(str(llava_tiny_dir), device="cpu", reuse_prefix=False, temperature=0.0, retry_temperatures=())
    tokenizer = judge.processor.tokenizer
    described = tokenizer(description, add_special_tokens=False, return_tensors="pt")["input_ids"]
    calls = []

    def fake_generate(input_ids, **kw):
        calls.append((input_ids, kw.get("pixel_values")))
        answer = described if len(calls) == 1 else tokenizer("Score: 8\nAnalysis: ok", add_special_tokens=False,
                                                                  return_tensors="pt")["input_ids"]
        sequences = torch.cat([input_ids, answer, torch.tensor([[tokenizer.eos_token_id]])], dim=1)
        steps = sequences.shape[1] - input_ids.shape[1]
        return GenerateDecoderOnlyOutput(sequences=sequences, logits=tuple(torch.zeros(1, len(tokenizer))
                                                                           for _ in range(steps)))

    judge.model.generate = fake_generate
    result = judge.analyze(image, TEXT)
    assert result["description"] == description and result["score"] == 8
    # flat logits at the score position: every score token alike, so the expected score is the mean of 1-9
    # (this tokenizer writes 10 as "1" "0", and the answer wrote "8", so no mass was split off to 10)
    assert result["score_expected"] == pytest.approx(5.0)

    encoder = ExampleEncoder(processor)
    stage1, pixels, _ = encoder.prompt_ids(image, {"kind": "description"})
    stage2, _, _ = encoder.prompt_ids(image, {"kind": "positive", "description": description, "text": TEXT})
    assert calls[0][0][0].tolist() == stage1
    assert calls[1][0][0].tolist() == stage2
    assert torch.equal(calls[0][1][0], pixels)
    # and both equal the whole rendered conversation, tokenised in one go
    whole = processor(images=image, text=prompts.render_relevance_prompt(processor, description, TEXT),
                      return_tensors="pt")["input_ids"][0].tolist()
    assert whole == stage2


@pytest.mark.parametrize("which", ["synth", "real"])
def test_reference_plan_takes_positive_sentences_out_of_the_context(processor, synth_records, real_records, which):
    """The same rules for any dataset: the product knows no generator's wording or attributes."""
    records = synth_records if which == "synth" else real_records
    cfg = _cfg(negatives_per_positive=2, description_examples=1, personality_negatives=0.5)
    epoch_plan = plan_epoch(records, cfg, processor.tokenizer, seed=3, epoch=0)
    plan, missing = list(epoch_plan), epoch_plan.missing
    single = sum(len(split_sentences(r["appearance"])) < 2 for r in records)
    assert missing.get("positive: appearance of one sentence", 0) == single
    kinds = [s["kind"] for s in plan]
    n = len(records)
    assert kinds.count("description") == n and kinds.count("positive") == n - single
    assert kinds.count("negative") == 2 * n
    titles = [r["title"] for r in records]
    for spec in plan:
        anchor = records[spec["record"]]
        if spec["kind"] == "description":
            assert spec["description"] is None and " ".join(spec["answer"].split()) in " ".join(
                anonymise(anchor["appearance"], anchor["character"]).split())
            continue
        score, analysis = parse_relevance(spec["answer"])
        assert score == {"positive": 9, "negative": 2, "personality": 1}[spec["kind"]] and analysis
        assert anchor["character"].split()[0] not in spec["description"]  # names are not visible: anonymised
        context, own = set(split_sentences(spec["description"])), split_sentences(anchor["appearance"])
        if spec["kind"] == "personality":
            continue
        if spec["kind"] == "positive":
            for sentence in split_sentences(spec["text"]):
                assert sentence not in context and sentence in own  # its own words, never a verbatim copy
        if spec["kind"] == "negative":  # another character, of the same title whenever it has one
            other = records[spec["other"]]
            assert other is not anchor and set(split_sentences(spec["text"])) <= set(split_sentences(
                other["appearance"]))
            assert other["title"] == anchor["title"] or titles.count(anchor["title"]) == 1
    assert list(plan_epoch(records, cfg, processor.tokenizer, seed=3, epoch=0)) == plan  # deterministic
    assert list(plan_epoch(records, cfg, processor.tokenizer, seed=3, epoch=1)) != plan
    assert list(reversed([epoch_plan[n] for n in reversed(range(len(plan)))])) == plan  # any order


def test_a_fraction_of_description_examples_draws_them_per_character(processor, synth_records):
    def descriptions(share):
        cfg = _cfg(description_examples=share, personality_negatives=0.0)
        kinds = [(s["kind"], s["record"]) for s in plan_epoch(synth_records, cfg, processor.tokenizer, seed=3, epoch=0)]
        return [i for kind, i in kinds if kind == "description"], sum(kind != "description" for kind, _ in kinds)

    n = len(synth_records)
    half, judged = descriptions(0.5)
    assert 0 < len(half) < n and len(set(half)) == len(half)  # some characters, each at most once
    assert judged == descriptions(1)[1]  # the stage-2 examples are all there
    assert descriptions(0.5) == (half, judged)  # drawn from (seed, epoch)
    assert len(descriptions(1.5)[0]) > n and len(descriptions(0)[0]) == 0
    with pytest.raises(UserError, match="--description-examples must be above 0"):
        _cfg(describe_steps=10, description_examples=0).check()


def test_keyword_descriptions(processor):
    record = {"character": "Rin Aoba", "appearance": "Rin Aoba has long chocolate-brown hair. She is 150 cm tall. "
                                                     "Rin wears a red kimono and round glasses."}
    assert description_target(record, processor.tokenizer, 64, "keywords") == \
        "brown hair, red kimono, glasses"
    first = len(processor.tokenizer("brown hair,", add_special_tokens=False)["input_ids"])
    assert description_target(record, processor.tokenizer, first, "keywords") == "brown hair"  # within the budget
    plain = {"character": "Rin", "appearance": "Rin is kind."}
    assert description_target(plain, processor.tokenizer, 64, "keywords") == "The character is kind."
    # the description order (hair, eyes, clothes, the rest) and basic colours, however the text put them
    shuffled = {"character": "Rin", "appearance": "Rin wears a crimson kimono and round glasses. She has azure eyes "
                                                  "and long chocolate-brown hair."}
    assert description_target(shuffled, processor.tokenizer, 64, "keywords") == \
        "brown hair, blue eyes, red kimono, glasses"


@pytest.mark.parametrize("which", ["synth", "real"])
def test_context_noise_errs_like_a_describer(processor, synth_records, real_records, which):
    """Keyword contexts lose or swap keywords at the rate asked, a swap within the keyword's group and taken from
    another character; descriptions (stage-1 targets) and candidates stay as they are."""
    records = synth_records if which == "synth" else real_records
    base = dict(description_style="keywords", description_tokens=512, personality_negatives=0.0)

    def plan(noise, noisy=True):
        return list(plan_epoch(records, _cfg(context_noise=noise, **base), processor.tokenizer, seed=5, epoch=0,
                               noisy=noisy))

    clean, noisy = plan(0.0), plan(0.4)
    kept = total = 0
    for gold, spec in zip(clean, noisy):
        assert (gold["kind"], gold["record"], gold["text"], gold["answer"]) == \
            (spec["kind"], spec["record"], spec["text"], spec["answer"])
        if spec["kind"] == "description":
            assert spec["answer"] == description_target(records[spec["record"]], processor.tokenizer, 512,
                                                        "keywords")
            continue
        truth, written = gold["description"].split(", "), spec["description"].split(", ")
        total += len(truth)
        kept += sum(k in truth for k in written)
        for swap in (k for k in written if k not in truth):
            assert swap in {k for r in records for k in description_keywords(r)}
            assert keyword_group(swap) in {keyword_group(k) for k in truth}
    assert 0.5 < kept / total < 0.7 if which == "synth" else kept < total
    assert plan(0.4) == noisy  # drawn from the example's seed
    assert plan(0.4, noisy=False) == clean  # the exact phase of judge-train (before --context-noise-from)
    with pytest.raises(UserError, match="--context-noise"):
        _cfg(context_noise=0.2).check()  # text descriptions: nothing to err


def test_context_loss_trains_exact_contexts_as_stage1_answers(processor, synth_records, synth_root):
    """With `context_loss`, a stage-2 example whose context is the exact description target carries the labels of
    that record's description example before its own answer; a context with errors, or
    without `context_loss`, carries none."""
    base = dict(description_style="keywords", personality_negatives=0.0, context_noise=0.4)
    eos = processor.tokenizer.eos_token_id

    def labelled(cfg, noisy):
        dataset = JudgeExampleDataset(synth_records, synth_root, processor, cfg, seed=0)
        dataset.set_epoch(0, noisy=noisy)
        for n in [n for n, slot in enumerate(dataset.plan.slots) if slot["kind"] != "description"][:4]:
            spec, item = dataset.plan[n], dataset[n]
            labels = item["labels"][item["labels"] != IGNORE_INDEX].tolist()
            answer = processor.tokenizer(spec["answer"], add_special_tokens=False)["input_ids"] + [eos]
            stage1 = processor.tokenizer(description_target(synth_records[spec["record"]], processor.tokenizer,
                                                            cfg.description_tokens, "keywords"),
                                         add_special_tokens=False)["input_ids"] + [eos]
            assert labels[-len(answer):] == answer and item["weights"][item["labels"] != IGNORE_INDEX].min() == 1
            yield labels[:-len(answer)], stage1, spec["describes"]

    for context, stage1, describes in labelled(_cfg(context_loss=True, **base), noisy=False):
        assert describes and context in (stage1, stage1[:-1])  # the end token where the chat template has it there
    for cfg, noisy in ((_cfg(context_loss=True, **base), True), (_cfg(**base), False)):
        assert all(context == [] and not describes for context, _, describes in labelled(cfg, noisy))
    with pytest.raises(UserError, match="--context-loss"):
        _cfg(context_loss=True, stage2_context="own").check()


def test_own_description_plan_uses_the_model_descriptions(processor, synth_records):
    cfg = _cfg(negatives_per_positive=1, description_examples=1, personality_negatives=0.0,
               description_style="keywords")
    own = {i: f"own description {i}" for i in range(0, len(synth_records), 2)}
    epoch_plan = plan_epoch(synth_records, cfg, processor.tokenizer, seed=0, epoch=0, own=own)
    plan = list(epoch_plan)
    assert not epoch_plan.missing
    assert sorted(s["record"] for s in plan if s["kind"] == "description") == sorted(own)
    relevance = [s for s in plan if s["kind"] != "description"]
    assert len(relevance) == 2 * len(own)
    for spec in relevance:
        assert spec["description"] == own[spec["record"]] and spec["text"]
        writer = synth_records[spec["other"]]
        assert set(split_sentences(spec["text"])) <= set(split_sentences(writer["appearance"]))
        assert (spec["other"] == spec["record"]) == (spec["kind"] == "positive")
        assert spec["other"] in own  # negatives come from the described characters too
    only = list(plan_epoch(synth_records, cfg, processor.tokenizer, seed=0, epoch=0, describe_only=True))
    assert {s["kind"] for s in only} == {"description"} and len(only) == len(synth_records)


def test_text_helpers():
    assert split_sentences("Red hair. Blue eyes!  A hat?\nBoots.") == ["Red hair.", "Blue eyes!", "A hat?", "Boots."]
    assert anonymise("Kori Nato wears a hat. Then Kori smiles; Kori's hat", "Kori Nato") == \
        "The character wears a hat. Then the character smiles; the character's hat"

    class Words:  # one token per word
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text.split())))}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(f"w{i}" for i in ids)

    assert join_within(Words(), ["a b", "c d e", "f"], 5) == "a b c d e"
    assert join_within(Words(), ["a b", "c d e", "f"], 4) == "a b"
    assert join_within(Words(), ["a b c d e f"], 3) == "w0 w1 w2"  # a first piece alone too long is cut
    assert join_within(Words(), [], 3) == ""
