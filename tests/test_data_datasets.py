"""The CLIP training dataset: text sampling (windows vs chunks), determinism, eval views, error items."""

from __future__ import annotations

import pytest
from transformers import CLIPImageProcessor

from animatch.data.datasets import PairDataset
from animatch.data.text import chunk_windows

CHUNKS = ["Ana has long red hair.", "She wears a blue kimono.", "She has green eyes."]


@pytest.fixture(scope="module")
def dataset_args(synth_root, prepared_dir, clip_tiny_dir):
    import json
    record = json.loads((prepared_dir / "train.jsonl").read_text().splitlines()[0])
    record = {**record, "appearance_chunks": CHUNKS}
    return [record] * 40, synth_root, CLIPImageProcessor.from_pretrained(clip_tiny_dir)


def test_window_sampling_starts_at_every_chunk_and_is_deterministic(dataset_args):
    records, root, processor = dataset_args
    dataset = PairDataset(records, root, processor, train=True, seed=5)
    texts = [dataset[i]["text"] for i in range(len(records))]
    assert set(texts) == set(chunk_windows(CHUNKS))  # every start is drawn over 40 items
    again = PairDataset(records, root, processor, train=True, seed=5)
    assert [again[i]["text"] for i in range(len(records))] == texts
    assert [again[0, i]["text"] for i in range(len(records))] == texts  # dataset[i] is epoch 0
    assert [again[1, i]["text"] for i in range(len(records))] != texts  # a new draw each epoch


def test_chunk_sampling_and_evaluation_views(dataset_args):
    records, root, processor = dataset_args
    chunked = PairDataset(records, root, processor, train=True, seed=5, text_sampling="chunk")
    assert {chunked[i]["text"] for i in range(len(records))} == set(CHUNKS)
    assert PairDataset(records, root, processor, train=False)[0]["text"] == " ".join(CHUNKS)
    assert PairDataset(records, root, processor, train=False, text_sampling="chunk")[0]["text"] == CHUNKS[0]
    with pytest.raises(ValueError, match="text_sampling"):
        PairDataset(records, root, processor, train=True, text_sampling="sentence")
