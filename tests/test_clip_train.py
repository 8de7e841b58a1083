import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from animatch.cli import main
from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.datasets import PairCollator, PairDataset, epoch_batches
from animatch.data.schema import load_split
from animatch.models.hub import load_clip
from animatch.training.runtime import fresh_accelerator

FAST = ["--batch-size", "8", "--lr", "5e-4", "--workers", "0", "--report-to", "none", "--log-every", "1",
        "--mixed-precision", "no"]


# A GPU changes the last bits from run to run (reduction order, TF32) unless --deterministic; the CPU does not,
# so on the CPU the exact-resume test checks that exactness needs no flag.
EXACT = ["--deterministic"] if torch.cuda.is_available() else []


def _train_args(synth_root, prepared_dir, clip_tiny_dir, out, *extra):
    return ["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
            "--out", str(out), *FAST, *extra]


def _weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "last" / "model.safetensors"))


@pytest.mark.slow
def test_short_run_learns_and_writes_checkpoints(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    out = tmp_path / "run"
    args = _train_args(synth_root, prepared_dir, clip_tiny_dir, out, "--max-steps", "60", "--eval-every", "30")
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    assert len(losses) == 60
    # Chance level for a batch of 8 is ln 8 = 2.08; a model that learns nothing (or collapses) stays there.
    assert sum(losses[-10:]) / 10 < 0.8 * math.log(8)
    assert [r["step"] for r in rows if "val/mean_recall" in r] == [30, 60]
    for name in ("best", "last"):
        model, _ = load_clip(str(out / name))
        assert model.config.projection_dim > 0
    assert (out / "last" / "trainer_state" / "optimizer.safetensors").is_file()
    assert not list((out / "last" / "trainer_state").glob("*.pt"))
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 60 and summary["skipped_samples"] == {}
    assert (out / "config.yaml").is_file() and (out / "report.md").is_file()

    eval_out = tmp_path / "eval"
    assert main(["eval", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(out / "best"),
                 "--baseline", str(clip_tiny_dir), "--out", str(eval_out), "--workers", "0"]) == 0
    result = json.loads((eval_out / "eval.json").read_text())
    for role in ("model", "baseline"):
        assert set(result[role]) >= {"accuracy", "in_batch_accuracy", "pooled", "chunk_pooled", "truncated",
                                     "chunks", "cosine", "bleu", "rouge_l"}
    for name in ("eval.md", "similarity_hist.png", "recall_at_k.png", "config.yaml"):
        assert (eval_out / name).is_file()


def test_existing_run_needs_resume(synth_root, prepared_dir, clip_tiny_dir, tmp_path, capsys):
    (tmp_path / "run" / "last").mkdir(parents=True)
    (tmp_path / "run" / ".animatch.json").write_text('{"command": "train"}')  # what a killed run leaves
    assert main(_train_args(synth_root, prepared_dir, clip_tiny_dir, tmp_path / "run")) == 2
    assert "--resume" in capsys.readouterr().err


def _batches(records, root, processor, n, batch_size):
    dataset = PairDataset(records, root, processor.image_processor, train=True, seed=3)
    collate = PairCollator(processor.tokenizer)
    order = epoch_batches(len(records), batch_size, world=1, rank=0, seed=3, epoch=0)[:n]
    return [collate([dataset[i] for i in b]) for b in order]


def test_accumulated_loss_is_exact(synth_root, prepared_dir, clip_tiny_dir):
    """4 micro-batches of 4 give the same update as one batch of 16 (the loss sees all 16 pairs); float32 on the
    CPU, where the two graphs' sums agree to 1e-5."""
    records = load_split(prepared_dir, "train")
    weights = []
    for accum in (1, 4):
        torch.manual_seed(0)
        model, processor = load_clip(str(clip_tiny_dir), device="cpu")
        cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", accum_steps=accum, lr=1e-3)
        trainer = Trainer(cfg, fresh_accelerator(cpu=True), model, processor)
        (batch,) = _batches(records, synth_root, processor, 1, 16)
        micro = [{**{k: v[i * 16 // accum:(i + 1) * 16 // accum] for k, v in batch.items() if torch.is_tensor(v)},
                  "size": 16 // accum} for i in range(accum)]
        trainer.step(micro)
        weights.append({k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()})
    diff = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    assert diff < 1e-5


def test_optimizer_follows_the_recipe(synth_root, prepared_dir, clip_tiny_dir):
    """Fused AdamW (0.9, 0.98) with the configured epsilon; weight decay on matrices only, never on biases, norms
    or logit_scale."""
    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", weight_decay=0.1, adam_eps=1e-8)
    groups = Trainer(cfg, fresh_accelerator(cpu=True), model, processor).optimizer.param_groups
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-8 and g["fused"] for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in model.named_parameters():
        exempt = p.ndim < 2 or "norm" in name or name == "logit_scale"
        assert (id(p) not in decayed) == exempt, name
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))


def _spawn(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "animatch.cli", *args], env=env or os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("patch_dropout,text_buckets", [("0", "1"), ("0.5", "3")])
def test_sigkill_then_resume_matches_uninterrupted_run(synth_root, prepared_dir, clip_tiny_dir, tmp_path,
                                                       patch_dropout, text_buckets):
    steps = ["--max-steps", "16", "--eval-every", "3", "--batch-size", "4", "--patch-dropout", patch_dropout,
             "--text-buckets", text_buckets, *EXACT]
    straight = tmp_path / "straight"
    assert main(_train_args(synth_root, prepared_dir, clip_tiny_dir, straight, *steps)) == 0

    killed = tmp_path / "killed"
    proc = _spawn(_train_args(synth_root, prepared_dir, clip_tiny_dir, killed, *steps))
    state = killed / "last" / "trainer_state" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["progress"]["global_step"] >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    progress = json.loads(state.read_text())["progress"]
    assert 3 <= progress["global_step"] < 16 and progress["step_in_epoch"] > 0  # killed mid-epoch

    assert main(_train_args(synth_root, prepared_dir, clip_tiny_dir, killed, *steps, "--resume")) == 0
    a, b = _weights(straight), _weights(killed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_corrupt_images_are_skipped_and_reported(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    train = load_split(prepared_dir, "train")
    for record in train[:3]:
        (root / record["file_name"]).write_bytes(b"<html>not an image</html>")
    out = tmp_path / "run"
    assert main(_train_args(root, prepared_dir, clip_tiny_dir, out, "--max-steps", "6")) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert sum(summary["skipped_samples"].values()) >= 1
    assert "skipped samples" in (out / "report.md").read_text()
