"""The CUDA paths: bf16 and fp16 (GradScaler) training steps, a loss-scale overflow skipped and logged, pinned
host memory in the training loader, 4-bit loading (when bitsandbytes is installed), flash-attention (when
flash-attn is installed) and bit-identical `--deterministic` runs. Each `cuda` test is skipped, with its
reason, on a machine without a GPU (tests/conftest.py); `bench/gpu_check.sh` runs them on one. On the CPU:
the detection of a real skipped step (a CPU GradScaler and an infinite gradient), and the bookkeeping of
`train` and `judge-train` with the scaler's verdict simulated."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate.utils import GradScalerKwargs
from safetensors.torch import load_file

from animatch.cli import main
from animatch.clip import train as clip_train
from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, epoch_batches
from animatch.data.schema import load_split
from animatch.judge import train as judge_train
from animatch.models.hub import load_clip, load_llava
from animatch.training import runtime
from animatch.training.runtime import fresh_accelerator

FAST = ["--batch-size", "8", "--lr", "5e-4", "--workers", "0", "--report-to", "none", "--log-every", "1"]
cuda = pytest.mark.cuda


def _train(synth_root, prepared_dir, clip_tiny_dir, out, *extra) -> int:
    return main(["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
                 "--out", str(out), *FAST, *map(str, extra)])


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train(synth_root, prepared_dir, clip_tiny_dir, tmp_path, precision):
    out = tmp_path / "run"
    assert _train(synth_root, prepared_dir, clip_tiny_dir, out, "--mixed-precision", precision, "--max-steps", 6) == 0
    losses = [r["loss"] for r in _rows(out) if "loss" in r]
    assert len(losses) == 6 and all(loss is not None and loss == loss for loss in losses)
    scaler = json.loads((out / "last" / "trainer_state" / "state.json").read_text())["scaler"]
    assert (scaler is not None) == (precision == "fp16")  # fp16 needs a GradScaler (saved for resume), bf16 not
    assert all(v.dtype == torch.float32 for v in load_file(str(out / "last" / "model.safetensors")).values())


def _micro_batches(records, root, processor, device) -> list[dict]:
    dataset = PairDataset(records, root, processor.image_processor, train=True, seed=3)
    (order,) = epoch_batches(len(records), 8, world=1, rank=0, seed=3, epoch=0)[:1]
    batch = PairCollator(processor.tokenizer)([dataset[i] for i in order])
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}]


@cuda
def test_a_loss_scale_overflow_is_skipped_and_counted(synth_root, prepared_dir, clip_tiny_dir):
    """A loss scale of 2^60 overflows fp16 gradients: the step leaves the weights alone, is counted, and the
    scaler lowers its scale for the next one."""
    acc = fresh_accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=2.0 ** 60)])
    model, processor = load_clip(str(clip_tiny_dir), device=acc.device)
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", lr=1e-3)
    trainer = Trainer(cfg, acc, model, processor)
    before = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.step(_micro_batches(load_split(prepared_dir, "train"), synth_root, processor, acc.device))
    assert trainer.overflow_steps == 1 and acc.scaler.get_scale() < 2.0 ** 60
    after = trainer.raw_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "logit_scale")


def test_an_overflowed_step_of_the_fused_optimizer_is_detected_on_the_cpu(synth_root, prepared_dir, clip_tiny_dir):
    """The same skip on the CPU: a CPU GradScaler and an infinite gradient. The fused AdamW is always called by
    the scaler (its kernel skips the update), so the skip must be read from the lowered scale."""
    acc = fresh_accelerator(cpu=True, mixed_precision="no")
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", lr=1e-3)
    trainer = Trainer(cfg, acc, model, processor)
    micro = _micro_batches(load_split(prepared_dir, "train"), synth_root, processor, "cpu")
    before = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
    handle = trainer.raw_model.visual_projection.weight.register_hook(lambda grad: grad * float("inf"))
    trainer.step(micro)
    handle.remove()
    assert trainer.overflow_steps == 1 and acc.scaler.get_scale() == 2.0 ** 15
    assert all(torch.equal(before[k], v) for k, v in trainer.raw_model.state_dict().items())
    trainer.step(micro)  # finite gradients: a real step
    assert trainer.overflow_steps == 1 and not torch.equal(before["visual_projection.weight"],
                                                           trainer.raw_model.visual_projection.weight)


def test_overflow_skipped_steps_reach_the_metrics_and_report(synth_root, prepared_dir, clip_tiny_dir, tmp_path,
                                                             monkeypatch):
    """On the CPU, with every step reported as skipped by the scaler (what fp16 overflows do on a GPU)."""
    monkeypatch.setattr(runtime, "optimizer_step", lambda acc, optimizer: optimizer.step() or True)
    out = tmp_path / "run"
    assert _train(synth_root, prepared_dir, clip_tiny_dir, out, "--mixed-precision", "no", "--max-steps", 3) == 0
    assert [r["overflow_skipped_steps"] for r in _rows(out) if "loss" in r] == [1, 2, 3]
    assert json.loads((out / "metrics.json").read_text())["overflow_skipped_steps"] == 3
    assert "overflow (GradScaler): 3" in (out / "report.md").read_text()


@cuda
def test_training_batches_arrive_in_pinned_memory(synth_root, prepared_dir, clip_tiny_dir):
    acc = fresh_accelerator(mixed_precision="no")
    _, processor = load_clip(str(clip_tiny_dir), device="cpu")
    records = load_split(prepared_dir, "train")
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", workers=1)
    dataset = PairDataset(records, synth_root, processor.image_processor, train=True, seed=0)
    batches = epoch_batches(len(records), 4, world=1, rank=0, seed=0, epoch=0)[:1]
    batch = next(iter(clip_train._loader(dataset, batches, PairCollator(processor.tokenizer), cfg, acc)))
    assert batch["pixel_values"].is_pinned() and batch["input_ids"].is_pinned()


@cuda
def test_four_bit_loading_quantises_the_language_model(llava_tiny_dir):
    pytest.importorskip("bitsandbytes", reason="4-bit loading needs bitsandbytes")
    model, processor = load_llava(str(llava_tiny_dir), device="cuda", load_in_4bit=True,
                                  skip_quantization=["multi_modal_projector", "vision_tower", "lm_head"])
    kinds = {type(m).__name__ for m in model.model.language_model.modules()}
    assert "Linear4bit" in kinds
    assert "Linear4bit" not in {type(m).__name__ for m in model.model.multi_modal_projector.modules()}
    ids = processor.tokenizer("hello", return_tensors="pt")["input_ids"].to("cuda")
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits.float()).all()


@cuda
def test_flash_attention_agrees_with_sdpa(llava_tiny_dir):
    pytest.importorskip("flash_attn", reason="flash_attention_2 needs the flash-attn package")
    from animatch.judge.loading import load_judge_model

    logits = []
    for kernel in ("sdpa", "flash_attention_2"):
        model, processor = load_judge_model(str(llava_tiny_dir), device="cuda", dtype="bfloat16",
                                            attn_implementation=kernel)
        assert model.config.text_config._attn_implementation == kernel
        ids = processor.tokenizer(["a girl with long silver hair"], return_tensors="pt")["input_ids"].to("cuda")
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits.float())
    torch.testing.assert_close(logits[0], logits[1], atol=5e-2, rtol=5e-2)


@cuda
def test_deterministic_runs_are_bit_identical(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    for name in ("a", "b"):
        assert _train(synth_root, prepared_dir, clip_tiny_dir, tmp_path / name, "--mixed-precision", "bf16",
                      "--max-steps", 4, "--deterministic") == 0
    a, b = (load_file(str(tmp_path / n / "last" / "model.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_judge_train_counts_overflow_skipped_steps(llava_tiny_dir, synth_root, prepared_dir, tmp_path, monkeypatch):
    """On the CPU, with every step reported as skipped by the scaler."""
    monkeypatch.setattr(judge_train, "optimizer_step", lambda acc, optimizer: optimizer.step() or True)
    out = tmp_path / "run"
    assert main(["judge-train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                 str(llava_tiny_dir), "--out", str(out), "--batch-size", "2", "--accum-steps", "1", "--workers", "0",
                 "--max-steps", "2", "--log-every", "1", "--lora-r", "4", "--lora-alpha", "8", "--description-tokens",
                 "40", "--candidate-tokens", "32", "--max-eval-examples", "2", "--report-to", "none",
                 "--mixed-precision", "no"]) == 0
    assert [r["overflow_skipped_steps"] for r in _rows(out) if "loss" in r] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["overflow_skipped_steps"] == 2
