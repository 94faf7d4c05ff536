"""The CUDA backend's sorted all-pairs path without a GPU.

For large batches the CUDA op computes the squared-hinge loss from
device-generic ATen ops (sort, cumsum, gather, scatter) and one per-row pass
(csrc/sorted_pairs_generic.h, sorted_hinge_row in csrc/sorted_pairs.h). The
private op ``_sorted_hinge_generic`` runs exactly that code on the CPU, with
the per-row pass as a loop instead of a kernel: here it is checked against the
reference and the CPU kernels. tests/test_cuda.py runs the CUDA op itself on
a GPU.
"""
import itertools
import math

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS, make_batch

ops = torch.ops.spinerank_ext
DEFAULTS = dict(scale=10.0, margin_base=0.5, margin_scale=1.5, lambda_dis=1.0, lambda_sim=0.25,
                severity_weight=True, task_reduction="mean")


def generic(scores, grades, ks, **kw):
    a = {**DEFAULTS, **kw}
    return ops._sorted_hinge_generic(scores, grades, list(ks), a["scale"], a["margin_base"], a["margin_scale"],
                                     a["lambda_dis"], a["lambda_sim"], a["severity_weight"], a["task_reduction"])


def cpu_op(scores, grades, ks, **kw):
    a = {**DEFAULTS, **kw}
    return ops.pairwise_rank_loss(scores, grades, list(ks), a["scale"], a["margin_base"], a["margin_scale"],
                                  a["lambda_dis"], a["lambda_sim"], a["severity_weight"], "squared_hinge", 1.0,
                                  -1, 0.7, a["task_reduction"], None)


def relative_error(actual, expected):
    if expected.numel() == 0:
        return 0.0
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1e-300)


OPTIONS = [dict(task_reduction=r, severity_weight=w) for r, w in itertools.product(("mean", "sum", "none"), (True, False))]


@pytest.mark.parametrize("B", [0, 1, 2, 3, 17, 64])
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
def test_matches_the_reference(B, kw):
    scores, grades = make_batch(B, TASK_KS, seed=B, missing=0.3)
    x = scores.clone().requires_grad_()
    expected, expected_counts = ref.pairwise_rank_loss(x, grades, TASK_KS, return_counts=True, **kw)
    expected.sum().backward()
    loss, grad, counts = generic(scores, grades, TASK_KS, **kw)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(counts, expected_counts)


@pytest.mark.parametrize("B", [300, 1500])
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
def test_agrees_with_the_cpu_kernels_within_1e_10(B, ties, kw):
    scores, grades = make_batch(B, TASK_KS, seed=B + ties, missing=0.2, ties=ties)
    scores = scores * 3.0 + 1e3  # an offset: the prefix sums must not lose digits to cancellation
    loss, grad, counts = generic(scores, grades, TASK_KS, **kw)
    expected = cpu_op(scores, grades, TASK_KS, **kw)
    assert relative_error(loss, expected[0]) <= 1e-10
    assert relative_error(grad, expected[1]) <= 1e-10
    assert torch.equal(counts, expected[2])


def test_other_parameters_float32_and_empty_tasks():
    ks = (2, 3, 5, 4)
    scores, grades = make_batch(200, ks, seed=5, missing=0.1)
    grades[:, 1] = -1  # no sample
    grades[1:, 3] = -1  # one sample
    kw = dict(lambda_dis=0.3, lambda_sim=2.0, scale=4.0, margin_base=0.1, margin_scale=3.0, task_reduction="none")
    loss, grad, counts = generic(scores.float(), grades, ks, **kw)
    expected = cpu_op(scores.float(), grades, ks, **kw)
    assert loss.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(loss, expected[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected[1], rtol=1e-6, atol=1e-6)
    assert torch.equal(counts, expected[2])
    assert loss[1].item() == loss[3].item() == 0.0 and (grad[:, 1] == 0).all() and (grad[:, 3] == 0).all()


@pytest.mark.parametrize("bad", ["grade", "nan", "inf"])
def test_a_bad_value_makes_its_task_nan_as_on_cuda(bad):
    # The CUDA kernels cannot raise without a host synchronisation: the task's
    # loss and gradient become NaN, the other tasks are untouched.
    scores, grades = make_batch(50, (4, 3, 5), seed=9, missing=0.1)
    grades[3, 1] = 2
    clean_grades = grades.clone()
    if bad == "grade":
        grades[3, 1] = 3  # K_1 = 3
    else:
        scores[3, 1] = math.nan if bad == "nan" else math.inf
    loss, grad, _ = generic(scores, grades, (4, 3, 5), task_reduction="none")
    clean = cpu_op(scores.nan_to_num(0.0, 0.0, 0.0), clean_grades, (4, 3, 5), task_reduction="none")
    assert math.isnan(loss[1].item()) and grad[:, 1].isnan().all()
    torch.testing.assert_close(loss[[0, 2]], clean[0][[0, 2]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad[:, [0, 2]], clean[1][:, [0, 2]], rtol=1e-12, atol=1e-12)
    assert math.isnan(generic(scores, grades, (4, 3, 5))[0].item())  # and the mean over tasks


def test_missing_rows_may_hold_any_score():
    scores, grades = make_batch(40, (4, 4), seed=2, missing=0.3)
    noisy = scores.clone()
    noisy[grades[:, 0] < 0, 0] = math.nan
    noisy[grades[:, 1] < 0, 1] = -math.inf
    for a, b in zip(generic(noisy, grades, (4, 4)), generic(scores, grades, (4, 4))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck(reduction):
    scores, grades = make_batch(40, TASK_KS, seed=4)
    a = {**DEFAULTS, "task_reduction": reduction}
    torch.library.opcheck(ops._sorted_hinge_generic.default,
                          (scores, grades, list(TASK_KS), a["scale"], a["margin_base"], a["margin_scale"],
                           a["lambda_dis"], a["lambda_sim"], a["severity_weight"], reduction),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("B", [5, 64, 300])
def test_groups_are_the_grades_present_not_k(B):
    # Grades spread over a large K (only 4 values occur): groups are sized by
    # the grades present (at most min(K, B)), gaps use the grade values.
    K = 10**6
    g = torch.Generator().manual_seed(B)
    scores = torch.rand(B, 2, generator=g, dtype=torch.float64) * 10
    grades = torch.tensor([0, 17, K // 2, K - 1])[torch.randint(0, 4, (B, 2), generator=g)]
    grades[0, 1] = -1
    x = scores.clone().requires_grad_()
    expected, expected_counts = ref.pairwise_rank_loss(x, grades, (K, K), return_counts=True, task_reduction="none")
    expected.sum().backward()
    loss, grad, counts = generic(scores, grades, (K, K), task_reduction="none")
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(counts, expected_counts)


def test_more_distinct_bad_grades_than_k_make_only_their_task_nan():
    # K = 2 but 40 distinct (bad) grades: more groups than the min(K, B) the
    # path sizes for; they are merged (no out-of-bounds write) and the task is NaN.
    scores, grades = make_batch(40, (2, 3), seed=6, missing=0.0)
    clean = cpu_op(scores, grades, (2, 3), task_reduction="none")
    grades[:, 0] = torch.arange(40)
    loss, grad, _ = generic(scores, grades, (2, 3), task_reduction="none")
    assert math.isnan(loss[0].item()) and grad[:, 0].isnan().all()
    torch.testing.assert_close(loss[1], clean[0][1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad[:, 1], clean[1][:, 1], rtol=1e-12, atol=1e-12)
