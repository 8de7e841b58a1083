import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from animatch.clip.losses import ClipLoss, contrastive_loss

SCRIPTS = Path(__file__).parent / "scripts"


def test_loss_equals_hf_clipmodel_loss():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    input_ids = torch.randint(1, 99, (5, 10))
    pixel_values = torch.randn(5, 3, 32, 32)
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    ours = ClipLoss()(out.image_embeds, out.text_embeds, model.logit_scale)
    assert torch.allclose(ours, out.loss, atol=1e-6)


def test_loss_is_symmetric_mean_of_both_directions():
    f = torch.nn.functional.normalize(torch.eye(3) + 0.1, dim=-1)
    perfect = contrastive_loss(f, f, torch.tensor(4.0))
    shuffled = contrastive_loss(f, f[[1, 2, 0]], torch.tensor(4.0))
    assert perfect < 0.1 < shuffled


@pytest.mark.slow
def test_two_process_global_negatives_equal_one_process(tmp_path):
    """Loss and parameter gradients of 2 DDP processes (4 + 2 pairs) == 1 process on all 6 pairs."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(SCRIPTS / "global_loss_check.py"), str(tmp_path)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["world"] == 2
        assert abs(result["loss"] - result["ref_loss"]) < 1e-5
        assert max(result["grad_diff"].values()) < 1e-5
        # The local-batch loss (what HF's CLIPModel and run_clip compute) misses the other rank's negatives.
        assert abs(result["local_loss"] - result["ref_loss"]) > 1e-3
