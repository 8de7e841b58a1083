"""Stage 2 of the judge alone: does a LLaVA checkpoint learn to score candidate texts against a description?

Trains only on stage-2 examples made by `animatch.judge.data` (reference keyword descriptions as context, a
positive and a negative candidate per character, `Score: 9` / `Score: 2`), and prints, every `--eval-every`
steps, the teacher-forced verdict on held-out examples: accuracy and ROC-AUC of logit("9") - logit("2") at the
score position. It isolates stage 2 from stage 1 (no own descriptions) and lets one change one thing at a time:
`--text-only` drops the image tokens, `--minimal` replaces the prompts with `description | candidate Score:`
(about 70 tokens instead of 370) and the answer with the score alone (`--analysis`: `description | candidate
Answer:` and the judge's whole answer, `Score: N` + its analysis), `--paired` puts a character's positive and
negative in the same batch, `--score-only` puts the loss on the score token alone, `--bf16` autocasts the forward
pass to bfloat16 (about 2x faster on a CPU with AVX512-BF16), `--describe-prompt` / `--relevance-prompt` try
other prompts (the product's are `judge.prompts`). Runs and figures: docs/JUDGE.md.

Usage: .venv/bin/python bench/judge_stage2_probe.py --data ROOT --split-dir PREPARED --model LLAVA_DIR
           [--steps 400] [--examples 3000] [--lr 2e-3] [--text-only] [--minimal [--analysis]] [--paired] [--score-only]
           [--bf16] [--describe-prompt TEXT] [--relevance-prompt TEXT]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import torch

from animatch.config import JudgeTrainConfig
from animatch.data.schema import load_split
from animatch.evaluate.classification import roc_auc
from animatch.judge import prompts
from animatch.judge.examples import IGNORE_INDEX, ExampleCollator, JudgeExampleDataset
from animatch.models.hub import load_llava


def stage2_examples(dataset: JudgeExampleDataset, n: int, start: int, args) -> tuple[list[dict], int]:
    """`n` encoded stage-2 examples from plan position `start` on (and the position after the last)."""
    tokenizer, image_token = dataset.encoder.tokenizer, dataset.encoder.image_token_id
    items, i = [], start
    while len(items) < n:
        spec, item = dataset.plan[i], dataset[i]
        i += 1
        if item["kind"] not in ("positive", "negative"):
            continue
        if args.minimal:
            head = tokenizer(spec["description"] + " |")["input_ids"]
            if args.analysis:  # the judge's own answer (score, then the analysis) after a short prompt
                prompt = head + tokenizer(spec["text"] + " Answer:", add_special_tokens=False)["input_ids"]
                answer = item["input_ids"][len(item["input_ids"]) - int((item["labels"] != IGNORE_INDEX).sum()):]
                weights = item["weights"][len(item["weights"]) - len(answer):]
            else:
                prompt = head + tokenizer(spec["text"] + " Score:", add_special_tokens=False)["input_ids"]
                answer = torch.tensor(tokenizer(" 9" if item["kind"] == "positive" else " 2",
                                                add_special_tokens=False)["input_ids"][-1:])
                weights = torch.tensor([dataset.encoder.score_weight])
            item = {**item, "input_ids": torch.cat([torch.tensor(prompt), answer]),
                    "labels": torch.cat([torch.full((len(prompt),), IGNORE_INDEX), answer]),
                    "weights": torch.cat([torch.zeros(len(prompt)), weights])}
        elif args.text_only:
            keep = item["input_ids"] != image_token
            item = {**item, **{key: item[key][keep] for key in ("input_ids", "labels", "weights")}}
        if args.score_only:
            labels = item["labels"].clone()
            labels[item["weights"] != dataset.encoder.score_weight] = IGNORE_INDEX
            item = {**item, "labels": labels}
        items.append({**item, "record": spec["record"]})
    return items, i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--examples", type=int, default=3000, help="training examples (drawn once)")
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--score-weight", type=float, default=10.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--describe-prompt", help="replace prompts.DESCRIBE_PROMPT (try a layout)")
    parser.add_argument("--relevance-prompt", help="replace prompts.RELEVANCE_PROMPT ({text} marks the candidate)")
    for flag in ("--text-only", "--minimal", "--analysis", "--paired", "--score-only", "--bf16"):
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args()
    args.text_only |= args.minimal
    prompts.DESCRIBE_PROMPT = args.describe_prompt or prompts.DESCRIBE_PROMPT
    prompts.RELEVANCE_PROMPT = args.relevance_prompt or prompts.RELEVANCE_PROMPT
    torch.manual_seed(0)
    model, processor = load_llava(args.model, device="cpu", dtype=torch.float32)
    cfg = JudgeTrainConfig(out="unused", data=args.data, split_dir=args.split_dir, model=args.model, method="full",
                           description_style="keywords", description_tokens=48, candidate_tokens=96,
                           stage2_context="reference", score_loss_weight=args.score_weight,
                           negatives_per_positive=1, personality_negatives=0.0)
    dataset = JudgeExampleDataset(load_split(args.split_dir, "train"), args.data, processor, cfg, seed=0)
    val, after = stage2_examples(dataset, args.val, 0, args)
    train, _ = stage2_examples(dataset, args.examples, after, args)
    by_record = defaultdict(dict)
    for item in train:
        by_record[item["record"]][item["kind"]] = item
    pairs = [(d["positive"], d["negative"]) for d in by_record.values() if len(d) == 2]
    tokenizer = processor.tokenizer
    match, other = (tokenizer(s, add_special_tokens=False)["input_ids"][-1] for s in ("9", "2"))
    collate = ExampleCollator(tokenizer.pad_token_id)

    def forward(batch: dict, keep: torch.Tensor) -> torch.Tensor:
        """Logits at positions `keep` only (a large vocabulary's head would dominate the step otherwise)."""
        pixels = None if args.text_only else batch["pixel_values"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels,
                         use_cache=False, logits_to_keep=keep).logits.float()

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        model.eval()
        margins, truth = [], []
        for first in range(0, len(val), 25):
            items = val[first:first + 25]
            at = [int((item["weights"] == args.score_weight).nonzero()[0]) - 1 for item in items]
            keep = torch.tensor(sorted(set(at)))
            logits = forward(collate(items), keep)
            for row, item in enumerate(items):
                column = keep.tolist().index(at[row])
                margins.append(float(logits[row, column, match] - logits[row, column, other]))
                truth.append(item["kind"] == "positive")
        model.train()
        return sum((m > 0) == t for m, t in zip(margins, truth)) / len(truth), roc_auc(margins, truth)

    model.requires_grad_(True)
    model.model.vision_tower.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 30))
    rng, losses, start = random.Random(0), [], time.perf_counter()
    if args.paired and len(pairs) < args.batch // 2:
        parser.error(f"--paired: only {len(pairs)} characters have both examples; raise --examples")
    print(f"{len(train)} training examples ({len(pairs)} characters with both), {len(val)} held out")
    for step in range(1, args.steps + 1):
        items = [x for pair in rng.sample(pairs, args.batch // 2) for x in pair] if args.paired \
            else rng.sample(train, args.batch)
        batch = collate(items)
        keep = (batch["labels"][:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        labels, weights = batch["labels"][:, keep + 1], batch["weights"][:, keep + 1]
        logits = forward(batch, keep)
        losses_per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                             ignore_index=IGNORE_INDEX, reduction="none")
        w = weights.flatten() * (labels != IGNORE_INDEX).flatten()
        loss = (losses_per_token * w).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        warmup.step()
        losses.append(loss.item())
        if step % args.eval_every == 0:
            accuracy, auc = evaluate()
            print(f"step {step} {time.perf_counter() - start:.0f}s loss {sum(losses) / len(losses):.3f} "
                  f"held-out accuracy {accuracy:.3f} AUC {auc:.3f}", flush=True)
            losses = []


if __name__ == "__main__":
    main()
