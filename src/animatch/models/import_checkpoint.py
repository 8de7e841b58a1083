"""`animatch import-checkpoint`: a PyTorch `.pth` state dict of a CLIPModel -> a Hugging Face checkpoint dir.

The reference project saves its fine-tuned `CLIPModel` as `best_model.pth` (`torch.save` of a state dict,
sometimes wrapped in a dict with the optimizer, sometimes with DDP's `module.` prefix). This module reads such
a file with `torch.load(weights_only=True)` only (never unpickling code), unwraps it, checks every key and
shape against the base checkpoint it was fine-tuned from, and writes `model.safetensors` + config + the
base's processor, the layout every other command takes. Anything that does not fit is one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import torch

from animatch.config import ImportCheckpointConfig
from animatch.errors import UserError
from animatch.runs import atomic_dir, claim_output, markdown_table, write_run_files

WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")
# Prefixes a wrapper adds in front of every key: DDP / DataParallel, then torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
MARKER = "import_checkpoint.json"
LISTED = 5  # key names shown per kind of mismatch; the count says how many more


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, what was unwrapped) of a weights-only `.pth`; UserError when it is anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler raises anything (even IndexError) on a corrupt file
        text = str(e)
        if text.startswith("Weights only load failed"):  # torch's weights-only unpickler met a Python object
            raise UserError(f"{path} holds pickled Python objects, not only tensors; it is not loaded (weights_only). "
                            "Re-save it with torch.save(model.state_dict(), PATH)") from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first}") from None
    notes: list[str] = []
    if isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and _is_state_dict(obj[k])), None)
        if key is None:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise UserError(f"{path} holds a dict without a state dict under {' / '.join(WRAPPER_KEYS)} "
                            f"(its keys: {keys})")
        obj = obj[key]
        notes.append(f"unwrapped from {key!r}")
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        raise UserError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            notes.append(f"prefix {prefix!r} removed")
    return obj, notes


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _listed(names: list[str]) -> str:
    more = f", +{len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def check_against(state: dict[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    """Drop the non-persistent buffers older transformers saved (position_ids) from `state`; return every
    way the rest does not fit `model`: missing keys, unexpected keys, shape mismatches (one line each)."""
    expected = model.state_dict()
    for name, _ in model.named_buffers():
        if name not in expected:
            state.pop(name, None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} ({_shape(state[k])} in the file, {_shape(expected[k])} in the base)"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listed(shapes)}")
    return problems


def import_checkpoint(cfg: ImportCheckpointConfig) -> dict:
    """Write cfg.checkpoint's weights on cfg.base's architecture and processor to cfg.out; return the metrics."""
    from animatch.models.hub import load_clip

    state, notes = read_state_dict(cfg.checkpoint)
    model, processor = load_clip(cfg.base, device="cpu", dtype=torch.float32)
    problems = check_against(state, model)
    if problems:
        raise UserError(f"{cfg.checkpoint} does not fit the base {cfg.base}: " + "; ".join(problems))
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise UserError(f"{cfg.checkpoint}: {len(not_finite)} tensors hold NaN or inf: {_listed(not_finite)}")
    # Claimed once the file is known to fit: a refused import leaves no --out behind (the dir is written whole).
    out = claim_output(cfg, "import-checkpoint")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    model.load_state_dict(state, strict=True)
    metrics = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "base": cfg.base, "tensors": len(state),
               "parameters": model.num_parameters(), "file_dtypes": dtypes, "unwrapped": notes}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        report = (f"# Imported checkpoint\n\n`{cfg.checkpoint}` on the architecture and processor of `{cfg.base}`; "
                  "every key and shape checked against the base.\n\n"
                  + markdown_table([{"setting": k, "value": v if not isinstance(v, list) else ", ".join(v) or "-"}
                                    for k, v in metrics.items()]))
        write_run_files(tmp, cfg, metrics, report, metrics_name=MARKER, report_name="README.md")
    return metrics


def run_import_checkpoint(cfg: ImportCheckpointConfig) -> int:
    """CLI entry: import, then say what was read and where it went."""
    m = import_checkpoint(cfg)
    how = f" ({'; '.join(m['unwrapped'])})" if m["unwrapped"] else ""
    print(f"import-checkpoint: {m['tensors']} tensors ({m['parameters'] / 1e6:.2f}M parameters, "
          f"{'/'.join(m['file_dtypes'])}){how} from {cfg.checkpoint} on {cfg.base} -> {cfg.out}")
    print(f"use it as --model {cfg.out}")
    return 0
