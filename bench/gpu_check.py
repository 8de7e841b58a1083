"""The benchmarks of `bench/gpu_check.sh`: one table of what a GPU does with animatch, in a few minutes.

Usage: python bench/gpu_check.py [--out DIR] [--dry-run]
Rows: ViT-B/32-shaped `train` (bf16, fp16, bf16 --deterministic) samples/s against the same model's
compute-only step on random tensors already on the GPU (their ratio is the input pipeline's efficiency), the
time lost at the start and at each epoch boundary, the run-to-run drift of the weights without
--deterministic; `embed` and `match` images/s on 6,000 images; the llava-1.5-7b-shaped judge pairs/s at batch
1, 8 and 32 with and without prefix reuse, and with --static-cache (compiled decode) at batch 32; LoRA
`judge-train` steps/s at that shape. Every model has random weights built from a config in code (no download).
--dry-run runs every row with tiny shapes on the CPU in seconds (the 7B shape is then only built on the meta
device, to check its config); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# bench/common.py and bench/judge.py (scripts run as bench/NAME.py)
from common import run, vit_b32_shaped
from judge import TEXTS, compare, end_descriptions_early, real_shape_model

from animatch.clip import train as clip_train
from animatch.clip.embed import embed_images
from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.images import list_image_files
from animatch.data.schema import load_split
from animatch.judge import train as judge_train
from animatch.judge import trainable
from animatch.judge.judge import Judge
from animatch.judge.loading import load_judge_model
from animatch.models.hub import load_clip
from animatch.models.tiny import build_tiny
from animatch.runs import markdown_table
from animatch.training.runtime import fresh_accelerator

# Shapes and sizes of the real check and of the dry run.
FULL = {"characters": 6000, "image_size": 128, "val_fraction": 0.02, "batch": 256, "workers": 12, "epochs": 2,
        "extra_steps": 4, "compute_steps": 8, "judge_batches": (1, 8, 32), "judge_static_batches": (32,),
        "judge_pairs": 4, "description_tokens": 32, "analysis_tokens": 16, "judge_train_steps": 8}
DRY = {"characters": 24, "image_size": 64, "val_fraction": 0.25, "batch": 4, "workers": 0, "epochs": 2,
       "extra_steps": 1, "compute_steps": 2, "judge_batches": (1, 2), "judge_static_batches": (2,),
       "judge_pairs": 2, "description_tokens": 3, "analysis_tokens": 3, "judge_train_steps": 3}


class StepClock:
    """Records when each optimizer step of a training loop ends (the steps synchronise: they read the loss)."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.original, self.ends = owner, name, getattr(owner, name), []

    def __enter__(self):
        def timed(*args, **kwargs):
            result = self.original(*args, **kwargs)
            self.ends.append(time.perf_counter())
            return result
        setattr(self.owner, self.name, timed)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


def compute_only_samples_per_s(model_dir: Path, precision: str, batch: int, steps: int) -> float:
    """Trainer steps on random tensors already on the device: the model's speed with no input pipeline."""
    acc = fresh_accelerator(mixed_precision=precision)
    model, processor = load_clip(str(model_dir), device=acc.device)
    trainer = Trainer(TrainConfig(data=".", split_dir=".", out="unused"), acc, model.train(), processor)
    size = model.config.vision_config.image_size
    micro = [{"pixel_values": torch.randn(batch, 3, size, size, device=acc.device),
              "input_ids": torch.randint(0, 8000, (batch, 77), device=acc.device),
              "attention_mask": torch.ones(batch, 77, dtype=torch.long, device=acc.device), "size": batch}]
    for _ in range(2):
        trainer.step(micro)
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(micro, i)
    return batch * steps / (time.perf_counter() - start)


def train_row(s: dict, data: Path, prepared: Path, model_dir: Path, out: Path, precision: str,
              deterministic: bool = False) -> dict:
    steps_per_epoch = len(load_split(prepared, "train")) // s["batch"]
    total = s["epochs"] * steps_per_epoch + s["extra_steps"]
    with StepClock(clip_train.Trainer, "step") as clock:
        run("train", "--data", data, "--split-dir", prepared, "--model", model_dir, "--out", out,
            "--batch-size", s["batch"], "--max-steps", total, "--eval-every", total, "--max-eval-items", 64,
            "--workers", s["workers"], "--mixed-precision", precision, "--report-to", "none", "--log-every", 1000,
            *(["--deterministic"] if deterministic else []))
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    boundaries = {e * steps_per_epoch - 1 for e in range(1, s["epochs"] + 1)}  # gap index after an epoch's last
    steady = statistics.median([g for i, g in enumerate(gaps[2:], 2) if i not in boundaries])
    pipeline = s["batch"] / steady
    compute = compute_only_samples_per_s(model_dir, precision, s["batch"], s["compute_steps"])
    shape = "clip-tiny" if s is DRY else "ViT-B/32 shape"
    return {"what": f"train {shape}, --mixed-precision {precision}" + (" --deterministic" if deterministic else ""),
            "figure": f"{pipeline:.0f} samples/s", "against": f"compute-only {compute:.0f} samples/s",
            "ratio": f"{pipeline / compute:.2f}",
            "note": f"start lost {clock.ends[0] - clock.started - steady:.1f} s; epoch boundary lost "
                    + ", ".join(f"{gaps[b] - steady:.2f} s" for b in sorted(boundaries) if b < len(gaps))}


def drift(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = (load_file(str(p / "last" / "model.safetensors")) for p in (a, b))
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


def clip_rows(s: dict, out: Path, dry: bool) -> list[dict]:
    data, prepared = out / "data", out / "prepared"
    run("synth", "--out", data, "--n", s["characters"], "--image-size", s["image_size"], "--characters-per-title", 3)
    run("prepare", "--data", data, "--out", prepared, "--no-check-images", "--val-fraction", s["val_fraction"],
        "--test-fraction", s["val_fraction"])
    model_dir = build_tiny("clip-tiny", out / "clip") if dry else vit_b32_shaped(out / "clip")
    precisions = ["no"] if dry else ["bf16", "fp16"]
    rows = [train_row(s, data, prepared, model_dir, out / f"train_{p}", p) for p in precisions]
    p = precisions[0]
    rows.append(train_row(s, data, prepared, model_dir, out / f"train_{p}_again", p))
    rows.append(train_row(s, data, prepared, model_dir, out / f"train_{p}_det", p, deterministic=True))
    rows.append({"what": f"drift without --deterministic (--mixed-precision {p}, two identical runs)",
                 "figure": f"max abs weight diff {drift(out / f'train_{p}', out / f'train_{p}_again'):.2e}",
                 "against": "", "ratio": "", "note": "0 under --deterministic"})

    images = list_image_files(data / "images")
    model, processor = load_clip(str(model_dir))
    embed_images(model, processor, images[:s["batch"]], batch_size=s["batch"], workers=s["workers"], progress=False)
    start = time.perf_counter()
    embed_images(model, processor, images, batch_size=s["batch"], workers=s["workers"], progress=False)
    embed_s = time.perf_counter() - start
    texts = out / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    match_s = run("match", "--images", data / "images", "--model", model_dir, "--texts", texts, "--out",
                  out / "match", "--no-cache", "--workers", s["workers"], "--batch-size", s["batch"])
    pages = len(json.loads((out / "match" / "summary.json").read_text())["heatmaps"])
    rows += [{"what": f"embed {len(images)} images ({model.device})", "figure": f"{len(images) / embed_s:.0f} images/s",
              "against": "", "ratio": "", "note": "warm model, decoding workers included"},
             {"what": f"match {len(images)} images", "figure": f"{len(images) / match_s:.0f} images/s",
              "against": "", "ratio": "", "note": f"end to end: load, embed, score, write, {pages} heatmap pages"}]
    return rows


def judge_rows(s: dict, out: Path, dry: bool) -> list[dict]:
    clip = build_tiny("clip-tiny", out / "clip-tiny")
    tiny = build_tiny("llava-tiny", out / "llava-tiny", vision_tower=str(clip))
    settings = {"temperature": 0.0, "retry_temperatures": (), "max_description_tokens": s["description_tokens"],
                "max_analysis_tokens": s["analysis_tokens"]}
    if dry:  # the 7B config is checked on the meta device, never materialised off a GPU
        billions = real_shape_model(load_judge_model(str(tiny), device="cpu")[1], "meta", torch.float16,
                                    None).num_parameters() / 1e9
        judge, label = Judge(str(tiny), device="cpu", **settings), f"llava-tiny (7B shape: {billions:.1f}B on meta)"
    else:
        processor = load_judge_model(str(tiny), device="cpu")[1]
        judge = Judge.from_model(real_shape_model(processor, "cuda", torch.float16, None), processor, **settings)
        label = "llava-1.5-7b shape, float16"
    from PIL import Image

    image = Image.new("RGB", (96, 144), (200, 120, 160))
    end_descriptions_early(judge, image)  # every path decodes its whole budget: the same work
    rows = []
    for batch in s["judge_batches"]:
        pairs = [(image, TEXTS[i % len(TEXTS)]) for i in range(max(batch, s["judge_pairs"]))]
        row = compare(judge, pairs, batch, static=batch in s["judge_static_batches"])
        note = f"{s['description_tokens']} + {s['analysis_tokens']} tokens, greedy; stage 2 alone " \
               f"{row['stage-2 speed-up']:.2f}x; same output: {row['same as no-reuse']}"
        rows.append({"what": f"judge {label}, batch {batch}", "figure": f"{row['reuse pairs/s']:.2f} pairs/s",
                     "against": f"no prefix reuse {row['no-reuse pairs/s']:.2f} pairs/s",
                     "ratio": f"{row['speed-up']:.2f}", "note": note})
        if "static pairs/s" in row:
            rows.append({"what": f"judge {label}, batch {batch}, --static-cache (compiled decode)",
                         "figure": f"{row['static pairs/s']:.2f} pairs/s",
                         "against": f"dynamic cache {row['reuse pairs/s']:.2f} pairs/s",
                         "ratio": f"{row['static pairs/s'] / row['reuse pairs/s']:.2f}",
                         "note": f"first batch (compile) {row['static first batch s']:.0f} s; same output: "
                                 f"{row['static same']}"})
    del judge
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    rows.append(judge_train_row(s, out, tiny, dry))
    return rows


def judge_train_row(s: dict, out: Path, tiny: Path, dry: bool) -> dict:
    """LoRA judge-train steps/s; on the GPU at the 7B shape, built in memory (14 GB never goes through disk)."""
    data, prepared = out / "data", out / "prepared"
    original = trainable.load_llava
    if not dry:
        def load_llava(source, **kwargs):
            _, processor = original(str(tiny), device="cpu")
            return real_shape_model(processor, "cuda", kwargs["dtype"], None), processor
        trainable.load_llava = load_llava
    try:
        with StepClock(judge_train.Trainer, "step") as clock:
            run("judge-train", "--data", data, "--split-dir", prepared, "--model", tiny, "--out", out / "judge_train",
                "--batch-size", 4, "--accum-steps", 1, "--max-steps", s["judge_train_steps"], "--workers",
                s["workers"], "--report-to", "none", "--max-eval-examples", 4, "--description-tokens", 64,
                "--candidate-tokens", 64)
    finally:
        trainable.load_llava = original
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:])][1:]
    return {"what": "judge-train LoRA r=128, batch 4" + (", llava-tiny" if dry else ", 7B shape, bf16"),
            "figure": f"{1 / statistics.median(gaps):.2f} steps/s", "against": "", "ratio": "",
            "note": f"start lost {clock.ends[0] - clock.started:.1f} s (model build, data, first step)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="work dir (default: a temporary one, removed)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the script only")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py: no CUDA GPU here; use --dry-run to check the script on the CPU")
    s = DRY if args.dry_run else FULL
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_"))
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    rows = clip_rows(s, out, args.dry_run) + judge_rows(s, out, args.dry_run)
    device = "CPU dry run (figures mean nothing)" if args.dry_run else torch.cuda.get_device_name()
    print(f"\n## gpu_check: {device}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(rows))
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
