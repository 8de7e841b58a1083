"""Can a small randomly initialised causal LM learn the comparison stage 2 of the judge needs?

Stage 2 decides whether a candidate text and a description share content. Stripped of language, that is set
overlap: `<s> [noise] A <sep> [filler] B <q>` -> "9" when set B shares 1-3 tokens with set A (K random tokens
each), else "2". This bench trains Llama language models of the llava-tiny kind (or deeper) from scratch on
that task and prints the training accuracy of the last 200 steps for each set size K, so what the judge
cannot learn can be told apart from what the data or the prompts hide (docs/JUDGE.md, "Why stage 2 does not
learn"). Nothing here reads persona data.

Usage: .venv/bin/python bench/overlap_probe.py [--k 1 3 8] [--layers 2 4] [--steps 1500] [--noise 0]
Measured (2-core CPU): see docs/JUDGE.md.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB, FIRST, SEP, QUERY, MATCH, OTHER = 4096, 300, 10, 11, 273, 266


def example(rng: random.Random, k: int, noise: int) -> tuple[list[int], int]:
    a = rng.sample(range(FIRST, VOCAB), k)
    match = rng.random() < 0.5
    b = [t for t in rng.sample(range(FIRST, VOCAB), k) if t not in a]
    if match:
        for i in rng.sample(range(len(b)), min(len(b), rng.randint(1, min(3, k)))):
            b[i] = rng.choice(a)
    pad = [rng.randrange(FIRST, VOCAB) for _ in range(rng.randint(0, noise))]
    between = [rng.randrange(FIRST, VOCAB) for _ in range(rng.randint(0, noise // 2))]
    return [1] + pad + a + [SEP] + between + b + [QUERY], MATCH if match else OTHER


def train(layers: int, width: int, k: int, steps: int, batch: int, lr: float, noise: int, seed: int) -> float:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=int(2.75 * width),
                                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=512, tie_word_embeddings=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    right = []
    for _ in range(steps):
        rows = [example(rng, k, noise) for _ in range(batch)]
        width_ = max(len(r) for r, _ in rows)
        ids = torch.tensor([[0] * (width_ - len(r)) + r for r, _ in rows])  # left-padded: the query is last
        mask = (ids != 0).long()
        target = torch.tensor([label for _, label in rows])
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
        logits = model.lm_head(hidden)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        said_match = logits[:, MATCH] > logits[:, OTHER]
        right += (said_match == (target == MATCH)).tolist()
    return sum(right[-200 * batch:]) / len(right[-200 * batch:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 8], help="set sizes")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise", type=int, default=0, help="up to this many random tokens before A")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"set overlap, {args.steps} steps x {args.batch} examples, lr {args.lr}, width {args.width}: "
          "training accuracy of the last 200 steps (chance 0.5)")
    print(f"{'layers':>7}{'K':>4}{'accuracy':>10}{'seconds':>9}")
    for layers in args.layers:
        for k in args.k:
            start = time.perf_counter()
            accuracy = train(layers, args.width, k, args.steps, args.batch, args.lr, args.noise, args.seed)
            print(f"{layers:>7}{k:>4}{accuracy:>10.3f}{time.perf_counter() - start:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
