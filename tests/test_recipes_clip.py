"""The CLIP recipes in recipes/ load through the real `--config` loader (which checks every value's type and range)
into the values their comments promise."""

from pathlib import Path

import pytest
import yaml

from animatch import config as C
from animatch.cli import resolve_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _load(name: str, tmp_path) -> C.TrainConfig:
    required = {"data": str(tmp_path), "split_dir": str(tmp_path), "out": str(tmp_path / "run")}
    return resolve_config(C.TrainConfig, {"config": str(RECIPES / name), **required})


@pytest.mark.parametrize("name", ["clip-tiny-scratch.yaml", "clip-vit-b32-finetune.yaml"])
def test_recipe_loads_and_names_no_dataset_or_run_dir(name, tmp_path):
    cfg = _load(name, tmp_path)
    written = yaml.safe_load((RECIPES / name).read_text())
    assert {key: getattr(cfg, key) for key in written} == pytest.approx(written)
    assert not {"data", "split_dir", "out"} & set(written)  # a recipe is for any dataset and run dir


def test_scratch_recipe_is_the_benchs(tmp_path):
    cfg = _load("clip-tiny-scratch.yaml", tmp_path)
    first_line = (RECIPES / "clip-tiny-scratch.yaml").read_text().splitlines()[0]
    assert first_line == "# preset: clip-tiny" and "clip-tiny" in C.TINY_PRESETS
    assert (cfg.max_steps, cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.warmup_steps) == (320, 64, 1e-3, "wsd", 80)
    assert (cfg.logit_scale_init, cfg.adam_eps, cfg.patch_dropout, cfg.text_buckets) == (30.0, 1e-8, 0.75, 4)
    assert (cfg.crop_scale, cfg.hflip, cfg.attn_implementation) == (1.0, False, "eager")


def test_reference_recipe_is_the_reference_projects(tmp_path):
    cfg = _load("clip-vit-b32-finetune.yaml", tmp_path)
    assert cfg.model == "openai/clip-vit-base-patch32" and cfg.logit_scale_init == 16.0
    assert (cfg.lr_schedule, cfg.eta_min, cfg.weight_decay, cfg.max_grad_norm) == ("cosine", 1e-6, 0.05, 1.0)
    assert (cfg.batch_size, cfg.crop_scale, cfg.hflip) == (64, 0.8, True)


def test_command_line_options_override_a_recipe(tmp_path):
    cfg = resolve_config(C.TrainConfig, {"config": str(RECIPES / "clip-tiny-scratch.yaml"), "data": str(tmp_path),
                                         "split_dir": str(tmp_path), "out": "run", "max_steps": 40})
    assert cfg.max_steps == 40 and cfg.warmup_steps == 80
