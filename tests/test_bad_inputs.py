"""Every bad input raises an error whose message names the problem."""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS


def good(B=6, T=3, K=4):
    return torch.rand(B, T), torch.randint(0, K, (B, T))


CASES = [
    # (description, scores, grades, num_grades, kwargs, exception, message pattern)
    ("1-D scores", torch.rand(6), torch.zeros(6, dtype=torch.long), 4, {}, ValueError, r"scores must have shape \(B, T\), got shape \(6,\)"),
    ("3-D scores", torch.rand(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long), 4, {}, ValueError, r"shape \(B, T\), got shape \(2, 3, 4\)"),
    ("B mismatch", torch.rand(6, 3), torch.zeros(5, 3, dtype=torch.long), 4, {}, ValueError, r"grades must have the shape of scores \(6, 3\), got \(5, 3\)"),
    ("T mismatch", torch.rand(6, 3), torch.zeros(6, 2, dtype=torch.long), 4, {}, ValueError, r"shape of scores \(6, 3\), got \(6, 2\)"),
    ("float grades", torch.rand(6, 3), torch.zeros(6, 3), 4, {}, ValueError, r"grades must be an integer tensor .* got torch.float32"),
    ("bool grades", torch.rand(6, 3), torch.zeros(6, 3, dtype=torch.bool), 4, {}, ValueError, r"integer tensor .* got torch.bool"),
    ("integer scores", torch.zeros(6, 3, dtype=torch.long), torch.zeros(6, 3, dtype=torch.long), 4, {}, ValueError, r"scores must be a floating tensor"),
    ("num_grades length", *good(), (4, 4), {}, ValueError, r"num_grades has 2 entries but scores has T = 3 tasks"),
    ("K < 2", *good(), (4, 1, 4), {}, ValueError, r"num_grades\[1\] = 1: every task needs K >= 2"),
    ("num_grades type", *good(), "4", {}, ValueError, r"num_grades must be an int or a sequence of ints"),
    ("pair_fn", *good(), 4, dict(pair_fn="hinge"), ValueError, r"pair_fn must be one of .* got 'hinge'"),
    ("task_reduction", *good(), 4, dict(task_reduction="max"), ValueError, r"task_reduction must be one of .* got 'max'"),
    ("sigma", *good(), 4, dict(pair_fn="logistic", sigma=0.0), ValueError, r"sigma must be > 0, got 0.0"),
    ("max_pairs 0", *good(), 4, dict(max_pairs=0), ValueError, r"max_pairs must be None \(all pairs\) or an int >= 1, got 0"),
    ("max_pairs float", *good(), 4, dict(max_pairs=10.0), ValueError, r"max_pairs must be None .* got 10.0"),
    ("hard_fraction", *good(), 4, dict(max_pairs=5, hard_fraction=1.5), ValueError, r"hard_fraction must be in \[0, 1\], got 1.5"),
    ("devices", torch.rand(6, 3, device="meta"), torch.zeros(6, 3, dtype=torch.long), 4, {}, ValueError, r"same device, got meta and cpu"),
    ("not a tensor", [[0.1, 0.2]], torch.zeros(1, 2, dtype=torch.long), 4, {}, TypeError, r"scores and grades must be tensors, got list"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments(case):
    _, scores, grades, ks, kw, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        se.pairwise_rank_loss(scores, grades, ks, **kw)
    with pytest.raises(exc, match=pattern):
        ref.pairwise_rank_loss(scores, grades, ks, **kw)


def test_bad_module_parameters_fail_at_construction():
    with pytest.raises(ValueError, match="pair_fn must be one of"):
        se.PairwiseRankLoss(4, pair_fn="svm")
    with pytest.raises(ValueError, match="hard_fraction must be in"):
        se.PairwiseRankLoss(4, max_pairs=10, hard_fraction=-0.1)
    with pytest.raises(ValueError, match="num_grades has 3 entries but scores has T = 2"):
        se.PairwiseRankLoss((4, 4, 4))(*good(T=2))


@pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
def test_grade_out_of_range_names_task_and_value(impl):
    scores, grades = good(B=6, T=11, K=3)
    grades[4, 3] = 3  # task 3 has K = 3
    with pytest.raises(ValueError, match=r"grade 3 at row 4, task 3 is out of range: task 3 has K = 3"):
        impl(scores, grades, TASK_KS)


@pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_name_row_and_task(impl, bad):
    scores, grades = good()
    scores[2, 1] = bad
    with pytest.raises(ValueError, match=rf"scores must be finite: got {bad} at row 2, task 1"):
        impl(scores, grades, 4)


def test_non_finite_score_of_a_missing_grade_is_ignored():
    scores, grades = good()
    scores[2, 1], grades[2, 1] = float("nan"), -1
    assert torch.isfinite(se.pairwise_rank_loss(scores, grades, 4))


def test_direct_op_calls_are_checked_too():
    ops = torch.ops.spinerank_ext
    scores, grades = good()
    args = [scores, grades, [4, 4, 4], 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0, -1, 0.7, "mean", None]
    bad = list(args)
    bad[1] = grades[:5]
    with pytest.raises(ValueError, match="grades must have the shape of scores"):
        ops.pairwise_rank_loss(*bad)
    bad = list(args)
    bad[2] = [4, 4]
    with pytest.raises(ValueError, match="num_grades has 2 entries but scores has T = 3 tasks"):
        ops.pairwise_rank_loss(*bad)
    bad = list(args)
    bad[9] = "hinge"
    with pytest.raises(ValueError, match="pair_fn must be 'squared_hinge' or 'logistic', got 'hinge'"):
        ops.pairwise_rank_loss(*bad)
    bad = list(args)
    bad[11] = 10  # mining without a seed
    with pytest.raises(ValueError, match="mining .* needs seed"):
        ops.pairwise_rank_loss(*bad)
    with pytest.raises(ValueError, match="mined_pairs needs max_pairs >= 1"):
        ops.mined_pairs(scores, grades, [4, 4, 4], 0.5, 1.5, 0, 0.7, torch.tensor(0))


def test_mined_pairs_needs_max_pairs():
    with pytest.raises(ValueError, match="mined_pairs needs max_pairs"):
        se.mined_pairs(*good(), 4, max_pairs=None)
