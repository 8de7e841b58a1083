"""Data-loader overhead of `animatch train`: step time with the real loader vs with pre-made tensors.

Usage: .venv/bin/python bench/loader.py --data ROOT --split-dir DIR --model MODEL [--steps 40] [--workers 2]
Runs the same optimizer steps twice: batches decoded, augmented and tokenised by the training DataLoader
(worker processes), then the same batches already in memory. Overhead = loader / in-memory - 1 (goal
<= 10%: the workers must keep up with the model).
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator

from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, epoch_batches
from animatch.data.schema import load_split
from animatch.models.hub import load_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cfg = TrainConfig(data=args.data, split_dir=args.split_dir, out="unused", batch_size=args.batch_size,
                      lr=1e-4, workers=args.workers)
    records = load_split(args.split_dir, "train")
    model, processor = load_clip(args.model)
    trainer = Trainer(cfg, Accelerator(cpu=True), model, processor)
    dataset = PairDataset(records, args.data, processor.image_processor, train=True, seed=0)
    batches = epoch_batches(len(records), args.batch_size, world=1, rank=0, seed=0, epoch=0)[: args.steps + 2]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=PairCollator(processor.tokenizer),
                                         num_workers=args.workers)
    in_memory = []
    times = []
    for i, batch in enumerate(loader):
        if i == 2:  # the first steps pay for worker start-up and allocator warm-up
            start = time.perf_counter()
        trainer.step([batch])
        in_memory.append(batch)
    times.append((time.perf_counter() - start) / args.steps)
    start = time.perf_counter()
    for batch in in_memory[2:]:
        trainer.step([batch])
    times.append((time.perf_counter() - start) / args.steps)
    print(f"batch {args.batch_size}, {args.workers} workers, {args.steps} steps")
    print(f"step time with the DataLoader: {times[0] * 1000:.1f} ms; with pre-made tensors: {times[1] * 1000:.1f} ms")
    print(f"loader overhead: {100 * (times[0] / times[1] - 1):+.1f}%")


if __name__ == "__main__":
    main()
