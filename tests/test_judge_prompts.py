"""The judge's conversations: stage 2 continues stage 1 token for token, and answers round-trip the parser."""

from __future__ import annotations

import pytest

from animatch.judge import prompts
from animatch.judge.parse import parse_relevance

DESCRIPTION = "She has long pink hair, blue eyes and a black school uniform with a red ribbon."
TEXT = "A girl with pink hair and a black uniform."


def test_conversations_have_the_documented_turns():
    stage1 = prompts.description_conversation()
    assert [t["role"] for t in stage1] == ["user"]
    assert [c["type"] for c in stage1[0]["content"]] == ["image", "text"]
    stage2 = prompts.relevance_conversation(DESCRIPTION, TEXT)
    assert [t["role"] for t in stage2] == ["user", "assistant", "user"]
    assert stage2[1]["content"][0]["text"] == DESCRIPTION and TEXT in stage2[2]["content"][0]["text"]
    answered = prompts.relevance_conversation(DESCRIPTION, TEXT, answer=prompts.format_relevance_answer(7, "ok"))
    assert answered[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Score: 7\nAnalysis: ok"}]}


def test_the_question_lists_the_texts_keywords_as_a_description_names_them():
    question = prompts.relevance_question("Rin wears a crimson kimono. She has long azure hair.")
    assert '"Rin wears a crimson kimono. She has long azure hair."' in question
    assert "Its keywords: blue hair, red kimono." in question  # description order, basic colours
    assert "Its keywords: none." in prompts.relevance_question("Rin is kind.")
    assert prompts.relevance_conversation(DESCRIPTION, TEXT)[2]["content"][0]["text"] == \
        prompts.relevance_question(TEXT)


@pytest.mark.parametrize("score", [1, 6, 10])
def test_the_target_answer_format_round_trips_the_parser(score):
    answer = prompts.format_relevance_answer(score, "  The pink hair and the uniform match.\n")
    assert answer.splitlines()[0] == f"Score: {score}"
    assert parse_relevance(answer) == (score, "The pink hair and the uniform match.")


@pytest.fixture(scope="module")
def processor(llava_tiny_dir):
    from animatch.judge.loading import load_judge_model

    return load_judge_model(str(llava_tiny_dir))[1]


def test_rendered_prompts_follow_the_chat_template(processor):
    stage1 = prompts.render_description_prompt(processor)
    assert stage1.startswith("USER: <image>\n") and prompts.DESCRIBE_PROMPT in stage1
    assert stage1.endswith("ASSISTANT:")
    stage2 = prompts.render_relevance_prompt(processor, DESCRIPTION, TEXT)
    assert stage2.startswith(stage1 + " " + DESCRIPTION)
    assert stage2.endswith("ASSISTANT:") and stage2.count("<image>") == 1 and TEXT in stage2


def test_stage2_ids_are_stage1_ids_plus_description_plus_tail(processor):
    """The inference split (stage-1 ids, generated description, tail ids) tokenises like the whole text."""
    tokenizer = processor.tokenizer

    def ids(s):
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    stage1 = ids(prompts.render_description_prompt(processor))
    whole = ids(prompts.render_relevance_prompt(processor, DESCRIPTION, TEXT))
    tail = prompts.tail_token_ids(tokenizer, prompts.relevance_tail(processor, TEXT))
    assert whole[:len(stage1)] == stage1
    assert whole[-len(tail):] == tail
    assert tokenizer.decode(whole[len(stage1):-len(tail)]).strip() == DESCRIPTION
