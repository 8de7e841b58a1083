"""The judge's prompts and answer formats: the one source for inference and LLaVA fine-tuning.

Stage 1 asks for a description of the character in the image. Stage 2 is the second turn of the same
conversation (image, stage-1 prompt and description already in context) and asks how well a text describes the
character; the question gives the text and, beside it, the text's appearance keywords in the form of a keyword
description (`relevance_question`). It is answered as `Score: <1-10>` on the first line and `Analysis: ...` after it
(`format_relevance_answer`). Conversations are lists of chat messages rendered by the processor's chat
template, so the model sees exactly the tokens it was (or will be) fine-tuned on. At inference, stage 2
continues stage 1's token ids: description ids + the ids of `relevance_tail` (everything the template puts
after the description, up to the generation prompt), tokenised by `tail_token_ids` so the split matches
tokenising the whole rendered conversation.
"""

from __future__ import annotations

from typing import Any

from animatch.evaluate.keywords import canonical_keywords, extract_keywords

# Short on purpose: every instruction token is paid at each step of a CPU-sized judge, and a small language model
# learns the comparison only while the two texts sit close together (docs/JUDGE.md).
DESCRIBE_PROMPT = "Describe the character."
RELEVANCE_PROMPT = 'Text: "{text}"\nIts keywords: {keywords}.\nAnswer "Score: <1-10>", then "Analysis: <reasoning>".'

Conversation = list[dict[str, Any]]


def description_conversation(description: str | None = None) -> Conversation:
    """Stage 1: the user turn (image + DESCRIBE_PROMPT), plus the assistant's description when given."""
    turns: Conversation = [{"role": "user", "content": [{"type": "image"},
                                                        {"type": "text", "text": DESCRIBE_PROMPT}]}]
    if description is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": description}]})
    return turns


def relevance_conversation(description: str, text: str, answer: str | None = None) -> Conversation:
    """Stage 2: stage 1 with its description, the relevance question, and the answer when given (training)."""
    turns = description_conversation(description)
    turns.append({"role": "user", "content": [{"type": "text", "text": relevance_question(text)}]})
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def relevance_question(text: str) -> str:
    """The stage-2 question about `text`: the text, then its appearance keywords written as stage 1 writes a
    keyword description (`evaluate.keywords.canonical_keywords`), so the judge compares like with like."""
    keywords = canonical_keywords(extract_keywords(text))
    return RELEVANCE_PROMPT.format(text=text, keywords=", ".join(keywords) or "none")


def format_relevance_answer(score: int, analysis: str) -> str:
    """The stage-2 target answer, as the judge asks for it and `parse.parse_relevance` reads it back."""
    return f"Score: {int(score)}\nAnalysis: {analysis.strip()}"


def render(processor: Any, conversation: Conversation, add_generation_prompt: bool) -> str:
    """The conversation as prompt text in the processor's chat template (image placeholders unexpanded)."""
    return processor.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                         tokenize=False)


def render_description_prompt(processor: Any) -> str:
    """Stage-1 prompt text, ending with the generation prompt the description follows."""
    return render(processor, description_conversation(), add_generation_prompt=True)


def render_relevance_prompt(processor: Any, description: str, text: str) -> str:
    """Stage-2 prompt text (both turns, the description answered), ending with the generation prompt."""
    return render(processor, relevance_conversation(description, text), add_generation_prompt=True)


def relevance_tail(processor: Any, text: str) -> str:
    """What the template renders after the description in the stage-2 prompt, leading whitespace removed.

    Found by rendering the stage-2 prompt around a marker description, so it follows any chat template;
    the whitespace the template puts between the description and the next turn is left to the tokenizer
    (it belongs to the first token of the next turn in SentencePiece and byte-level BPE vocabularies).
    """
    marker = "\x00DESCRIPTION\x00"
    full = render_relevance_prompt(processor, marker, text)
    stage1 = render_description_prompt(processor)
    before, sep, after = full.partition(marker)
    if not sep or not before.startswith(stage1) or before[len(stage1):].strip():
        raise ValueError("the chat template does not render stage 2 as a continuation of stage 1")
    return after.lstrip()


def tail_token_ids(tokenizer: Any, tail: str) -> list[int]:
    """Token ids of `tail` as they come when it follows a sentence end, as in the whole rendered prompt.

    Tokenising the tail alone could add a word-start marker or merge differently at its first token;
    tokenising it after an anchor that ends a sentence and dropping the anchor's ids avoids both.
    """
    anchor = tokenizer("end.", add_special_tokens=False)["input_ids"]
    ids = tokenizer("end. " + tail, add_special_tokens=False)["input_ids"]
    if ids[:len(anchor)] != anchor:
        raise ValueError("the tokenizer merges across the description/next-turn boundary")
    return ids[len(anchor):]
