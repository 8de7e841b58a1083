"""Checkpoints of a training run, in safetensors + JSON only (nothing is ever unpickled).

A checkpoint dir holds the model and processor in Hugging Face format (loadable by `from_pretrained`) and,
for `last/`, a `trainer_state/` subdir: optimizer tensors (`optimizer.safetensors`) with their structure
and hyper-parameters (`optimizer.json`), scheduler and GradScaler state, the RNG states (python, torch's CPU
and, when CUDA is in use, each GPU's) and the data position (epoch, step in epoch, global step, best
metric). Dirs are written through `animatch.runs.atomic_dir`, so a kill during a save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from animatch.runs import atomic_dir, write_json

STATE_DIR = "trainer_state"


def _optimizer_to_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][name] = {"tensor": f"{pid}.{name}"}
            else:
                meta["state"][str(pid)][name] = {"value": value}
    return tensors, meta


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {int(pid): {name: tensors[v["tensor"]] if "tensor" in v else v["value"] for name, v in slots.items()}
             for pid, slots in meta["state"].items()}
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | Path, model: Any, processor: Any, *, optimizer: Any = None, scheduler: Any = None,
                    scaler: Any = None, progress: dict | None = None, extra_json: dict | None = None) -> None:
    """Write `path` atomically; with `optimizer` also the resume state."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
        if optimizer is None:
            return
        state_dir = tmp / STATE_DIR
        state_dir.mkdir()
        tensors, meta = _optimizer_to_files(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_initialized():  # dropout on CUDA draws from the GPUs' own generators
            tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, str(state_dir / "optimizer.safetensors"))
        write_json(state_dir / "optimizer.json", meta)
        write_json(state_dir / "state.json", {
            "progress": progress or {},
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng_python": random.getstate(),
        })


def has_resume_state(path: str | Path) -> bool:
    return (Path(path) / STATE_DIR / "state.json").is_file()


def load_resume_state(path: str | Path, *, optimizer: Any, scheduler: Any = None, scaler: Any = None) -> dict:
    """Restore optimizer/scheduler/scaler/RNG from `path/trainer_state`; returns the saved progress."""
    state_dir = Path(path) / STATE_DIR
    tensors = load_file(str(state_dir / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda = [tensors.pop(f"rng.cuda.{i}") for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    optimizer.load_state_dict(_optimizer_from_files(tensors, json.loads((state_dir / "optimizer.json").read_text())))
    state = json.loads((state_dir / "state.json").read_text())
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    version, internal, gauss = state["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    return state["progress"]
