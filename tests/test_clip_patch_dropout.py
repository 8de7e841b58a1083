import pytest
import torch

from animatch.cli import main
from animatch.clip.patch_dropout import PatchDropout
from animatch.clip.train import Trainer
from animatch.config import TrainConfig
from animatch.data.schema import load_split
from animatch.models.hub import load_clip
from animatch.training.runtime import fresh_accelerator

# Which patches are kept is compared element for element with the full forward: a float32 CPU property.
DEVICE = "cpu"


@pytest.fixture()
def clip(clip_tiny_dir):
    torch.manual_seed(0)
    model, processor = load_clip(str(clip_tiny_dir), device=DEVICE)
    return model.train(), processor


def _embedding_outputs(model, pixels):
    seen = []
    handle = model.vision_model.pre_layrnorm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model.get_image_features(pixel_values=pixels)
    handle.remove()
    return seen[0]  # what the encoder receives: [B, 1 + kept, D]


def test_training_forward_keeps_the_class_token_and_a_subset_of_patches(clip):
    model, _ = clip
    pixels = torch.randn(3, 3, 64, 64)
    full = _embedding_outputs(model, pixels)  # no dropout registered yet: [3, 1 + 64, D]
    dropout = PatchDropout(model, 0.5, seed=1)
    dropout.reseed(0)
    kept = _embedding_outputs(model, pixels)
    assert full.shape[1] == 65 and kept.shape[1] == 1 + 32
    assert torch.equal(kept[:, 0], full[:, 0])
    for b in range(3):
        rows = (kept[b, 1:, None, :] == full[b, None, 1:, :]).all(-1)  # [32, 64]: which original patch each is
        assert rows.sum(1).eq(1).all() and rows.any(0).sum() == 32  # 32 distinct original patches, in order
        assert torch.equal(rows.float().argmax(1), rows.float().argmax(1).sort().values)
    masks = [(kept[b, 1:, None, :] == full[b, None, 1:, :]).all(-1).any(0) for b in range(3)]
    assert not torch.equal(masks[0], masks[1])  # each image draws its own patches

    model.eval()  # evaluation and every other use see all patches
    assert torch.equal(_embedding_outputs(model, pixels), full)
    dropout.remove()
    model.train()
    assert _embedding_outputs(model, pixels).shape[1] == 65


def test_the_same_key_draws_the_same_patches(clip):
    model, _ = clip
    dropout = PatchDropout(model, 0.75, seed=5)
    pixels = torch.randn(2, 3, 64, 64)

    def features(*key):
        dropout.reseed(*key)
        return model.get_image_features(pixel_values=pixels).pooler_output

    assert torch.equal(features(7, 1, 0), features(7, 1, 0))
    for other in ((8, 1, 0), (7, 2, 0), (7, 1, 1)):
        assert not torch.allclose(features(7, 1, 0), features(*other))
    assert _embedding_outputs(model, pixels).shape[1] == 1 + 16


def test_rate_outside_zero_one_is_refused(clip, synth_root, prepared_dir, clip_tiny_dir, tmp_path, capsys):
    with pytest.raises(ValueError):
        PatchDropout(clip[0], 1.0)
    assert PatchDropout(clip[0], 0.0).handle is None
    assert main(["train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model", str(clip_tiny_dir),
                 "--out", str(tmp_path / "run"), "--patch-dropout", "1"]) == 2
    assert "--patch-dropout must be in [0, 1)" in capsys.readouterr().err


def test_accumulated_loss_stays_exact_with_patch_dropout(synth_root, prepared_dir, clip_tiny_dir):
    """The cached and the recomputed forward of a micro-batch drop the same patches: 4 accumulated micro-batches
    give the update of one graph over all of them with those patches."""
    from test_clip_train import _batches

    records = load_split(prepared_dir, "train")
    cfg = TrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", accum_steps=4, lr=1e-3,
                      patch_dropout=0.5, seed=3)
    weights = []
    for reference in (False, True):
        torch.manual_seed(0)
        model, processor = load_clip(str(clip_tiny_dir), device=DEVICE)
        trainer = Trainer(cfg, fresh_accelerator(cpu=True), model, processor)
        (batch,) = _batches(records, synth_root, processor, 1, 16)
        micro = [{**{k: v[i * 4:(i + 1) * 4] for k, v in batch.items() if torch.is_tensor(v)}, "size": 4}
                 for i in range(4)]
        if reference:
            images, texts = zip(*(trainer._features(mb, 9, j) for j, mb in enumerate(micro)))
            trainer.acc.backward(trainer.loss_fn(torch.cat(images), torch.cat(texts), trainer.raw_model.logit_scale))
            trainer.acc.clip_grad_norm_(trainer.model.parameters(), cfg.max_grad_norm)
            trainer.optimizer.step()
        else:
            trainer.step(micro, step=9)
        weights.append({k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()})
    diff = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    assert diff < 1e-5
