"""The CLIP training dataset: text sampling (windows vs chunks), determinism, eval views, error items; batches
grouped by kind."""

from __future__ import annotations

import pytest
from transformers import CLIPImageProcessor

from animatch.data.datasets import PairDataset, epoch_batches
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


def test_grouped_batches_hold_one_group_each_in_a_seeded_order():
    groups = [i % 3 == 0 for i in range(50)]  # 17 of one group, 33 of the other
    for world in (1, 2):
        ranks = [epoch_batches(50, 4, world=world, rank=r, seed=3, epoch=0, groups=groups) for r in range(world)]
        global_batches = [sum(parts, []) for parts in zip(*ranks)]
        assert all(len({groups[i] for i in batch}) == 1 and len(batch) == 4 * world for batch in global_batches)
        items = sum(global_batches, [])
        assert len(items) == len(set(items))
        assert {groups[i] for i in items} == {True, False}
        # both groups' batches are spread over the epoch, not one group after the other
        kinds = [groups[batch[0]] for batch in global_batches]
        assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)
    once = epoch_batches(50, 4, world=1, rank=0, seed=3, epoch=0, groups=groups)
    assert epoch_batches(50, 4, world=1, rank=0, seed=3, epoch=0, groups=groups) == once
    assert epoch_batches(50, 4, world=1, rank=0, seed=3, epoch=1, groups=groups) != once
    # one group: the ungrouped batches, in another order
    assert sorted(epoch_batches(50, 4, world=1, rank=0, seed=3, epoch=0, groups=[0] * 50)) == \
        sorted(epoch_batches(50, 4, world=1, rank=0, seed=3, epoch=0))
