"""Loading the judge model: `models.hub.load_llava` plus an optional fine-tuned adapter, set up for batched
generation (left padding, RGB conversion, fp16 on CUDA, fp32 on CPU).

Adapter directory format (written by `animatch judge-train`, read by `animatch judge --adapter DIR`):
  DIR/adapter_config.json + DIR/adapter_model.safetensors   a PEFT LoRA adapter of the language model
                                                            (`PeftModel.save_pretrained`), required
                                                            (a pickled adapter_model.bin is refused);
  DIR/mm_projector.safetensors                              optional: the full state dict of the trained
      `multi_modal_projector` (keys relative to it: `linear_1.weight`, `linear_1.bias`, `linear_2.weight`,
      `linear_2.bias`), metadata {"format": "animatch-mm-projector", "version": "1"}; written and read by
      `save_projector` / `load_projector` below.
The projector is loaded into the base model first, then the LoRA weights; unless the model is 4-bit, the
LoRA weights are merged so inference pays nothing for them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from animatch.errors import UserError
from animatch.models.hub import load_llava, resolve_device

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROJECTOR_FILE = "mm_projector.safetensors"
PROJECTOR_METADATA = {"format": "animatch-mm-projector", "version": "1"}
ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2")


def _projector(model: Any) -> torch.nn.Module:
    return model.get_base_model().model.multi_modal_projector if hasattr(model, "get_base_model") \
        else model.model.multi_modal_projector


def save_projector(model: Any, adapter_dir: str | Path) -> Path:
    """Write the model's multi-modal projector as `adapter_dir/mm_projector.safetensors`."""
    path = Path(adapter_dir) / PROJECTOR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in _projector(model).state_dict().items()}
    save_file(state, str(path), metadata=PROJECTOR_METADATA)
    return path


def load_projector(model: Any, adapter_dir: str | Path) -> bool:
    """Load `adapter_dir/mm_projector.safetensors` into the model's projector; False when there is none."""
    path = Path(adapter_dir) / PROJECTOR_FILE
    if not path.is_file():
        return False
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read projector {path}: {e}") from None
    projector = _projector(model)
    try:
        projector.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UserError(f"projector {path} does not match the model: {first}") from None
    return True


def _check_attention(attn_implementation: str, device: torch.device) -> None:
    if attn_implementation not in ATTENTION_CHOICES:
        raise UserError(f"unknown attention implementation {attn_implementation!r} "
                        f"(expected one of {', '.join(ATTENTION_CHOICES)})")
    if attn_implementation == "flash_attention_2":
        if device.type != "cuda":
            raise UserError("flash_attention_2 needs a CUDA GPU; use --attn-implementation sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise UserError("flash_attention_2 needs the flash-attn package (pip install flash-attn); "
                            "or use --attn-implementation sdpa")


def _apply_adapter(model: Any, adapter: str, merge: bool) -> Any:
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: not a LoRA adapter dir (no adapter_config.json)")
    if not (path / ADAPTER_WEIGHTS).is_file():  # peft would fall back to adapter_model.bin, a pickle
        raise UserError(f"--adapter {adapter}: no {ADAPTER_WEIGHTS} (pickled weights such as adapter_model.bin "
                        "are never loaded)")
    try:
        from peft import PeftModel
    except ImportError:
        raise UserError("--adapter needs peft: pip install 'animatch[judge]'") from None
    load_projector(model, path)
    try:
        model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as e:  # an adapter dir is user input: whatever breaks in it is one line
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        culprit = path / (ADAPTER_WEIGHTS if isinstance(e, SafetensorError) or "safetensors" in first.lower()
                          else "adapter_config.json" if isinstance(e, TypeError) or "config" in first.lower()
                          else "")
        raise UserError(f"cannot load adapter {culprit}: {first[:300]}") from None
    return model.merge_and_unload() if merge else model


def load_judge_model(model: str, adapter: str | None = None, *, device: str | None = None,
                     dtype: str | None = None, load_in_4bit: bool = False,
                     attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """(model in eval mode, processor set up for batched generation) for the judge."""
    dev = resolve_device(device)
    _check_attention(attn_implementation, dev)
    # The reference runs fp16 on CUDA; the checkpoint's own dtype could be fp32 and twice as slow.
    dtype = dtype if dtype is not None else ("float16" if dev.type == "cuda" else "float32")
    llava, processor = load_llava(model, device=dev, dtype=dtype, load_in_4bit=load_in_4bit,
                                  attn_implementation=attn_implementation, low_cpu_mem_usage=True)
    if adapter is not None:
        llava = _apply_adapter(llava, adapter, merge=not load_in_4bit).eval()
    processor.tokenizer.padding_side = "left"  # generation continues at the right edge of every row
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    processor.image_processor.do_convert_rgb = True
    return llava, processor
