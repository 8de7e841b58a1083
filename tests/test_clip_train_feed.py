"""Feeding the training step without stalls: one loader whose workers live across epochs, checkpoints copied
off the model at once and written in the background, and the compiled training forward."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from animatch.clip.train import Trainer, _loader
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, RunBatches, epoch_batches
from animatch.data.schema import load_split
from animatch.models.hub import load_clip
from animatch.training.checkpoint import BackgroundWriter, take_snapshot, write_snapshot


def _keys(batches: RunBatches) -> list[list[tuple[int, int]]]:
    return [list(b) for b in batches]


def test_run_batches_chain_epochs_and_resume_mid_epoch():
    run = RunBatches(50, 4, world=2, rank=1, seed=3, epoch=0, start=0, last_epoch=2)
    assert run.per_epoch == 6
    expected = [[(e, i) for i in b] for e in range(3) for b in epoch_batches(50, 4, world=2, rank=1, seed=3, epoch=e)]
    assert _keys(run) == expected
    resumed = RunBatches(50, 4, world=2, rank=1, seed=3, epoch=1, start=4, last_epoch=2)
    assert _keys(resumed) == expected[6 + 4:]


@dataclass
class _PidCollator(PairCollator):
    def __call__(self, items: list[dict]) -> dict:
        return {**super().__call__(items), "pid": os.getpid()}


def test_loader_workers_live_across_epochs(synth_root, prepared_dir, clip_tiny_dir):
    """Three epochs through the run's one loader are served by the same two worker processes, each building window
    token ids from its own cache of chunk ids."""
    _, processor = load_clip(str(clip_tiny_dir))
    records = load_split(prepared_dir, "train")
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", workers=2, batch_size=8,
                      prefetch_batches=1)
    dataset = PairDataset(records, synth_root, processor.image_processor, train=True, seed=0,
                          tokenizer=processor.tokenizer)
    batches = RunBatches(len(records), 8, world=1, rank=0, seed=0, epoch=0, start=0, last_epoch=2)
    loaded = list(_loader(dataset, batches, _PidCollator(processor.tokenizer), cfg, Accelerator(cpu=True)))
    assert len(loaded) == 3 * batches.per_epoch
    assert len({b["pid"] for b in loaded}) == 2 and os.getpid() not in {b["pid"] for b in loaded}
    # each epoch's items are that epoch's draws (the key carries the epoch into the long-lived workers)
    first = loaded[batches.per_epoch]
    direct = PairCollator(processor.tokenizer)([dataset[1, int(i)] for i in first["indices"]])
    assert torch.equal(first["pixel_values"], direct["pixel_values"])
    assert torch.equal(first["input_ids"], direct["input_ids"])


def test_snapshot_is_the_state_when_taken(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    """The written checkpoint holds the weights and optimizer state of the moment of the snapshot, even though
    training moved on while it was being written."""
    model, processor = load_clip(str(clip_tiny_dir))
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", lr=1e-2)
    trainer = Trainer(cfg, Accelerator(cpu=True), model, processor)
    records = load_split(prepared_dir, "train")
    dataset = PairDataset(records, synth_root, processor.image_processor, train=True, seed=0)
    batch = PairCollator(processor.tokenizer)([dataset[i] for i in range(8)])
    trainer.step([batch])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot = take_snapshot(model, optimizer=trainer.optimizer, progress={"global_step": 1})
    trainer.step([batch])  # moves weights and optimizer moments in place
    writer = BackgroundWriter()
    writer.submit(lambda: write_snapshot(tmp_path / "last", model, processor, snapshot))
    writer.wait()
    saved = load_file(str(tmp_path / "last" / "model.safetensors"))
    assert all(torch.equal(saved[k], before[k]) for k in saved)
    assert any(not torch.equal(model.state_dict()[k], before[k]) for k in saved)
    moments = load_file(str(tmp_path / "last" / "trainer_state" / "optimizer.safetensors"))
    live = trainer.optimizer.state_dict()["state"]
    assert any(not torch.equal(moments[f"{pid}.exp_avg"], slots["exp_avg"]) for pid, slots in live.items())


def test_a_failed_background_write_is_raised_in_the_training_thread():
    writer = BackgroundWriter()
    writer.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.wait()  # raised once


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses(synth_root, prepared_dir, clip_tiny_dir):
    """`train --compile`: torch.compile of the training forward (both towers and the pixel normalisation) takes
    the same optimizer steps as eager, to float tolerance."""
    records = load_split(prepared_dir, "train")
    losses = {}
    for compiled in (False, True):
        model, processor = load_clip(str(clip_tiny_dir))
        cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", lr=1e-3,
                          compile=compiled)
        trainer = Trainer(cfg, Accelerator(cpu=True), model, processor)
        dataset = PairDataset(records, synth_root, processor.image_processor, train=True, seed=0)
        collate = PairCollator(processor.tokenizer)
        batch = collate([dataset[i] for i in range(8)])
        # one batch twice: the second loss is after a compiled backward and update; no new shapes to recompile for
        losses[compiled] = [trainer.step([batch], n) for n in range(2)]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
