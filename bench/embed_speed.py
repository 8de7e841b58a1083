"""Embedding speed of `match`/`index`/`audit` (`embed_images`): images per second, files to embeddings.

Usage: .venv/bin/python bench/embed_speed.py [--out /tmp/bench_embed] [--n 5000] [--image-size 256]
       [--model MODEL] [--batch-size 256] [--workers 8] [--device cuda]
Draws --n synthetic characters (--image-size px wide, 1.5x as tall) and, without --model, builds a randomly
initialised ViT-B/32-shaped CLIP (bench/common.py). Embeds every image twice (no cache: the first pass warms
the page cache and the kernels) and prints the second pass's rate; the last line is that figure. Goal on one
GPU (ViT-B/32, >= 5,000 images): >= 2,500 images/s.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import run, vit_b32_shaped

from animatch.clip.embed import embed_images
from animatch.data.images import list_image_files
from animatch.models.hub import load_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_embed")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--model", help="CLIP checkpoint (default: a ViT-B/32-shaped one with random weights)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path(args.out)
    images = out / f"synth_{args.n}_{args.image_size}"
    if not (images / "metadata.jsonl").is_file():
        run("synth", "--out", images, "--n", args.n, "--image-size", args.image_size, "--workers", args.workers)
    model, processor = load_clip(args.model or str(vit_b32_shaped(out / "vit-b32")), device=args.device)
    paths = list_image_files(images)
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        emb, ok, _ = embed_images(model, processor, paths, batch_size=args.batch_size, workers=args.workers,
                                  progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(len(ok) / (time.perf_counter() - start))
    print(f"{len(paths)} images of {args.image_size} px wide, batch {args.batch_size}, {args.workers} workers, "
          f"{args.device}; first pass {rates[0]:.0f} images/s")
    print(f"embed: {rates[1]:.0f} images/s")


if __name__ == "__main__":
    main()
