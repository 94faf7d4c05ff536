"""The functional loss checks its arguments once per distinct set and keeps the
result: a cached check must never let through what the full check rejects."""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import _validate


def small_batch():
    scores = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 0.5]], dtype=torch.float64)
    grades = torch.tensor([[0, 1], [1, 0], [2, 1]])
    return scores, grades


def test_a_cached_k_tuple_does_not_admit_equal_non_int_tuples():
    scores, grades = small_batch()
    se.pairwise_rank_loss(scores, grades, (4, 4))  # (4, 4) is now cached
    for bad in ((4.0, 4), (4, 4.0)):
        with pytest.raises(ValueError, match="num_grades must be an int or a sequence of ints"):
            se.pairwise_rank_loss(scores, grades, bad)
    with pytest.raises(ValueError, match=r"num_grades\[1\] = True: every task needs K >= 2"):
        se.pairwise_rank_loss(scores, grades, (4, True))


def test_cached_and_full_checks_agree():
    for ks, T in [((4, 4), 2), (3, 5), ((5, 4, 4), 3)]:
        assert _validate.num_grades_tuple(ks, T) == _validate._num_grades_tuple(ks, T)
        assert _validate.num_grades_tuple(list(ks) if isinstance(ks, tuple) else ks, T) == \
            _validate._num_grades_tuple(ks, T)
    with pytest.raises(ValueError, match="num_grades has 2 entries but scores has T = 3"):
        _validate.num_grades_tuple((4, 4), 3)


def test_a_rejected_option_is_rejected_on_every_call():
    scores, grades = small_batch()
    for _ in range(3):
        with pytest.raises(ValueError, match=r"hard_fraction must be in \[0, 1\], got 2.0"):
            se.pairwise_rank_loss(scores, grades, 3, max_pairs=2, hard_fraction=2.0, generator=0)
        with pytest.raises(ValueError, match=r"task_reduction must be one of"):
            se.pairwise_rank_loss(scores, grades, 3, task_reduction="max")


def test_options_that_differ_only_in_type_are_checked_apart():
    scores, grades = small_batch()
    se.pairwise_rank_loss(scores, grades, 3, max_pairs=2, generator=0)
    with pytest.raises(ValueError, match="max_pairs must be None"):
        se.pairwise_rank_loss(scores, grades, 3, max_pairs=2.0, generator=0)
    with pytest.raises(ValueError, match="max_pairs must be None"):
        se.pairwise_rank_loss(scores, grades, 3, max_pairs=True, generator=0)


def test_repeated_calls_give_the_first_calls_result():
    scores, grades = small_batch()
    first = se.pairwise_rank_loss(scores, grades, 3, margin_base=0.7, lambda_sim=0.5)
    for _ in range(3):
        assert torch.equal(se.pairwise_rank_loss(scores, grades, 3, margin_base=0.7, lambda_sim=0.5), first)
    assert not torch.equal(se.pairwise_rank_loss(scores, grades, 3, margin_base=0.9, lambda_sim=0.5), first)
