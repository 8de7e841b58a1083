"""Loading CLIP and LLaVA checkpoints from a Hub id or a local dir: the one place every job loads models.

Each loader takes a Hub id (used from the local Hugging Face cache when offline) or a checkpoint directory
in the Hub layout (such as `animatch init-model` writes) and returns `(model, processor)` in eval mode on
the requested device. Every way this can fail for a user (no such dir, a dir that is not a checkpoint of
the right kind, a Hub id that is neither cached nor reachable, 4-bit without CUDA, garbage weights, a bad
config field) becomes a one-line `UserError`, naming the file at fault, instead of a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from animatch.errors import UserError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r} (expected e.g. cpu, cuda, cuda:1)") from None


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    """None means the checkpoint's own dtype on an accelerator and float32 on CPU (half is slow there)."""
    if dtype is None:
        return "auto" if device.type != "cpu" else torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r} (expected one of auto, {', '.join(_DTYPES)})")
    return _DTYPES[dtype]


def _looks_like_path(model: str) -> bool:
    return (model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1)
            or Path(model).exists())


def _check_source(model: str, kinds: tuple[str, ...], what: str) -> str:
    """A local dir must hold a config.json of one of `kinds`; a Hub id is passed through."""
    model = str(model)
    if not _looks_like_path(model):
        return model
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UserError(f"{what} directory not found: {model}")
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{model} is not a {what} checkpoint (no config.json)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, OSError, AttributeError):
        raise UserError(f"{model} is not a {what} checkpoint (unreadable config.json)") from None
    if model_type not in kinds:
        raise UserError(f"{model} is a {model_type!r} checkpoint, not a {what} checkpoint")
    return str(path)


def _culprit(source: str, error: Exception) -> str:
    """The file of a checkpoint dir that `error` most likely comes from (the dir itself when unclear)."""
    path = Path(source)
    if not path.is_dir():
        return repr(source)
    if isinstance(error, SafetensorError) or "safetensors" in str(error).lower():
        weights = sorted(path.glob("*.safetensors"))
        return str(weights[0]) if len(weights) == 1 else f"the weights in {path}"
    if isinstance(error, (TypeError, StrictDataclassError)) or "config" in str(error).lower():
        return str(path / "config.json")
    return str(path)


def _load(what: str, model: str, fn, *args, **kwargs) -> Any:
    """Call a from_pretrained; turn any loading error into one line naming the file at fault."""
    try:
        return fn(model, *args, **kwargs)
    except Exception as e:  # a checkpoint is user input: whatever breaks in it is one line, not a traceback
        if isinstance(e, UserError):
            raise
        text = str(e)
        if "couldn't connect" in text or "offline" in text.lower() or "cached files" in text:
            raise UserError(f"cannot load {what} {model!r}: not a local dir and not in the Hugging Face cache, "
                            "and the Hub is unreachable (offline); pass a local checkpoint dir, e.g. from "
                            "`animatch init-model`") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()][:2] or [type(e).__name__]
        raise UserError(f"cannot load {what} from {_culprit(model, e)}: {' '.join(lines)[:300]}") from None


def load_clip_processor(model: str):
    """The CLIP processor (tokenizer + image processor) of a Hub id or checkpoint dir."""
    from transformers import AutoProcessor

    source = _check_source(model, ("clip",), "CLIP")
    return _load("CLIP processor", source, AutoProcessor.from_pretrained)


def load_clip(model: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
              attn_implementation: str | None = None):
    """(CLIPModel in eval mode on `device`, its processor) from a Hub id or checkpoint dir; `attn_implementation`
    picks the attention kernel ("sdpa", "eager"; None: transformers' default)."""
    from transformers import CLIPModel

    dev = resolve_device(device)
    source = _check_source(model, ("clip",), "CLIP")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    clip = _load("CLIP model", source, CLIPModel.from_pretrained, dtype=resolve_dtype(dtype, dev), **kwargs)
    return clip.to(dev).eval(), load_clip_processor(model)


def load_llava(model: str, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               load_in_4bit: bool = False, attn_implementation: str | None = "sdpa",
               low_cpu_mem_usage: bool = True, skip_quantization: list[str] | None = None):
    """(LlavaForConditionalGeneration in eval mode, its processor) from a Hub id or checkpoint dir.

    `load_in_4bit` quantises with bitsandbytes (NF4, compute in `dtype` or float16) and needs CUDA;
    `skip_quantization` names modules kept unquantised (QLoRA training keeps the projector trainable).
    `low_cpu_mem_usage` is kept for callers written against transformers 4; version 5 always loads lazily.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dev = resolve_device(device)
    source = _check_source(model, ("llava",), "LLaVA")
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        if dev.type != "cuda":
            raise UserError("4-bit loading needs a CUDA GPU; drop --load-in-4bit on this machine")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise UserError("4-bit loading needs bitsandbytes: pip install 'animatch[quant]'") from None
        compute = kwargs["dtype"] if isinstance(kwargs["dtype"], torch.dtype) else torch.float16
        kwargs.update(dtype=compute, device_map={"": dev.index or 0}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
            llm_int8_skip_modules=skip_quantization))
    llava = _load("LLaVA model", source, LlavaForConditionalGeneration.from_pretrained, **kwargs)
    if not load_in_4bit:
        llava = llava.to(dev)
    processor = _load("LLaVA processor", source, AutoProcessor.from_pretrained)
    return llava.eval(), processor
