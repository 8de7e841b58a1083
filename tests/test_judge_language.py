"""The English-only check: other scripts and Latin-script languages are named; English with names passes."""

from __future__ import annotations

import pytest

from animatch.errors import UserError
from animatch.judge.language import english_problem, require_english

ENGLISH = [
    "A girl with long pink hair, blue eyes and a black school uniform with a red ribbon.",
    "Chika Fujiwara has long pink hair tied with a black bow and wears the Shuchiin uniform.",
    "Kaguya Shinomiya (四宮かぐや) is the student council vice president with long black hair.",
    "She is from Shingeki no Kyojin and wears a green cloak.",
    "Short silver hair, red eyes.",
    "Rem, a maid from Re:Zero, has blue hair and wears a maid outfit with a white headdress.",
    "Pokémon trainer in a café-style outfit, naïve smile.",
    "Tall",
]

FOREIGN = [
    ("一个粉色长发的女孩，穿着黑色校服，系着红色蝴蝶结。", "Chinese"),
    ("ピンクの長い髪の女の子で、黒い制服を着ています。", "Japanese (kana)"),
    ("藤原千花はピンクの髪です", "Japanese (kana)"),
    ("Девушка с длинными розовыми волосами и голубыми глазами.", "Cyrillic"),
    ("분홍색 긴 머리의 소녀", "Korean"),
    ("فتاة ذات شعر وردي طويل", "Arabic"),
    ("Une fille aux cheveux roses et aux yeux bleus, elle porte un uniforme noir avec des rubans.", "French"),
    ("Una chica con el pelo rosa y los ojos azules, lleva un uniforme negro con una cinta.", "Spanish"),
    ("Ein Mädchen mit langen rosa Haaren, sie trägt eine schwarze Uniform und die Schleife ist rot.", "German"),
]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_text_passes(text):
    assert english_problem(text) is None
    require_english(text)


@pytest.mark.parametrize("text,name", FOREIGN)
def test_other_languages_are_named(text, name):
    problem = english_problem(text)
    assert problem is not None and name in problem and "English only" in problem
    with pytest.raises(UserError, match=name.split()[0]):
        require_english(text)


@pytest.mark.parametrize("text", ["", "   ", "12345 !!!", None])
def test_empty_or_letterless_text_is_rejected(text):
    assert english_problem(text) is not None
