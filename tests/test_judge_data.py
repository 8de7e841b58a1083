"""Judge training examples: label masking, train prompt == inference prompt token for token, the two-stage
relevance plan (no verbatim positives, names carry no signal, same-title negatives, personality negatives)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor
from transformers.generation.utils import GenerateDecoderOnlyOutput

from animatch.config import JudgeTrainConfig
from animatch.data.images import load_image
from animatch.data.schema import load_split
from animatch.judge import prompts
from animatch.judge.data import (
    IGNORE_INDEX,
    ExampleCollator,
    ExampleEncoder,
    JudgeExampleDataset,
    anonymise,
    join_within,
    plan_epoch,
    split_sentences,
)
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
        return GenerateDecoderOnlyOutput(sequences=sequences) if len(calls) == 1 else sequences

    judge.model.generate = fake_generate
    result = judge.analyze(image, TEXT)
    assert result["description"] == description and result["score"] == 8

    encoder = ExampleEncoder(processor)
    stage1, pixels = encoder.prompt_ids(image, {"kind": "description"})
    stage2, _ = encoder.prompt_ids(image, {"kind": "positive", "description": description, "text": TEXT})
    assert calls[0][0][0].tolist() == stage1
    assert calls[1][0][0].tolist() == stage2
    assert torch.equal(calls[0][1][0], pixels)
    # and both equal the whole rendered conversation, tokenised in one go
    whole = processor(images=image, text=prompts.render_relevance_prompt(processor, description, TEXT),
                      return_tensors="pt")["input_ids"][0].tolist()
    assert whole == stage2


def test_synthetic_plan_has_no_verbatim_positives_and_no_name_signal(processor, synth_records):
    cfg = _cfg(negatives_per_positive=2, description_examples=1, personality_negatives=0.5)
    plan, missing = plan_epoch(synth_records, cfg, processor.tokenizer, seed=3, epoch=0)
    assert not missing
    kinds = [s["kind"] for s in plan]
    n = len(synth_records)
    assert kinds.count("description") == n and kinds.count("positive") == n and kinds.count("negative") == 2 * n
    assert 0 < kinds.count("personality") < n
    titles = [r["title"] for r in synth_records]
    for spec in plan:
        anchor = synth_records[spec["record"]]
        if spec["kind"] == "description":
            assert spec["description"] is None and " ".join(spec["answer"].split()) in " ".join(
                anonymise(anchor["appearance"], anchor["character"]).split())
            continue
        score, analysis = parse_relevance(spec["answer"])
        assert score == {"positive": 9, "negative": 2, "personality": 1}[spec["kind"]] and analysis
        assert anchor["character"].split()[0] not in spec["description"]  # names are not visible: anonymised
        assert spec["text"] not in spec["description"] and spec["text"] != anchor["appearance"]
        if spec["kind"] == "positive":
            assert anchor["character"].split()[0] in spec["text"]
        if spec["kind"] == "negative":  # another character, of the same title whenever it has one
            other = next(r for r in synth_records if spec["text"].startswith(r["character"] + " "))
            assert other is not anchor
            assert other["title"] == anchor["title"] or titles.count(anchor["title"]) == 1
    assert plan_epoch(synth_records, cfg, processor.tokenizer, seed=3, epoch=0)[0] == plan  # deterministic
    assert plan_epoch(synth_records, cfg, processor.tokenizer, seed=3, epoch=1)[0] != plan


def test_real_plan_takes_positive_sentences_out_of_the_context(processor, real_records):
    cfg = _cfg(negatives_per_positive=1, same_title_negatives=0.0, personality_negatives=0.0)
    for epoch in range(3):
        plan, missing = plan_epoch(real_records, cfg, processor.tokenizer, seed=0, epoch=epoch)
        single = sum(len(split_sentences(r["appearance"])) < 2 for r in real_records)
        assert missing.get("positive: appearance of one sentence", 0) == single
        for spec in plan:
            if spec["kind"] == "description":
                continue
            anchor = real_records[spec["record"]]
            context = set(split_sentences(spec["description"]))
            own = split_sentences(anchor["appearance"])
            for sentence in split_sentences(spec["text"]):
                assert sentence not in context
                assert (sentence in own) == (spec["kind"] == "positive")


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
