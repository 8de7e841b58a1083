"""Retrieval metrics on hand-built similarity matrices: several texts per image, pessimistic ties,
images without text, in-batch accuracy, cosine statistics, block processing against a brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animatch.evaluate import retrieval
from animatch.evaluate.retrieval import (
    accuracy_top1,
    cosine_stats,
    in_batch_accuracy,
    matched_unmatched,
    recall_curve,
    retrieval_metrics,
    retrieval_ranks,
)

# 3 images, 5 texts; image 0 owns texts 0-1, image 1 owns text 2, image 2 owns texts 3-4.
T2I = [0, 0, 1, 2, 2]
SIM = np.array([
    [0.9, 0.1, 0.3, 0.2, 0.0],  # best own 0.9, nothing wrong above: rank 1
    [0.5, 0.2, 0.4, 0.6, 0.1],  # own 0.4, wrong 0.5 and 0.6 above: rank 3
    [0.2, 0.7, 0.1, 0.3, 0.8],  # best own 0.8 (text 4), nothing wrong above: rank 1
])


def test_several_texts_per_image_exact_values():
    m = retrieval_metrics(SIM, T2I, ks=(1, 2, 5))
    assert m["i2t_R@1"] == pytest.approx(2 / 3)
    assert m["i2t_R@2"] == pytest.approx(2 / 3)
    assert m["i2t_R@5"] == 1.0
    assert m["i2t_mean_rank"] == pytest.approx(5 / 3)
    assert m["i2t_median_rank"] == 1.0
    # text ranks: 1, 3 (0.2 and 0.7 beat 0.1), 1, 2 (0.6 beats 0.3), 1
    assert m["t2i_R@1"] == pytest.approx(3 / 5)
    assert m["t2i_R@2"] == pytest.approx(4 / 5)
    assert m["t2i_R@5"] == 1.0
    assert m["t2i_mean_rank"] == pytest.approx(8 / 5)
    assert m["t2i_median_rank"] == 1.0
    assert (m["n_images"], m["n_texts"], m["n_images_without_text"]) == (3, 5, 0)
    assert all(isinstance(v, (int, float)) and not isinstance(v, np.generic) for v in m.values())


def test_torch_inputs_match_numpy():
    expected = retrieval_metrics(SIM, T2I)
    assert retrieval_metrics(torch.tensor(SIM), torch.tensor(T2I)) == expected
    as_bf16 = retrieval_metrics(torch.tensor(SIM, dtype=torch.bfloat16), torch.tensor(T2I))
    assert as_bf16["t2i_R@1"] == expected["t2i_R@1"]


def test_constant_model_gets_the_worst_rank():
    m = retrieval_metrics(np.zeros((4, 4)), [0, 1, 2, 3], ks=(1, 3, 4))
    assert m["i2t_R@1"] == m["t2i_R@1"] == m["i2t_R@3"] == 0.0
    assert m["i2t_R@4"] == m["t2i_R@4"] == 1.0
    assert m["i2t_mean_rank"] == m["t2i_median_rank"] == 4.0
    assert accuracy_top1(np.ones((4, 4)), [0, 1, 2, 3]) == 0.0


def test_tie_with_a_wrong_candidate_counts_against_the_model():
    i2t, t2i, _ = retrieval_ranks(np.array([[0.5, 0.5], [0.1, 0.9]]), [0, 1])
    assert i2t.tolist() == [2, 1]  # image 0: wrong text 1 ties with its own text
    assert t2i.tolist() == [1, 1]


def test_tie_between_two_correct_texts_does_not_hurt():
    i2t, t2i, _ = retrieval_ranks(np.array([[0.5, 0.5, 0.4], [0.1, 0.2, 0.9]]), [0, 0, 1])
    assert i2t.tolist() == [1, 1]
    assert t2i.tolist() == [1, 1, 1]


def test_images_without_text_are_left_out_of_i2t_and_counted():
    sim = np.array([[0.9, 0.1], [0.95, 0.95], [0.2, 0.8]])  # image 1 has no text but scores highest
    m = retrieval_metrics(sim, [0, 2], ks=(1,))
    assert m["n_images_without_text"] == 1 and m["n_images"] == 3
    assert m["i2t_R@1"] == 1.0  # image 1 is not a query
    assert m["t2i_R@1"] == 0.0  # but it still competes as a candidate image


@pytest.mark.parametrize("sim, t2i, match", [
    (np.zeros(3), [0], "2-D"),
    (np.zeros((2, 3)), [0, 1], "one entry per text"),
    (np.zeros((2, 2)), [0, 2], "image indices"),
    (np.array([[np.nan, 0.0], [0.0, 0.0]]), [0, 1], "NaN"),
    (np.zeros((2, 0)), [], "no texts"),
])
def test_bad_inputs_raise(sim, t2i, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(sim, np.asarray(t2i, dtype=np.int64))


# 4 images; image 0 owns texts 0-1 (its first text, 0, is the one paired in batches).
BATCH_T2I = [0, 0, 1, 2, 3]
BATCH_SIM = np.array([
    [0.9, 0.0, 0.1, 0.95, 0.0],  # beaten by text 3 only when text 3 is in its batch
    [0.2, 0.0, 0.5, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.4, 0.4],   # tie with text 4 -> wrong whenever text 4 is in its batch
    [0.0, 0.0, 0.0, 0.1, 0.3],
])


@pytest.mark.parametrize("batch_size, expected", [(1, 1.0), (2, 0.75), (3, 0.75), (4, 0.5), (64, 0.5)])
def test_in_batch_accuracy_consecutive_batches(batch_size, expected):
    assert in_batch_accuracy(BATCH_SIM, BATCH_T2I, batch_size) == pytest.approx(expected)


def test_in_batch_accuracy_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        in_batch_accuracy(BATCH_SIM, BATCH_T2I, 0)


def test_accuracy_top1_among_all_texts():
    # image 0 loses to text 3, image 2 ties with text 4: 2 of 4 right
    assert accuracy_top1(BATCH_SIM, BATCH_T2I) == 0.5
    assert accuracy_top1(SIM, T2I) == pytest.approx(2 / 3)


def test_cosine_stats_exact():
    sim = np.array([[0.8, 0.2, 0.0], [0.4, 0.6, 1.0]])
    s = cosine_stats(sim, [0, 1, 1])  # matched 0.8 0.6 1.0; unmatched 0.4 0.2 0.0
    assert s["matched_mean"] == pytest.approx(0.8)
    assert s["unmatched_mean"] == pytest.approx(0.2)
    assert s["matched_std"] == pytest.approx(np.sqrt(0.08 / 3))
    assert s["unmatched_std"] == pytest.approx(np.sqrt(0.08 / 3))
    assert s["matched_median"] == pytest.approx(0.8)
    assert s["unmatched_median"] == pytest.approx(0.2)
    assert s["cosine_gap"] == pytest.approx(0.6)
    assert (s["n_matched"], s["n_unmatched"], s["unmatched_median_sampled"]) == (3, 3, False)
    matched, unmatched = matched_unmatched(sim, [0, 1, 1])
    assert matched.tolist() == [0.8, 0.6, 1.0]
    assert sorted(unmatched.tolist()) == [0.0, 0.2, 0.4]


def test_cosine_stats_single_image_has_no_unmatched():
    s = cosine_stats(np.array([[0.3, 0.5]]), [0, 0])
    assert s["matched_mean"] == pytest.approx(0.4)
    assert s["unmatched_mean"] is None and s["cosine_gap"] is None and s["n_unmatched"] == 0


def test_unmatched_sample_is_deterministic_and_never_matched():
    rng = np.random.default_rng(1)
    n = 60
    sim = rng.random((n, 2 * n))
    t2i = np.repeat(np.arange(n), 2)
    sim[t2i, np.arange(2 * n)] = 10.0  # matched pairs stand out
    _, first = matched_unmatched(sim, t2i, max_unmatched=500, seed=3)
    _, again = matched_unmatched(sim, t2i, max_unmatched=500, seed=3)
    assert first.shape == (500,) and np.array_equal(first, again) and first.max() < 1.0
    s = cosine_stats(sim, t2i, max_unmatched=500)
    mask = np.ones_like(sim, dtype=bool)
    mask[t2i, np.arange(2 * n)] = False
    assert s["unmatched_median_sampled"] is True
    assert s["unmatched_mean"] == pytest.approx(sim[mask].mean())  # means and stds stay exact
    assert s["unmatched_std"] == pytest.approx(sim[mask].std())
    assert s["unmatched_median"] == pytest.approx(np.median(sim[mask]), abs=0.1)


def test_recall_curve_is_monotone_and_matches_metrics():
    curve = recall_curve(SIM, T2I)
    assert curve["k"] == list(range(1, 51))
    for way in ("i2t", "t2i"):
        assert all(a <= b for a, b in zip(curve[way], curve[way][1:]))
        assert curve[way][-1] == 1.0
    m = retrieval_metrics(SIM, T2I, ks=(1, 2))
    assert curve["i2t"][:2] == [m["i2t_R@1"], m["i2t_R@2"]]
    assert curve["t2i"][:2] == [m["t2i_R@1"], m["t2i_R@2"]]


def _brute_force_ranks(sim, t2i):
    t2i = np.asarray(t2i)
    i2t = []
    for i in range(sim.shape[0]):
        own = t2i == i
        if own.any():
            i2t.append(1 + int((sim[i, ~own] >= sim[i, own].max()).sum()))
    t2i_ranks = [1 + int(sum(sim[i, j] >= sim[t2i[j], j] for i in range(sim.shape[0]) if i != t2i[j]))
                 for j in range(sim.shape[1])]
    return i2t, t2i_ranks


def test_block_processing_matches_brute_force(monkeypatch):
    monkeypatch.setattr(retrieval, "BLOCK_ELEMENTS", 7)  # many small row blocks
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(13, 20)).astype(np.float32)  # few distinct values: many ties
    t2i = rng.integers(0, 12, size=20)  # image 12 (and maybe others) without text
    i2t, t2i_ranks, n_without = retrieval_ranks(sim, t2i)
    expected_i2t, expected_t2i = _brute_force_ranks(sim, t2i)
    assert i2t.tolist() == expected_i2t and t2i_ranks.tolist() == expected_t2i
    assert n_without == 13 - len(set(t2i.tolist()))
