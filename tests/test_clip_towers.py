import pytest
import torch

from animatch.cli import main
from animatch.clip.towers import ClipForward, text_lengths
from animatch.models.hub import load_clip

# Exactness of the bucketed text tower against one batch is a float32 CPU property (TF32 or another kernel
# choice on a GPU moves the last bits): these tests pin the CPU.
DEVICE = "cpu"
TEXTS = ["red hair.", "She has long silver hair and wears a blue kimono with a wide obi.", "gold eyes", "",
         "A tall man in green armor with heavy shoulder guards, a wide-brimmed hat and short spiky black hair.",
         "pink ribbon", "Her school uniform is gray."]


def test_text_lengths_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert text_lengths(mask).tolist() == [3, 5, 1]
    assert text_lengths(mask.flip(1)).tolist() == [5, 5, 5]  # left padding: nothing can be cut


def _forward_and_grads(model, forward, tokens, pixels):
    model.zero_grad()
    images, texts = forward(tokens["input_ids"], tokens["attention_mask"], pixels)
    (images.sum() + (texts * torch.linspace(-1, 1, texts.shape[1])).sum()).backward()
    return images.detach(), texts.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                             if p.grad is not None}


@pytest.mark.parametrize("buckets", [2, 3, 20])
def test_bucketed_text_tower_gives_the_embeddings_and_gradients_of_one_batch(clip_tiny_dir, buckets):
    model, processor = load_clip(str(clip_tiny_dir), device=DEVICE)
    model.train()
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    lengths = text_lengths(tokens["attention_mask"])
    assert lengths.min() < lengths.max() == tokens["input_ids"].shape[1]  # short buckets really get cut
    pixels = torch.randn(len(TEXTS), 3, 64, 64)
    whole = _forward_and_grads(model, ClipForward(model), tokens, pixels)
    bucketed = _forward_and_grads(model, ClipForward(model, buckets), tokens, pixels)
    reference = model(**tokens, pixel_values=pixels)  # CLIPModel's own normalised embeddings
    assert torch.allclose(whole[0], reference.image_embeds, atol=1e-6)
    assert torch.allclose(whole[1], reference.text_embeds, atol=1e-6)
    assert torch.allclose(bucketed[1], whole[1], atol=1e-5)
    assert torch.equal(bucketed[0], whole[0])
    assert bucketed[2].keys() == whole[2].keys()
    for name, grad in whole[2].items():
        assert torch.allclose(bucketed[2][name], grad, atol=1e-5), name


def test_bucket_count_below_one_is_refused(clip_tiny_dir, synth_root, prepared_dir, tmp_path, capsys):
    model, _ = load_clip(str(clip_tiny_dir), device=DEVICE)
    with pytest.raises(ValueError):
        ClipForward(model, 0)
    assert main(["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
                 "--out", str(tmp_path / "run"), "--text-buckets", "0"]) == 2
    assert "--text-buckets must be at least 1" in capsys.readouterr().err


def test_attention_kernel_choice_loads_and_agrees(clip_tiny_dir):
    pixels = torch.randn(2, 3, 64, 64)
    outputs = []
    for kernel in ("sdpa", "eager"):
        model, processor = load_clip(str(clip_tiny_dir), device=DEVICE, attn_implementation=kernel)
        assert model.config._attn_implementation == kernel
        tokens = processor.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
        with torch.no_grad():
            outputs.append(ClipForward(model, 2)(tokens["input_ids"], tokens["attention_mask"], pixels))
    for sdpa, eager in zip(*outputs):
        assert torch.allclose(sdpa, eager, atol=1e-5)
