"""Run under `accelerate launch --num_processes 2`: compare the distributed ClipLoss (global negatives,
DDP-averaged gradients) with the loss and gradients of one process on the concatenated batch.

Ranks hold unequal local batches (4 and 2 pairs) to exercise the padding path. Writes one JSON per rank.
"""

import json
import sys

import torch
from accelerate import Accelerator

from animatch.clip.losses import ClipLoss, contrastive_loss


class Towers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(8, 4)
        self.text = torch.nn.Linear(6, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x_img, x_txt):
        f_img = torch.nn.functional.normalize(self.image(x_img), dim=-1)
        f_txt = torch.nn.functional.normalize(self.text(x_txt), dim=-1)
        return f_img, f_txt


def main(out_dir: str) -> None:
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    x_img, x_txt = torch.randn(6, 8), torch.randn(6, 6)
    bounds = [(0, 4), (4, 6)][acc.process_index]

    reference = Towers()
    torch.manual_seed(1)
    reference.load_state_dict(Towers().state_dict())
    f_img, f_txt = reference(x_img, x_txt)
    ref_loss = contrastive_loss(f_img, f_txt, reference.logit_scale)
    ref_loss.backward()

    torch.manual_seed(1)
    model = acc.prepare(Towers())
    f_img, f_txt = model(x_img[slice(*bounds)], x_txt[slice(*bounds)])
    loss = ClipLoss(gather=True, gather_with_grad=True)(f_img, f_txt, acc.unwrap_model(model).logit_scale)
    acc.backward(loss)
    local_loss = ClipLoss(gather=False)(f_img.detach(), f_txt.detach(), reference.logit_scale.detach())

    grads = dict(acc.unwrap_model(model).named_parameters())
    diffs = {n: float((grads[n].grad - p.grad).abs().max()) for n, p in reference.named_parameters()}
    result = {"world": acc.num_processes, "loss": loss.item(), "ref_loss": ref_loss.item(),
              "local_loss": local_loss.item(), "grad_diff": diffs}
    with open(f"{out_dir}/rank{acc.process_index}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
