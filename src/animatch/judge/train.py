"""`animatch judge-train`: fine-tune the LLaVA judge on both stages with accelerate (CPU, a GPU, many GPUs).

Methods lora / qlora / full and what each trains are `judge.trainable`'s; examples come from `judge.data` (what they
say) and `judge.examples` (their ids: the prompts and tokens of `animatch judge`). AdamW with warmup and a cosine
(or linear, constant) schedule, gradient accumulation, clipping and mixed precision through accelerate; logs go to
metrics.jsonl and TensorBoard. `last/` (the resume state: `training.checkpoint`, safetensors + JSON, written
atomically) is saved every `save_every` steps or each epoch; at the end `adapter/` (PEFT adapter +
`mm_projector.safetensors`, for `animatch judge --adapter`) or, for `full`, `model/` (a whole checkpoint), and with
`--merge` `merged/` (the adapter merged into the base: a plain checkpoint for `from_pretrained`). Under DeepSpeed or
FSDP the optimizer is sharded, so `last/` holds weights, schedule and data position only and a resumed run restarts
the optimizer moments (it says so).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from animatch.config import LENGTH_GROUP_BATCHES, JudgeTrainConfig
from animatch.data.datasets import epoch_batches
from animatch.data.images import ImageLoadError, load_image
from animatch.data.safepath import path_inside
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.judge import prompts
from animatch.judge.examples import ExampleCollator, JudgeExampleDataset, LengthGroupCollator
from animatch.judge.judge import Judge
from animatch.judge.loading import load_judge_model
from animatch.judge.trainable import TrainedWeights, answer_loss, load_trainable, param_groups
from animatch.runs import atomic_dir, atomic_write_text, claim_output, write_run_files
from animatch.training.checkpoint import STATE_DIR, has_resume_state, load_resume_state, save_checkpoint
from animatch.training.runtime import (
    adamw,
    cut_metrics,
    fresh_accelerator,
    honours_deterministic,
    log_metrics,
    optimizer_step,
    resolve_mixed_precision,
)

SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)
OWN_FILE = "own_descriptions.json"
DESCRIBE_BATCH = 32


def _check(cfg: JudgeTrainConfig) -> None:
    if cfg.method == "qlora" and not torch.cuda.is_available():
        raise UserError("--method qlora needs a CUDA GPU (bitsandbytes 4-bit); use --method lora here")
    last = Path(cfg.out) / "last"
    if last.exists() and not cfg.resume:
        raise UserError(f"{cfg.out} already holds a run: pass --resume to continue it, or choose another --out")
    if cfg.resume and not has_resume_state(last):
        raise UserError(f"--resume: no resume state in {last}")


class Trainer:
    """The prepared model, optimizer, schedule and progress of one run, and its checkpoint/validation steps."""

    def __init__(self, cfg: JudgeTrainConfig, acc: Accelerator, model, processor, total_steps: int):
        self.cfg, self.acc, self.processor, self.out = cfg, acc, processor, Path(cfg.out)
        self.sharded = acc.distributed_type in SHARDED
        optimizer = adamw(param_groups(model, cfg), acc.device, lr=cfg.lr)
        self.scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio *
                                       total_steps), num_training_steps=total_steps)
        if acc.state.deepspeed_plugin is not None:  # our loader is not prepared: DeepSpeed needs the size here
            acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "saved_step": None,
                         "validated_step": None, "skipped": {}, "bad_steps": 0}
        self.val_losses: dict[str, float] = {}

    def resume(self) -> None:
        last = self.out / "last"
        if not self.sharded and (last / STATE_DIR / "optimizer.safetensors").is_file():
            self.progress = load_resume_state(last, optimizer=self.optimizer, scheduler=self.scheduler,
                                              scaler=self.acc.scaler)
            return
        state = json.loads((last / STATE_DIR / "state.json").read_text())
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = state["progress"]
        self.acc.print("resume: the optimizer state is sharded (or absent): its moments restart from zero")

    def weights(self) -> TrainedWeights | None:
        """The weights to save (collective under DeepSpeed/FSDP: every process calls it); None off the main."""
        state = self.acc.get_state_dict(self.model) if self.sharded else None
        return TrainedWeights(self.acc.unwrap_model(self.model), state) if self.acc.is_main_process else None

    def save_last(self) -> None:
        self.progress["saved_step"] = self.progress["global_step"]
        weights = self.weights()
        if weights is not None and self.sharded:
            save_checkpoint(self.out / "last", weights, self.processor, extra_json={f"{STATE_DIR}/state.json": {
                "progress": self.progress, "scheduler": self.scheduler.state_dict(), "scaler": None,
                "rng_python": random.getstate()}})
        elif weights is not None:
            save_checkpoint(self.out / "last", weights, self.processor, optimizer=self.optimizer,
                            scheduler=self.scheduler, scaler=self.acc.scaler, progress=self.progress)
        self.acc.wait_for_everyone()

    @torch.no_grad()
    def validate(self, batches: list[dict]) -> None:
        """Mean answer-token loss over the validation batches (the same on every process)."""
        self.progress["validated_step"] = self.progress["global_step"]
        if not batches:
            return
        self.model.eval()
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for batch in batches:
            with self.acc.autocast():
                loss, n = answer_loss(self.model, batch, self.acc.device)
            for key in ("loss", f"loss_{batch['kinds'][0]}"):
                sums[key][0] += loss.item() * n
                sums[key][1] += n
        self.model.train()
        self.val_losses = {key: total / n for key, (total, n) in sums.items()}
        log_metrics(self.acc, self.out / "metrics.jsonl", {"step": self.progress["global_step"],
                                                    **{f"val/{k}": v for k, v in self.val_losses.items()}})

    def step(self, batch: dict) -> float | None:
        """Forward + backward of one micro-batch; on the last of a step also clip + optimizer step.
        Returns the micro-batch loss."""
        with self.acc.accumulate(self.model):
            loss, _ = answer_loss(self.model, batch, self.acc.device)
            self.acc.backward(loss)
            if self.acc.sync_gradients:
                norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm or math.inf)
                if norm is None or self.acc.scaler is not None or torch.isfinite(norm):
                    skipped = optimizer_step(self.acc, self.optimizer)  # fp16: gradients overflowed
                    self.progress["overflow_skipped_steps"] = self.progress.get("overflow_skipped_steps", 0) + skipped
                    self.progress["bad_steps"] = 0
                else:
                    self.progress["bad_steps"] += 1
                    if self.progress["bad_steps"] >= self.cfg.max_bad_steps:
                        raise UserError(f"the gradients were not finite for {self.progress['bad_steps']} steps in a "
                                        "row: lower --lr, try --mixed-precision bf16 or no, or check the data")
                self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().float().item()


def own_descriptions(run: Trainer, records: list[dict]) -> dict[int, str]:
    """The model's own greedy descriptions of `own_descriptions` training characters (seeded draw), written
    to OWN_FILE; a resumed run reads them back. Characters whose image fails to load are left out."""
    cfg, path = run.cfg, run.out / OWN_FILE
    if path.is_file():
        return {int(i): text for i, text in json.loads(path.read_text()).items()}
    chosen = list(range(len(records)))
    if cfg.own_descriptions is not None and cfg.own_descriptions < len(records):
        chosen = sorted(random.Random(cfg.seed).sample(chosen, cfg.own_descriptions))
    model = run.acc.unwrap_model(run.model)
    model.eval()
    judge = Judge.from_model(model, run.processor, max_description_tokens=cfg.description_tokens)
    own: dict[int, str] = {}
    for first in tqdm(range(0, len(chosen), DESCRIBE_BATCH), desc="own descriptions",
                      disable=not run.acc.is_main_process):
        loaded = []
        for i in chosen[first:first + DESCRIBE_BATCH]:
            try:
                loaded.append((i, load_image(path_inside(cfg.data, records[i]["file_name"]))))
            except ImageLoadError:  # unreadable, or leaving the data root (UnsafePath): never opened
                continue
        if loaded:
            with run.acc.autocast():
                own.update(zip([i for i, _ in loaded], judge.describe([image for _, image in loaded])))
    model.train()
    if run.acc.is_main_process:
        atomic_write_text(path, json.dumps(own, ensure_ascii=False))
    run.acc.wait_for_everyone()
    return own


def training_phase(cfg: JudgeTrainConfig, step: int) -> tuple[bool, bool, bool]:
    """(descriptions only, stage-2 contexts with the describer's errors, stage-2 contexts the model's own) at
    optimizer step `step`: descriptions alone until `describe_steps`; exact keyword contexts until
    `context_noise_from`, so that stage 2 first learns to compare at all (with errors from the start it did not
    within the tiny judge's budget, docs/JUDGE.md), then contexts with `context_noise`, so that it learns to judge
    descriptions as imperfect as its own; from `own_context_from` (with `stage2_context: own`, right after
    `describe_steps`), the model's own descriptions, as it reads at inference."""
    own_from = cfg.describe_steps if cfg.stage2_context == "own" else cfg.own_context_from or math.inf
    return (step < cfg.describe_steps, bool(cfg.context_noise) and step >= cfg.context_noise_from,
            step >= own_from)


def _val_batches(cfg: JudgeTrainConfig, processor, records: list[dict]) -> list[dict]:
    if not records or cfg.max_eval_examples < 1:
        return []
    dataset = JudgeExampleDataset(records, cfg.data, processor, cfg, seed=cfg.seed + 1)
    by_kind = defaultdict(list)  # one kind per batch, so the loss of each task can be told apart
    for i in range(min(cfg.max_eval_examples, len(dataset))):
        item = dataset[i]
        by_kind[item["kind"]].append(item)
    collate = ExampleCollator(_pad_id(processor))
    return [collate(items[i:i + cfg.batch_size]) for _, items in sorted(by_kind.items())
            for i in range(0, len(items), cfg.batch_size)]


def _batches_from(loader, skip: int):
    """The batches of the loader's runs of batches (`LengthGroupCollator`), the first `skip` left out (resume)."""
    for run in loader:
        yield from run[skip:]
        skip = 0


def _pad_id(processor) -> int:
    tokenizer = processor.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@honours_deterministic
def run_judge_train(cfg: JudgeTrainConfig) -> int:
    _check(cfg)
    out = claim_output(cfg, "judge-train")
    mixed = resolve_mixed_precision(cfg.mixed_precision)
    acc = fresh_accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.accum_steps,
                            project_dir=str(out), log_with=None if cfg.report_to == "none" else cfg.report_to)
    set_seed(cfg.seed)
    model, processor = load_trainable(cfg, acc.device, mixed)
    try:
        prompts.relevance_tail(processor, "a text")
    except ValueError as e:
        raise UserError(f"{cfg.model}: {e}") from None
    train_records = load_split(cfg.split_dir, "train")
    dataset = JudgeExampleDataset(train_records, cfg.data, processor, cfg, seed=cfg.seed)
    per_step = acc.num_processes * cfg.batch_size * cfg.accum_steps
    if len(dataset) < per_step:
        raise UserError(f"the train split gives {len(dataset)} examples, fewer than one optimizer step needs "
                        f"({per_step} = processes x --batch-size x --accum-steps)")
    total_steps = cfg.max_steps or cfg.epochs * (len(dataset) // per_step)
    run = Trainer(cfg, acc, model, processor, total_steps)
    del model  # the run holds the prepared model; no other reference may keep it alive for --merge
    if cfg.resume:
        run.resume()
    if acc.is_main_process:
        write_run_files(out, cfg)
        cut_metrics(out / "metrics.jsonl", run.progress["global_step"] if cfg.resume else None)
    if cfg.report_to != "none":
        acc.init_trackers("animatch-judge-train", config={k: str(v) for k, v in vars(cfg).items()})
    val_batches = _val_batches(cfg, processor, load_split(cfg.split_dir, "val"))
    per_run = LENGTH_GROUP_BATCHES if cfg.group_by_length else 1
    collate = LengthGroupCollator(ExampleCollator(_pad_id(processor)), cfg.batch_size, cfg.group_by_kind)
    progress, kinds, own = run.progress, {}, None
    bar = tqdm(total=total_steps, initial=progress["global_step"], desc="judge-train",
               disable=not acc.is_main_process)
    started, examples, window = time.perf_counter(), 0, []
    while progress["global_step"] < total_steps:
        describing, noisy, owned = phase = training_phase(cfg, progress["global_step"])
        if owned and own is None:
            own = own_descriptions(run, train_records)
        dataset.set_epoch(progress["epoch"], own if owned else None, describing, noisy)
        groups = [slot["kind"] == "description" for slot in dataset.plan.slots] if cfg.group_by_kind else None
        batches = epoch_batches(len(dataset), cfg.batch_size, world=acc.num_processes, rank=acc.process_index,
                                seed=cfg.seed, epoch=progress["epoch"], groups=groups)
        batches = batches[:len(batches) // cfg.accum_steps * cfg.accum_steps]
        done = progress["step_in_epoch"] * cfg.accum_steps
        runs = [sum(batches[i:i + per_run], []) for i in range(done - done % per_run, len(batches), per_run)]
        # Its own generator: iterating a DataLoader draws a seed, which would shift the global RNG (dropout)
        # of a resumed run against an uninterrupted one.
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=runs, collate_fn=collate, num_workers=cfg.workers,
                                             generator=torch.Generator().manual_seed(cfg.seed))
        for batch in _batches_from(loader, skip=done % per_run):
            for _, reason in batch["skipped"]:
                progress["skipped"][reason] = progress["skipped"].get(reason, 0) + 1
            for kind in batch["kinds"]:
                kinds[kind] = kinds.get(kind, 0) + 1
            window.append(run.step(batch))
            examples += batch["size"] * acc.num_processes
            if not acc.sync_gradients:
                continue
            run.scheduler.step()
            progress["global_step"] += 1
            progress["step_in_epoch"] += 1
            step = progress["global_step"]
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]:.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
            if step % cfg.log_every == 0 or step == total_steps:
                loss = acc.reduce(torch.tensor(sum(window) / len(window), device=acc.device), "mean").item()
                log_metrics(acc, out / "metrics.jsonl", {"step": step, "epoch": progress["epoch"], "loss": loss,
                                                  "lr": run.scheduler.get_last_lr()[0],
                                                  "overflow_skipped_steps": progress.get("overflow_skipped_steps", 0),
                                                  "examples_per_s": examples / (time.perf_counter() - started)})
                window = []
            if cfg.eval_every and step % cfg.eval_every == 0:
                run.validate(val_batches)
            if cfg.save_every and step % cfg.save_every == 0:
                run.save_last()
            if step >= total_steps:
                break
            if training_phase(cfg, step) != phase:  # a new phase draws its own examples: a new epoch
                progress["epoch"] += 1
                progress["step_in_epoch"] = 0
                break
        else:
            progress["epoch"] += 1
            progress["step_in_epoch"] = 0
            if not cfg.eval_every:
                run.validate(val_batches)
            if not cfg.save_every:
                run.save_last()
    bar.close()
    if progress["validated_step"] != progress["global_step"]:
        run.validate(val_batches)
    if progress["saved_step"] != progress["global_step"]:
        run.save_last()
    _export(run, kinds, time.perf_counter() - started, examples)
    acc.end_training()
    return 0


def _export(run: Trainer, kinds: dict, seconds: float, examples: int) -> None:
    cfg, out = run.cfg, run.out
    weights = run.weights()
    name = "model" if cfg.method == "full" else "adapter"
    if weights is None:
        return
    save_checkpoint(out / name, weights, run.processor)
    trainable = sum(p.numel() for p in weights.model.parameters() if p.requires_grad)
    if cfg.merge:  # free the training copy first: merging loads the base again
        weights = run.model = run.optimizer = None
        run.acc.free_memory()
        merged, processor = load_judge_model(cfg.model, adapter=str(out / "adapter"))
        with atomic_dir(out / "merged") as tmp:
            merged.save_pretrained(tmp)
            processor.save_pretrained(tmp)
    progress = run.progress
    summary = {"method": cfg.method, "steps": progress["global_step"], "epochs_completed": progress["epoch"],
               "seconds": round(seconds, 1), "examples_per_s": examples / seconds if seconds else None,
               "trainable_parameters": trainable, "val_losses": run.val_losses, "examples_seen": kinds,
               "skipped_examples": progress["skipped"], "output": str(out / name),
               "overflow_skipped_steps": progress.get("overflow_skipped_steps", 0),
               "merged": str(out / "merged") if cfg.merge else None}
    skipped = ", ".join(f"{n} {reason}" for reason, n in progress["skipped"].items()) or "none"
    val = ", ".join(f"{k.removeprefix('loss_') if k != 'loss' else 'all'} {v:.4f}" for k, v in run.val_losses.items())
    use = f"animatch judge --model {cfg.model} --adapter {out / name}" if name == "adapter" else \
        f"animatch judge --model {out / name}"
    report = (f"# animatch judge-train\n\nModel `{cfg.model}`, method {cfg.method}, {progress['global_step']} steps "
              f"({seconds:.0f} s, {summary['examples_per_s'] or 0:.1f} examples/s), "
              f"{trainable / 1e6:.2f}M trainable parameters.\n\n"
              f"- examples seen: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}\n"
              f"- final validation loss (answer tokens): {val or 'n/a'}\n- skipped examples: {skipped}\n"
              f"- output: `{out / name}` (use: `{use}`)" + (f"; merged checkpoint `{out / 'merged'}`" if cfg.merge
                                                           else "") + "\n- resume state: `last/`\n")
    write_run_files(out, metrics=summary, report=report)
    print(f"judge-train: {progress['global_step']} steps, validation loss {val or 'n/a'}, skipped examples: "
          f"{skipped} -> {out / name}")
