"""The shipped `accelerate launch` configs are what accelerate's own launcher reads them as.

The FSDP config cannot be run here: accelerate maps FSDP only onto accelerators (with ACCELERATE_USE_CPU=true
the same launch runs as MULTI_CPU, plain DDP over gloo), so this checks what the launcher hands the training
processes: an FSDP2 plugin that shards by transformer layer and saves full state dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env

import animatch

CONFIGS = Path(animatch.__file__).parent / "accelerate_configs"


def _launch_args(name: str):
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "--num_processes", "2", "x.py"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_sets_every_launcher_value(name, caplog):
    args = _launch_args(name)
    assert args.num_machines == 1 and args.mixed_precision == "bf16" and args.num_processes == 2
    assert "were not passed to `accelerate launch`" not in caplog.text  # no launcher warnings with a config


def test_fsdp_config_is_an_fsdp2_plugin_with_full_state_dicts():
    args = _launch_args("fsdp.yaml")
    assert args.use_fsdp and not args.use_deepspeed
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.transformer_cls_names_to_wrap is None  # the model's own _no_split_modules decide
