"""The sorted all-pairs path (squared hinge, O(G^2 n log n)) against the reference and the direct path.

The op picks the path per task from its number of valid samples;
``torch.ops.spinerank_ext._sorted_pairs_min_n`` moves that threshold so that
both paths run on the same input.
"""
import itertools

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS, make_batch, op_setting
from test_op_registration import op_args, spread_scores

ops = torch.ops.spinerank_ext
SORTED, DIRECT = 0, 2**62  # thresholds that force one path for every task


def path(threshold):
    return op_setting(ops._sorted_pairs_min_n, threshold)


def loss_and_grad(fn, scores, grades, ks, **kw):
    x = scores.detach().clone().requires_grad_()
    loss, counts = fn(x, grades, ks, return_counts=True, **kw)
    loss.sum().backward()
    return loss.detach(), x.grad, counts


def assert_relative(actual, expected, rtol):
    """|actual - expected| <= rtol * max|expected|: elementwise for a scalar, normwise for a gradient."""
    if expected.numel() == 0:
        return
    error = (actual - expected).abs().max().item()
    assert error <= rtol * expected.abs().max().item(), (error, expected.abs().max().item())


def test_threshold_op_sets_and_returns_the_previous_value():
    default = ops._sorted_pairs_min_n(-1)
    assert default == 384
    assert ops._sorted_pairs_min_n(7) == default
    assert ops._sorted_pairs_min_n(-1) == 7
    assert ops._sorted_pairs_min_n(default) == 7


OPTIONS = [dict(task_reduction=r, severity_weight=w) for r, w in itertools.product(("mean", "sum", "none"), (True, False))]


@pytest.mark.parametrize("B", [0, 1, 2, 3, 17, 64])
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
def test_sorted_path_matches_reference(B, kw):
    scores, grades = make_batch(B, TASK_KS, seed=B, missing=0.3)
    expected = loss_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
    with path(SORTED):
        loss, grad, counts = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
    torch.testing.assert_close(loss, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected[1], rtol=1e-12, atol=1e-12)
    assert torch.equal(counts, expected[2])


def test_sorted_path_matches_reference_with_other_parameters_and_float32():
    scores, grades = make_batch(80, (2, 3, 5, 4), seed=5, missing=0.1)
    kw = dict(lambda_dis=0.3, lambda_sim=2.0, scale=4.0, margin_base=0.1, margin_scale=3.0)
    expected = loss_and_grad(ref.pairwise_rank_loss, scores, grades, (2, 3, 5, 4), **kw)
    with path(SORTED):
        loss, grad, _ = loss_and_grad(se.pairwise_rank_loss, scores.float(), grades, (2, 3, 5, 4), **kw)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(loss, expected[0].float(), rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected[1].float(), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("B", [300, 1500])
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
def test_both_paths_agree_within_1e_10(B, ties, kw):
    scores, grades = make_batch(B, TASK_KS, seed=B + ties, missing=0.2, ties=ties)
    # A constant offset and a wide spread: the sums must not lose digits to cancellation.
    scores = scores * 3.0 + 1e3
    with path(DIRECT):
        direct = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
    with path(SORTED):
        fast = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
    for a, b in zip(fast[0].reshape(-1), direct[0].reshape(-1)):
        assert_relative(a, b, 1e-10)
    assert_relative(fast[1], direct[1], 1e-10)
    assert torch.equal(fast[2], direct[2])


def test_missing_grades_and_empty_tasks_on_both_paths():
    scores, grades = make_batch(400, (4, 3, 5), seed=8, missing=0.5)
    grades[:, 1] = -1  # a task without samples
    grades[1:, 2] = -1  # a task with one sample
    with path(DIRECT):
        direct = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 3, 5), task_reduction="none")
    with path(SORTED):
        fast = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 3, 5), task_reduction="none")
    assert fast[0][1:].tolist() == [0.0, 0.0] and fast[2][1:].tolist() == [[0, 0], [0, 0]]
    assert_relative(fast[0], direct[0], 1e-10)
    assert_relative(fast[1], direct[1], 1e-10)


def test_logistic_always_takes_the_direct_path():
    scores, grades = make_batch(300, TASK_KS, seed=6)
    with path(DIRECT):
        direct = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, pair_fn="logistic")
    with path(SORTED):
        other = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, pair_fn="logistic")
    for a, b in zip(direct, other):
        assert torch.equal(a, b)


def test_the_default_threshold_splits_tasks_by_their_valid_samples():
    # Task 0 has 450 valid samples (sorted path), task 1 only 100 (direct path).
    scores, grades = make_batch(450, (4, 4), seed=7, missing=0.0)
    grades[100:, 1] = -1
    default = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
    with path(SORTED):
        fast = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
    with path(DIRECT):
        direct = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
    assert default[0][0] == fast[0][0] and torch.equal(default[1][:, 0], fast[1][:, 0])
    assert default[0][1] == direct[0][1] and torch.equal(default[1][:, 1], direct[1][:, 1])
    assert not torch.equal(fast[1][:, 0], direct[1][:, 0])  # the paths round differently


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_sorted_path(reduction):
    ks = (4, 3, 5)
    _, grades = make_batch(12, ks, seed=1)
    scores = spread_scores(12, 3, 1).div(3).requires_grad_()
    fn = lambda s: se.pairwise_rank_loss(s, grades, ks, task_reduction=reduction)  # noqa: E731
    with path(SORTED):
        assert torch.autograd.gradcheck(fn, (scores,), eps=1e-6, atol=1e-7)


def test_opcheck_sorted_path():
    scores, grades = make_batch(20, TASK_KS, seed=2)
    with path(SORTED):
        torch.library.opcheck(ops.pairwise_rank_loss.default, op_args(scores.requires_grad_(), grades, TASK_KS))


def test_sorted_path_does_not_depend_on_thread_count():
    scores, grades = make_batch(700, TASK_KS, seed=9, dtype=torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        with path(SORTED):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                results.append(loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, task_reduction="none"))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)
