"""Window token ids built from each record's chunk ids: the tokenizer's ids exactly (truncation included), the
fallback to tokenising texts where joined ids would differ, and batches equal to tokenising every text."""

from __future__ import annotations

import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, CLIPImageProcessor

from animatch.data.datasets import PairCollator, PairDataset
from animatch.data.schema import load_split
from animatch.data.text import chunk_windows
from animatch.data.window_tokens import CHECKED_RECORDS, WindowTokens


@pytest.fixture(scope="module")
def chunk_lists(prepared_dir) -> list[list[str]]:
    """Every synthetic record's chunks, then records of 5-8 chunks taken from them (long, truncated windows), then
    records whose one chunk is longer than the context."""
    chunks = [r["appearance_chunks"] for split in ("train", "val", "test") for r in load_split(prepared_dir, split)]
    flat = [c for cs in chunks for c in cs]
    return (chunks + [flat[n:n + 5 + n % 4] for n in range(0, len(flat) - 8, 2)]
            + [[" ".join(flat[n:n + 4])] for n in range(0, 40, 4)])


def _expected(tokenizer, text: str) -> list[int]:
    return tokenizer(text, truncation=True, max_length=77)["input_ids"]


@pytest.mark.parametrize(("window", "truncation_side"), [(True, "right"), (False, "right"), (True, "left")])
def test_ids_are_the_tokenizers_on_every_view(clip_tiny_dir, chunk_lists, window, truncation_side):
    tokenizer = AutoTokenizer.from_pretrained(clip_tiny_dir, truncation_side=truncation_side)
    # leaves truncation and padding to 20 set on the tokenizer's backend, which WindowTokens' encoder must not keep
    tokenizer(["leaves its backend", "truncating and padding"], padding="max_length", truncation=True, max_length=20)
    tokens = WindowTokens.for_records(tokenizer, 77, chunk_lists, window=window)
    assert tokens is not None and len(chunk_lists) > CHECKED_RECORDS  # records past the check are compared too
    truncated = 0
    for i, chunks in enumerate(chunk_lists):
        for k, text in enumerate(chunk_windows(chunks) if window else chunks):
            ids = tokens.ids(i, chunks, k)
            assert ids.dtype.name == "int32" and ids.tolist() == _expected(tokenizer, text), (i, k)
            truncated += len(tokenizer(text)["input_ids"]) > 77
    assert truncated > (50 if window else 5)  # views past 77 tokens are cut as the tokenizer cuts them
    assert tokens.ids(0, ["unused: read from the cache"], 0).tolist() == tokens.ids(0, chunk_lists[0], 0).tolist()


def test_a_tokenizer_where_joined_ids_differ_tokenises_texts(clip_tiny_dir, llava_tiny_dir, chunk_lists, capsys):
    """Byte-level BPE (CLIP's vocabulary behind GPT-2's pre-tokenizer: the space goes with the next word) fails
    the check; llava-tiny's Llama tokenizer is not CLIP's BPE. Each says so once, and no ids are built."""
    byte_level = AutoTokenizer.from_pretrained(clip_tiny_dir)
    byte_level.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for tokenizer, why in ((byte_level, "differs from its chunks' ids joined"),
                           (AutoTokenizer.from_pretrained(llava_tiny_dir), "is not CLIP's BPE")):
        assert WindowTokens.for_records(tokenizer, 77, chunk_lists, window=True) is None
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "tokenising every sampled text in full" in lines[0] and why in lines[0]


def _dataset_args(synth_root, prepared_dir, clip_tiny_dir):
    return load_split(prepared_dir, "train"), synth_root, CLIPImageProcessor.from_pretrained(clip_tiny_dir)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collated_ids_equal_tokenising_every_text(synth_root, prepared_dir, clip_tiny_dir, padding_side):
    records, root, processor = _dataset_args(synth_root, prepared_dir, clip_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(clip_tiny_dir, padding_side=padding_side)
    with_ids = PairDataset(records, root, processor, train=True, seed=2, tokenizer=tokenizer)
    texts = PairDataset(records, root, processor, train=True, seed=2)
    collate = PairCollator(tokenizer)
    for epoch in (0, 1):
        keys = [(epoch, i) for i in range(16)]
        items = [with_ids[key] for key in keys]
        assert all("input_ids" in it for it in items)
        new, old = collate(items), collate([texts[key] for key in keys])
        assert "input_ids" not in texts[keys[0]]
        for name in ("input_ids", "attention_mask", "pixel_values", "indices"):
            assert torch.equal(new[name], old[name]), name
        assert (new["attention_mask"].sum(1) < new["input_ids"].shape[1]).any()  # some rows are padded


def test_fallback_dataset_items_carry_texts_the_collator_tokenises(synth_root, prepared_dir, clip_tiny_dir,
                                                                   llava_tiny_dir):
    records, root, processor = _dataset_args(synth_root, prepared_dir, clip_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(llava_tiny_dir)
    items = [PairDataset(records, root, processor, train=True, tokenizer=tokenizer)[i] for i in range(8)]
    assert not any("input_ids" in it for it in items)
    batch = PairCollator(tokenizer)(items)
    assert torch.equal(batch["input_ids"], tokenizer([it["text"] for it in items], padding=True, truncation=True,
                                                     max_length=77, return_tensors="pt")["input_ids"])
