"""`animatch train`: contrastive fine-tuning of CLIP with accelerate (CPU, one GPU, many GPUs or nodes).

The recipe is the reference project's (AdamW with decoupled weight decay, cosine to `eta_min`, clipping
at 1.0, mixed precision; `--lr-schedule wsd` holds the peak rate and decays linearly at the end instead,
which suits short from-scratch runs) plus what it lacked: global negatives across processes (`ClipLoss`), an exact
loss under gradient accumulation (features of all micro-batches are cached without gradients, then each
micro-batch is recomputed with gradients against the cached rest, as OpenCLIP does), chunk-window sampling
for long appearances, optional patch dropout (`clip.patch_dropout`) and length-bucketed text towers
(`clip.towers`), validation recall with a `best/` checkpoint, and exact resume from `last/`.

The loop does not stall at epoch boundaries: one DataLoader serves the whole run (`RunBatches`), so its
workers live across epochs and prefetch the next epoch's batches while validation runs, and checkpoints are
copied off the device and written on a background thread (`training.checkpoint.BackgroundWriter`). The loader's
workers start before the model loads.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import CLIPConfig, get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

from animatch.clip.losses import ClipLoss
from animatch.clip.measures import validation_metrics
from animatch.clip.patch_dropout import PatchDropout
from animatch.clip.towers import ClipForward
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, RunBatches
from animatch.data.pixels import PixelPipeline
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.models.hub import load_clip, load_clip_processor
from animatch.runs import claim_output, write_run_files
from animatch.training import runtime
from animatch.training.checkpoint import (
    BackgroundWriter,
    has_resume_state,
    load_resume_state,
    read_progress,
    take_snapshot,
    write_snapshot,
)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: a larger temperature scale destabilises training


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "norm" in name or name.endswith("logit_scale")
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lock_towers(model, cfg: TrainConfig) -> None:
    towers = ([model.vision_model, model.visual_projection] if cfg.lock_image else []) + \
             ([model.text_model, model.text_projection] if cfg.lock_text else [])
    for module in towers:
        module.requires_grad_(False)


class Trainer:
    """Holds the prepared model/optimizer and runs optimizer steps; `run_train` drives it."""

    def __init__(self, cfg: TrainConfig, acc: Accelerator, model, processor):
        self.cfg, self.acc, self.processor = cfg, acc, processor
        self.loss_fn = ClipLoss(gather=True, gather_with_grad=cfg.gather_with_grad)
        self.patch_dropout = PatchDropout(model, cfg.patch_dropout, cfg.seed)
        optimizer = runtime.adamw(_param_groups(model, cfg.weight_decay), acc.device, lr=cfg.lr, betas=(0.9, 0.98),
                                  eps=cfg.adam_eps)
        pixels = PixelPipeline.from_processor(processor.image_processor).normaliser()
        forward = ClipForward(model, cfg.text_buckets, pixels)
        if cfg.compile:  # in place: parameter names, checkpoints and `raw_model` stay those of the eager module
            forward.compile()
        self.model, self.optimizer = acc.prepare(forward, optimizer)
        self.bad_steps = 0
        self.overflow_steps = 0  # fp16: steps the GradScaler skipped (inf/nan gradients), logged with the metrics

    @property
    def raw_model(self):
        return self.acc.unwrap_model(self.model).clip

    def _features(self, batch: dict, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.patch_dropout.reseed(step, micro, self.acc.process_index)
        with self.acc.autocast():
            return self.model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])  # [B, D] each

    def step(self, micro_batches: list[dict], step: int = 0) -> float | None:
        """Optimizer step number `step` over the micro-batches; returns the loss, or None if it was skipped."""
        logit_scale = self.raw_model.logit_scale
        if len(micro_batches) == 1:
            loss = self.loss_fn(*self._features(micro_batches[0], step, 0), logit_scale)
            self.acc.backward(loss)
        else:
            with torch.no_grad():
                cached = [self._features(mb, step, j) for j, mb in enumerate(micro_batches)]
            for j, mb in enumerate(micro_batches):
                sync = nullcontext() if j == len(micro_batches) - 1 else self.acc.no_sync(self.model)
                with sync:
                    images, texts = map(list, zip(*cached))
                    images[j], texts[j] = self._features(mb, step, j)
                    loss = self.loss_fn(torch.cat(images), torch.cat(texts), logit_scale)
                    self.acc.backward(loss)
        finite = self.acc.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item() == 1.0
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            if self.bad_steps >= self.cfg.max_bad_steps:
                raise UserError(f"the loss was not finite for {self.bad_steps} steps in a row: lower --lr, "
                                "try --mixed-precision bf16 or no, or check the data")
            return None
        self.bad_steps = 0
        if self.cfg.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        # fp16: the scaler lowers its scale and goes on
        self.overflow_steps += runtime.optimizer_step(self.acc, self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return loss.item()


def _loader(dataset, batches: RunBatches, collator, cfg: TrainConfig, acc: Accelerator):
    """The run's one DataLoader; its own generator keeps worker seeding off the global RNG (resume stays exact)."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collator,
                                       num_workers=cfg.workers, pin_memory=acc.device.type == "cuda",
                                       prefetch_factor=cfg.prefetch_batches if cfg.workers else None,
                                       generator=torch.Generator().manual_seed(cfg.seed))


@runtime.honours_deterministic
def run_train(cfg: TrainConfig) -> int:
    out = claim_output(cfg, "train")
    if (out / "last").exists() and not cfg.resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if cfg.resume and not has_resume_state(out / "last"):
        raise UserError(f"--resume: no resume state in {out / 'last'}")
    acc = runtime.fresh_accelerator(mixed_precision=runtime.resolve_mixed_precision(cfg.mixed_precision),
                                    log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=str(out))
    set_seed(cfg.seed)
    source = str(out / "last") if cfg.resume else cfg.model
    processor = load_clip_processor(source)

    train_records, val_records = load_split(cfg.split_dir, "train"), load_split(cfg.split_dir, "val")
    if cfg.max_eval_items:
        val_records = val_records[: cfg.max_eval_items]
    if not val_records:
        raise UserError(f"the val split in {cfg.split_dir} is empty: validation picks the best checkpoint")
    per_step = acc.num_processes * cfg.batch_size * cfg.accum_steps
    if len(train_records) < per_step:
        raise UserError(f"the train split has {len(train_records)} characters, fewer than one optimizer step "
                        f"needs ({per_step} = processes x --batch-size x --accum-steps)")
    steps_per_epoch = len(train_records) // per_step
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "validated_step": None, "best_metric": None,
                "skipped": {}}
    if cfg.resume:
        progress = read_progress(out / "last")

    # The loader's workers start decoding the first batches now, while the model loads.
    max_length = CLIPConfig.from_pretrained(source).text_config.max_position_embeddings
    dataset = PairDataset(train_records, cfg.data, processor.image_processor, train=True, seed=cfg.seed,
                          crop_scale=cfg.crop_scale, hflip=cfg.hflip, text_sampling=cfg.text_sampling,
                          tokenizer=processor.tokenizer, max_length=max_length)
    collator = PairCollator(processor.tokenizer, max_length)
    batches = RunBatches(len(train_records), cfg.batch_size, world=acc.num_processes, rank=acc.process_index,
                         seed=cfg.seed, epoch=progress["epoch"], start=progress["step_in_epoch"] * cfg.accum_steps,
                         last_epoch=(total_steps - 1) // steps_per_epoch)
    stream = iter(_loader(dataset, batches, collator, cfg, acc))

    model, processor = load_clip(source, attn_implementation=cfg.attn_implementation)
    if cfg.logit_scale_init is not None and not cfg.resume:
        model.logit_scale.data.fill_(math.log(cfg.logit_scale_init))
    _lock_towers(model, cfg)
    model.train()

    trainer = Trainer(cfg, acc, model, processor)
    if cfg.lr_schedule == "wsd":
        scheduler = get_wsd_schedule(trainer.optimizer, cfg.warmup_steps, round(cfg.decay_fraction * total_steps),
                                     total_steps, decay_type="linear", min_lr_ratio=cfg.eta_min / cfg.lr)
    else:
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(trainer.optimizer, cfg.warmup_steps, total_steps,
                                                                min_lr=cfg.eta_min)
    if cfg.resume:
        progress = load_resume_state(out / "last", optimizer=trainer.optimizer, scheduler=scheduler,
                                     scaler=acc.scaler)
    if acc.is_main_process:
        write_run_files(out, cfg)
        runtime.cut_metrics(out / "metrics.jsonl", progress["global_step"] if cfg.resume else None)
    if cfg.report_to != "none":
        acc.init_trackers("animatch-train", config={k: str(v) for k, v in vars(cfg).items()})

    metrics_file = out / "metrics.jsonl"
    bar = tqdm(total=total_steps, initial=progress["global_step"], desc="train", disable=not acc.is_main_process)
    started, samples = time.perf_counter(), 0
    last_val: dict = {}
    writer = BackgroundWriter()

    def save(is_best: bool, val: dict) -> None:
        """Copy the checkpoint off the device now; write `best/` and `last/` while the next steps run."""
        if not acc.is_main_process:
            return
        model = trainer.raw_model
        snapshot = take_snapshot(model, optimizer=trainer.optimizer, scheduler=scheduler, scaler=acc.scaler,
                                 progress=progress)

        def write() -> None:
            if is_best:
                write_snapshot(out / "best", model, processor, replace(snapshot, resume=None),
                               extra_json={"val_metrics.json": val})
            write_snapshot(out / "last", model, processor, snapshot)
        writer.submit(write)

    def validate() -> None:
        nonlocal last_val
        progress["validated_step"] = progress["global_step"]
        if acc.is_main_process:
            last_val = validation_metrics(trainer.raw_model, processor, val_records, cfg.data,
                                          batch_size=cfg.eval_batch_size)
            best = progress["best_metric"]
            is_best = best is None or last_val["mean_recall"] > best
            if is_best:
                progress["best_metric"] = last_val["mean_recall"]
            val_row = {f"val/{k}": v for k, v in last_val.items()}
            runtime.log_metrics(acc, metrics_file, {"step": progress["global_step"], **val_row})
            save(is_best, last_val)
            trainer.raw_model.train()
        acc.wait_for_everyone()

    while progress["global_step"] < total_steps:
        start = progress["step_in_epoch"] * cfg.accum_steps
        micro: list[dict] = []
        for batch in itertools.islice(stream, batches.per_epoch - start):
            for _file_name, reason in batch["skipped"]:
                progress["skipped"][reason] = progress["skipped"].get(reason, 0) + 1
            # from pinned memory, the copy overlaps the step before it on a GPU
            micro.append({k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v
                          for k, v in batch.items()})
            if len(micro) < cfg.accum_steps:
                continue
            sizes = acc.gather(torch.tensor([min(mb["size"] for mb in micro)], device=acc.device))
            loss = trainer.step(micro, progress["global_step"]) if sizes.min().item() > 0 else None
            samples += sum(mb["size"] for mb in micro) * acc.num_processes
            micro = []
            scheduler.step()
            progress["global_step"] += 1
            progress["step_in_epoch"] += 1
            bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                samples_s=f"{samples / (time.perf_counter() - started):.0f}")
            if progress["global_step"] % cfg.log_every == 0 or progress["global_step"] == total_steps:
                runtime.log_metrics(acc, metrics_file, {
                    "step": progress["global_step"], "epoch": progress["epoch"], "loss": loss,
                    "lr": scheduler.get_last_lr()[0], "logit_scale": trainer.raw_model.logit_scale.exp().item(),
                    "samples_per_s": samples / (time.perf_counter() - started),
                    "overflow_skipped_steps": trainer.overflow_steps})
            if cfg.eval_every and progress["global_step"] % cfg.eval_every == 0:
                validate()
            if progress["global_step"] >= total_steps:
                break
        else:
            progress["epoch"] += 1
            progress["step_in_epoch"] = 0
            if not cfg.eval_every:
                validate()
            continue
        break
    del stream  # the loader's workers are done: free them before the last validation
    if progress["validated_step"] != progress["global_step"]:
        validate()
    bar.close()
    writer.wait()
    acc.end_training()
    if acc.is_main_process:
        progress["overflow_skipped_steps"] = trainer.overflow_steps
        _finish(cfg, out, progress, last_val, time.perf_counter() - started, samples)
    return 0


def _finish(cfg: TrainConfig, out: Path, progress: dict, val: dict, seconds: float, samples: int) -> None:
    summary = {"steps": progress["global_step"], "epochs_completed": progress["epoch"], "seconds": round(seconds, 1),
               "samples_per_s": samples / seconds if seconds else None, "best_val_mean_recall": progress["best_metric"],
               "last_val": val, "skipped_samples": progress["skipped"],
               "overflow_skipped_steps": progress["overflow_skipped_steps"]}
    skipped = ", ".join(f"{n} {reason}" for reason, n in progress["skipped"].items()) or "none"
    report = (f"# animatch train\n\nModel `{cfg.model}` trained for {progress['global_step']} steps "
              f"({seconds:.0f} s, {summary['samples_per_s'] or 0:.1f} samples/s).\n\n"
              f"- best validation mean recall: {progress['best_metric']:.4f} (checkpoint `best/`)\n"
              f"- last validation: " + ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
              + f"\n- skipped samples: {skipped}\n- fp16 steps skipped on a gradient overflow (GradScaler): "
              f"{progress['overflow_skipped_steps']}\n- resume state: `last/`\n")
    write_run_files(out, metrics=summary, report=report)
    print(f"train: {progress['global_step']} steps, best val mean recall {progress['best_metric']:.4f}, "
          f"skipped samples: {skipped}; run dir {out}")
