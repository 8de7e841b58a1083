"""`animatch import-checkpoint`: .pth state dicts (bare, wrapped, DDP-prefixed) become checkpoint dirs that give
the same embeddings; every file that does not fit is one line and exit 2, and nothing is written."""

from __future__ import annotations

import pathlib

import pytest
import torch

from animatch.cli import main
from animatch.models.hub import load_clip


@pytest.fixture(scope="module")
def finetuned(clip_tiny_dir):
    """clip-tiny with every floating tensor moved, as a fine-tuned model differs from its base."""
    torch.manual_seed(3)
    model, _ = load_clip(str(clip_tiny_dir), device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _features(model) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.text_config.vocab_size, (2, 12))
    size = model.config.vision_config.image_size
    with torch.no_grad():
        return (model.get_text_features(input_ids=ids).pooler_output,
                model.get_image_features(pixel_values=torch.randn(2, 3, size, size)).pooler_output)


def _import(tmp_path, obj, base, name="best_model.pth", out="imported") -> tuple[int, pathlib.Path]:
    path = tmp_path / name
    torch.save(obj, path)
    return main(["import-checkpoint", str(path), "--base", str(base), "--out", str(tmp_path / out)]), tmp_path / out


@pytest.mark.parametrize("wrap", ["bare", "model_state_dict", "state_dict", "model", "ddp", "old_buffers"])
def test_imported_checkpoint_gives_the_finetuned_embeddings(wrap, finetuned, clip_tiny_dir, tmp_path, capsys):
    state = {k: v.clone() for k, v in finetuned.state_dict().items()}
    if wrap == "ddp":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}
    elif wrap == "old_buffers":  # transformers < 4.31 saved position_ids with the weights
        obj = {**state, "text_model.embeddings.position_ids": torch.arange(77)[None]}
    elif wrap == "bare":
        obj = state
    else:
        obj = {wrap: state, "epoch": 3, "best_recall": 0.41}
    code, out = _import(tmp_path, obj, clip_tiny_dir)
    assert code == 0, capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    imported, processor = load_clip(str(out), device="cpu")
    base, _ = load_clip(str(clip_tiny_dir), device="cpu")
    for got, want, before in zip(_features(imported), _features(finetuned), _features(base)):
        assert torch.equal(got, want)
        assert not torch.allclose(got, before)  # the import took the file's weights, not the base's
    assert processor.tokenizer("pink hair")["input_ids"]
    assert "import-checkpoint: " in capsys.readouterr().out


def test_mismatched_file_lists_missing_unexpected_and_shapes_in_one_line(finetuned, clip_tiny_dir, tmp_path,
                                                                           capsys):
    state = dict(finetuned.state_dict())
    del state["logit_scale"]
    state["classifier.weight"] = torch.zeros(4, 4)
    state["text_projection.weight"] = torch.zeros(3, 3)
    code, out = _import(tmp_path, state, clip_tiny_dir)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "1 missing keys: logit_scale" in err and "1 unexpected keys: classifier.weight" in err
    assert "text_projection.weight (3x3 in the file, 128x128 in the base)" in err


@pytest.mark.parametrize("content, message", [
    (b"this is not a checkpoint", "not a readable PyTorch checkpoint"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ({"config": pathlib.PurePosixPath("x")}, "pickled Python objects"),
    ({"epoch": torch.tensor(3), "optimizer": {"lr": 0.1}}, "without a state dict"),
    ([torch.zeros(2)], "does not hold a state dict"),
])
def test_unreadable_files_are_one_line_errors(content, message, finetuned, clip_tiny_dir, tmp_path, capsys):
    path = tmp_path / "best_model.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save(finetuned.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save(content, path)
    code = main(["import-checkpoint", str(path), "--base", str(clip_tiny_dir), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_foreign_dir_and_nan_weights(finetuned, clip_tiny_dir, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    path = tmp_path / "best_model.pth"
    torch.save(finetuned.state_dict(), path)
    assert main(["import-checkpoint", str(path), "--base", str(clip_tiny_dir), "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"
    state = dict(finetuned.state_dict())
    state["logit_scale"] = torch.tensor(float("nan"))
    code, _ = _import(tmp_path, state, clip_tiny_dir, name="nan.pth")
    assert code == 2 and "NaN or inf: logit_scale" in capsys.readouterr().err
