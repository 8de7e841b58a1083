"""`train --compile`: compilation time and optimizer-step time of the compiled training forward vs eager.

Usage: .venv/bin/python bench/train_compile.py --data ROOT --split-dir DIR --model MODEL [--steps 10]
       [--batch-size 32] [--mixed-precision no|bf16|fp16] [--threads 1]
Pre-made batches (uint8 pixels, tokenised texts) on the Accelerator's device (a GPU when there is one), then
the same optimizer steps eager and compiled (`torch.compile` of both towers, in place). Compilation time is the
first compiled step less one compiled step; step times are medians after two warm-up steps. Prints the
attention kernel both towers run with.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from accelerate import Accelerator

from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, epoch_batches
from animatch.data.schema import load_split
from animatch.models.hub import load_clip


def step_times(compiled: bool, args: argparse.Namespace, records: list[dict]) -> tuple[list[float], list[float]]:
    """(seconds per step, losses) of `args.steps` steps."""
    acc = Accelerator(mixed_precision=args.mixed_precision)
    model, processor = load_clip(args.model, attn_implementation=args.attn_implementation)
    cfg = TrainConfig(data=args.data, split_dir=args.split_dir, out="unused", batch_size=args.batch_size,
                      lr=1e-4, compile=compiled, attn_implementation=args.attn_implementation)
    trainer = Trainer(cfg, acc, model, processor)
    dataset = PairDataset(records, args.data, processor.image_processor, train=True, seed=0,
                          tokenizer=processor.tokenizer)
    collate = PairCollator(processor.tokenizer)
    order = epoch_batches(len(records), args.batch_size, world=1, rank=0, seed=0, epoch=0)
    batches = [{k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in collate([dataset[i] for i in b]).items()}
               for b in (order * args.steps)[: args.steps]]
    if not compiled:
        towers = {model.config.vision_config._attn_implementation, model.config.text_config._attn_implementation}
        print(f"attention: {', '.join(sorted(towers))}; device {acc.device}, mixed precision {args.mixed_precision}")
    seconds, losses = [], []
    for n, batch in enumerate(batches):
        start = time.perf_counter()
        losses.append(trainer.step([batch], n))  # .item() of the loss: the step has finished on the device
        seconds.append(time.perf_counter() - start)
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = load_split(args.split_dir, "train")
    eager, eager_losses = step_times(False, args, records)
    compiled, compiled_losses = step_times(True, args, records)
    eager_step, compiled_step = statistics.median(eager[2:]), statistics.median(compiled[2:])
    pairs = args.batch_size / compiled_step
    print(f"batch {args.batch_size}, {args.steps} steps; largest loss difference compiled - eager: "
          f"{max(abs(a - b) for a, b in zip(eager_losses, compiled_losses)):.2e}")
    print(f"eager: {eager_step * 1000:.0f} ms/step ({args.batch_size / eager_step:.0f} pairs/s)")
    print(f"compiled: {compiled_step * 1000:.0f} ms/step ({pairs:.0f} pairs/s), "
          f"{eager_step / compiled_step:.2f}x eager")
    print(f"compile: {compiled[0] - compiled_step:.1f} s at the first step "
          f"(+{compiled[1] - compiled_step:.1f} s at the second: dynamic shapes)")


if __name__ == "__main__":
    main()
