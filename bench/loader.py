"""The training loader: its throughput per worker, and its overhead on a training step.

Usage: .venv/bin/python bench/loader.py --data ROOT --split-dir DIR --model MODEL --image-size 224 [--samples 1536]
       .venv/bin/python bench/loader.py --data ROOT --split-dir DIR --model MODEL [--steps 40] [--workers 2]

With --image-size: what one loader worker does (decode, random resized crop and flip, resize and crop, tokenise,
collate) for the training split, in this process, with the ViT-B/32 preprocessing at that size (shortest edge,
centre crop) and MODEL's tokenizer; first the processor's float32 pixels with every text tokenised in the collator
(the path before uint8 pixels and window token ids), then uint8 pixels with texts tokenised, then uint8 pixels
with the window token ids training uses (`WindowTokens`, where the tokenizer allows), twice: records first seen
(their chunks tokenised) and then cached (a worker's cache is its own: with W workers a record is in the cache of
the worker that draws it in a later epoch with probability 1 - (1 - 1/W)^epochs). Each prints samples per wall
second and per CPU second of this process (`time.process_time`): on a loaded machine the CPU figure is what a
worker with a core of its own delivers. Then the text stage alone, CPU microseconds per sample: each text
tokenised in full vs window ids (first pass: each record's chunks tokenised; second: read from the cache), padded
into batches. The last line is the training path's CPU figure, records first seen (the conservative one).

Without it: the same optimizer steps twice, batches from the training DataLoader (worker processes), then the
same batches already in memory. Overhead = loader / in-memory - 1 (goal <= 10%: the workers keep up).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from accelerate import Accelerator
from transformers import CLIPImageProcessorPil

from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, epoch_batches
from animatch.data.schema import load_split
from animatch.data.text import chunk_windows
from animatch.data.window_tokens import WindowTokens
from animatch.models.hub import load_clip, load_clip_processor


class ProcessorPixels:
    """The pixel stage before uint8 pixels: the image processor's float32 output, from a fully decoded file."""
    draft_size = None

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def per_worker(dataset: PairDataset, collator: PairCollator, batches: list[list[int]]) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of loading `batches` in this process."""
    collator([dataset[i] for i in batches[0]])  # warm-up: first calls pay for lazy imports and allocations
    wall, cpu = time.perf_counter(), time.process_time()
    samples = sum(collator([dataset[i] for i in batch])["size"] for batch in batches[1:])
    return samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu)


def text_micros(records: list[dict], tokenizer, batches: list[list[int]]) -> dict[str, float]:
    """CPU microseconds per sample of the text stage alone (random views, padded into `batches`'s batches)."""
    rng = random.Random(0)
    chunks = [r.get("appearance_chunks") or [r["appearance"]] for r in records]
    views = [[(i, rng.randrange(len(chunks[i]))) for i in batch] for batch in batches]
    collator = PairCollator(tokenizer)
    tokens = WindowTokens(tokenizer, 77, window=True)
    samples = sum(len(batch) for batch in views)
    timed = {"each text in full": lambda: [
                 tokenizer([chunk_windows(chunks[i])[k] for i, k in batch], padding=True, truncation=True,
                           max_length=77, return_tensors="pt") for batch in views],
             "window ids, first pass": lambda: [
                 collator.pad_ids([tokens.ids(i, chunks[i], k) for i, k in batch]) for batch in views]}
    timed["window ids, cached"] = timed["window ids, first pass"]
    result = {}
    for name, run in timed.items():
        start = time.process_time()
        run()
        result[name] = 1e6 * (time.process_time() - start) / samples
    return result


def throughput(args: argparse.Namespace) -> None:
    records = load_split(args.split_dir, "train")
    tokenizer = load_clip_processor(args.model).tokenizer
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": args.image_size},
                                            crop_size={"height": args.image_size, "width": args.image_size})
    texts = PairDataset(records, args.data, image_processor, train=True, seed=0)
    window_ids = PairDataset(records, args.data, image_processor, train=True, seed=0, tokenizer=tokenizer)
    collator = PairCollator(tokenizer)
    batches = epoch_batches(len(records), args.batch_size, world=1, rank=0, seed=0, epoch=0)
    batches = (batches * (args.samples // len(records) + 1))[: args.samples // args.batch_size + 1]
    print(f"{len(batches) - 1} batches of {args.batch_size} from {len(records)} training characters, "
          f"{args.image_size} px, one process")
    texts.pixels = ProcessorPixels(image_processor)
    results = {}
    for name, dataset in (("processor float32, texts tokenised (before)", texts),
                          ("uint8, texts tokenised", PairDataset(records, args.data, image_processor, train=True)),
                          ("uint8, window token ids, records first seen", window_ids),
                          ("uint8, window token ids, records cached", window_ids)):
        results[name] = per_worker(dataset, collator, batches)
        print(f"{name}: {results[name][0]:.0f} samples/s wall, {results[name][1]:.0f} samples/s per CPU second")
    for name, micros in text_micros(records, tokenizer, batches[1:]).items():
        print(f"text stage, {name}: {micros:.0f} us per sample (CPU)")
    path = "uint8, window token ids, records first seen" if window_ids.tokens else "uint8, texts tokenised"
    print(f"the figure below is samples per CPU second of the {path} path (one worker with a core to itself)")
    print(f"loader: {results[path][1]:.0f} samples/s per worker at {args.image_size} px")


def overhead(args: argparse.Namespace) -> None:
    cfg = TrainConfig(data=args.data, split_dir=args.split_dir, out="unused", batch_size=args.batch_size,
                      lr=1e-4, workers=args.workers)
    records = load_split(args.split_dir, "train")
    model, processor = load_clip(args.model)
    trainer = Trainer(cfg, Accelerator(cpu=True), model, processor)
    dataset = PairDataset(records, args.data, processor.image_processor, train=True, seed=0,
                          tokenizer=processor.tokenizer)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model", required=True, help="CLIP checkpoint (with --image-size: only its tokenizer)")
    parser.add_argument("--image-size", type=int, help="measure loader throughput per worker at this size")
    parser.add_argument("--samples", type=int, default=1536, help="--image-size: samples loaded per path")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    throughput(args) if args.image_size else overhead(args)


if __name__ == "__main__":
    main()
