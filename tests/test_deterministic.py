"""`--deterministic` (train, judge-train): its process-wide switches are on during a run and restored after it,
an in-process run after one with another precision still starts (accelerate's state is per run), and the
attention kernel it cannot fix is refused. That it makes a resumed CUDA run exact is tested by the exact-resume
tests, which pass it on CUDA (tests/test_clip_train.py, tests/test_judge_train.py)."""

from __future__ import annotations

import os

import pytest
import torch

from animatch.cli import main
from animatch.clip import train as clip_train
from animatch.training.runtime import deterministic_mode, fresh_accelerator

FAST = ["--batch-size", "8", "--workers", "0", "--report-to", "none", "--max-steps", "2", "--mixed-precision", "no"]


def _switches() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_mode_sets_every_switch_and_restores_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _switches()
    with deterministic_mode(True):
        assert _switches() == (True, False, False, False, ":4096:8")
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert _switches() == before
    with deterministic_mode(False):
        assert _switches() == before


def test_train_runs_under_the_mode_and_gives_it_back(synth_root, prepared_dir, clip_tiny_dir, tmp_path, monkeypatch):
    seen = []
    step = clip_train.Trainer.step

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(clip_train.Trainer, "step", spy)
    args = ["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
            *FAST]
    assert main([*args, "--out", str(tmp_path / "run"), "--deterministic"]) == 0
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    assert main([*args, "--out", str(tmp_path / "flash"), "--deterministic", "--attn-implementation",
                 "flash_attention_2"]) == 2


def test_a_second_run_with_another_precision_starts(synth_root, prepared_dir, clip_tiny_dir, tmp_path):
    """accelerate refuses a second Accelerator with another precision in one process; each run starts afresh."""
    fresh_accelerator(cpu=True, mixed_precision="bf16")
    assert main(["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
                 "--out", str(tmp_path / "run"), *FAST]) == 0
    assert fresh_accelerator(cpu=True).mixed_precision == "no"


@pytest.mark.slow
def test_judge_train_runs_under_the_mode(llava_tiny_dir, synth_root, prepared_dir, tmp_path):
    assert main(["judge-train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                 str(llava_tiny_dir), "--out", str(tmp_path / "run"), "--batch-size", "2", "--accum-steps", "1",
                 "--workers", "0", "--max-steps", "2", "--lora-r", "4", "--lora-alpha", "8", "--description-tokens",
                 "40", "--candidate-tokens", "32", "--max-eval-examples", "2", "--report-to", "none",
                 "--deterministic"]) == 0
    assert not torch.are_deterministic_algorithms_enabled()
