"""pairwise_rank_loss's registration: autograd, fake tensors, opcheck, gradcheck,
torch.compile, thread-count independence, and second-order gradients (raised,
never wrong)."""
import warnings

import pytest
import torch

import spinerank_ext as se

from conftest import TASK_KS, make_batch, op_args, spread_scores

ops = torch.ops.spinerank_ext


SECOND_ORDER = r"second-order gradients are not supported by pairwise_rank_loss"


class TestRegistration:
    """Autograd, fake-tensor, opcheck, gradcheck, torch.compile and thread-count behaviour."""

    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("mining", [None, 8])
    def test_gradcheck(self, pair_fn, reduction, mining):
        ks = (4, 3, 5)
        _, grades = make_batch(9, ks, seed=1)
        scores = spread_scores(9, 3, 1).div(3).requires_grad_()
        fn = lambda s: se.pairwise_rank_loss(s, grades, ks, pair_fn=pair_fn, task_reduction=reduction,  # noqa: E731
                                             max_pairs=mining, hard_fraction=0.5, generator=4)
        assert torch.autograd.gradcheck(fn, (scores,), eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("mining", [False, True])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_opcheck_forward(self, mining, reduction):
        scores, grades = make_batch(20, TASK_KS, seed=2)
        seed = torch.tensor(42) if mining else None
        args = op_args(scores.requires_grad_(), grades, TASK_KS, max_pairs=30 if mining else -1, seed=seed,
                       reduction=reduction)
        torch.library.opcheck(ops.pairwise_rank_loss.default, args)

    def test_opcheck_backward_and_mined_pairs(self):
        pair_grad = torch.randn(7, 3, dtype=torch.float64)
        torch.library.opcheck(ops.pairwise_rank_loss_backward.default, (torch.tensor(0.5, dtype=torch.float64), pair_grad))
        torch.library.opcheck(ops.pairwise_rank_loss_backward.default, (torch.rand(3, dtype=torch.float64), pair_grad))
        scores, grades = make_batch(20, TASK_KS, seed=3)
        torch.library.opcheck(ops.mined_pairs.default, (scores, grades, list(TASK_KS), 0.5, 1.5, 25, 0.7, torch.tensor(1)))

    def test_fake_tensor_shapes(self):
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            scores = torch.empty(13, 11)
            grades = torch.empty(13, 11, dtype=torch.long)
            loss, pair_grad, counts = ops.pairwise_rank_loss(*op_args(scores, grades, TASK_KS, reduction="none"))
            assert loss.shape == (11,) and pair_grad.shape == (13, 11) and counts.shape == (11, 2)
            assert counts.dtype == torch.long
            with pytest.raises(ValueError, match="num_grades has 3 entries"):
                ops.pairwise_rank_loss(*op_args(scores, grades, (4, 4, 4)))

    @pytest.mark.parametrize("dynamic", [False, True])
    def test_compile_fullgraph_forward_and_backward(self, dynamic):
        ks = TASK_KS
        loss_fn = se.PairwiseRankLoss(ks)

        def step(scores, grades):
            return loss_fn(scores * 1.5, grades)

        compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
        for B in (16, 24):
            scores, grades = make_batch(B, ks, seed=B, dtype=torch.float32)
            x, xc = scores.clone().requires_grad_(), scores.clone().requires_grad_()
            eager = step(x, grades)
            eager.backward()
            out = compiled(xc, grades)
            out.backward()
            torch.testing.assert_close(out, eager)
            torch.testing.assert_close(xc.grad, x.grad)

    def test_compile_fullgraph_with_mining(self):
        def step(scores, grades):
            return se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=40, generator=7, task_reduction="none").sum()

        compiled = torch.compile(step, fullgraph=True)
        scores, grades = make_batch(30, TASK_KS, seed=8)
        x, xc = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        step(x, grades).backward()
        compiled(xc, grades).backward()
        torch.testing.assert_close(xc.grad, x.grad)

    @pytest.mark.parametrize("generator", [5, None])
    def test_compile_fullgraph_module_with_mining(self, generator):
        eager = se.PairwiseRankLoss(TASK_KS, max_pairs=40, generator=generator)
        compiled_fn = se.PairwiseRankLoss(TASK_KS, max_pairs=40, generator=generator)
        compiled = torch.compile(compiled_fn, fullgraph=True)
        scores, grades = make_batch(30, TASK_KS, seed=12)
        for step in range(3):
            if generator is None:
                torch.manual_seed(step)
            a = eager(scores, grades)
            if generator is None:
                torch.manual_seed(step)
            b = compiled(scores, grades)
            if generator is not None:  # same seed stream, so the same pairs
                torch.testing.assert_close(a, b)
            assert torch.isfinite(b)
        if generator is not None:
            assert int(compiled_fn.mining_step) == 3

    def test_results_do_not_depend_on_thread_count(self):
        before = torch.get_num_threads()
        # Large enough to use the thread pool (> 2^15 pairs over all tasks).
        scores, grades = make_batch(300, TASK_KS, seed=9, dtype=torch.float32)
        results = []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for kw in ({}, dict(max_pairs=500, generator=3)):
                    x = scores.clone().requires_grad_()
                    loss, counts = se.pairwise_rank_loss(x, grades, TASK_KS, return_counts=True, task_reduction="none", **kw)
                    loss.sum().backward()
                    results.append((loss, x.grad, counts))
        finally:
            torch.set_num_threads(before)
        for one, two in zip(results[:2], results[2:]):
            for a, b in zip(one, two):
                assert torch.equal(a, b)

    @pytest.mark.parametrize("mining", [None, 6])
    def test_double_backward_raises_instead_of_returning_a_wrong_hessian(self, mining):
        # The saved per-sample gradient is a constant to autograd, so a second
        # derivative through it would silently be zero: it must raise instead.
        scores, grades = make_batch(8, (4, 3), seed=10)
        x = scores.clone().requires_grad_()
        loss = se.pairwise_rank_loss(x, grades, (4, 3), max_pairs=mining, generator=1)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        assert g.requires_grad
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.sum(), x)
        # A gradient penalty: the penalty's gradient would silently lack this term.
        w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        scores_w = x * w
        (g,) = torch.autograd.grad(se.pairwise_rank_loss(scores_w, grades, (4, 3)), scores_w, create_graph=True)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            (se.pairwise_rank_loss(scores_w, grades, (4, 3)) + g.pow(2).sum()).backward()
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.pow(2).sum(), w)

    def test_double_backward_through_the_upstream_gradient_raises_too(self):
        # d(grad)/d(upstream weight) would be lost as well: loss * c, differentiated in c.
        scores, grades = make_batch(8, (4,), seed=11)
        x = scores.clone().requires_grad_()
        c = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(se.pairwise_rank_loss(x, grades, 4) * c, x, create_graph=True)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.sum(), c)

    def test_gradgradcheck_raises(self):
        scores = spread_scores(7, 2, 3).requires_grad_()
        _, grades = make_batch(7, (4, 3), seed=3)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.gradgradcheck(lambda s: se.pairwise_rank_loss(s, grades, (4, 3)), (scores,))

    @pytest.mark.parametrize("mining", [None, 10])
    def test_first_order_gradient_is_the_same_with_create_graph(self, mining):
        scores, grades = make_batch(12, TASK_KS, seed=12)
        x = scores.clone().requires_grad_()
        kw = dict(max_pairs=mining, generator=3, task_reduction="none")
        weights = torch.rand(len(TASK_KS), dtype=torch.float64)
        (plain,) = torch.autograd.grad((se.pairwise_rank_loss(x, grades, TASK_KS, **kw) * weights).sum(), x)
        (graph,) = torch.autograd.grad((se.pairwise_rank_loss(x, grades, TASK_KS, **kw) * weights).sum(), x,
                                       create_graph=True)
        assert torch.equal(graph.detach(), plain)
        # The reference's gradient (autograd through the plain formula).
        xr = scores.clone().requires_grad_()
        (expected,) = torch.autograd.grad((se.reference.pairwise_rank_loss(
            xr, grades, TASK_KS, task_reduction="none", pairs=se.mined_pairs(scores, grades, TASK_KS, max_pairs=mining,
                                                                              generator=3) if mining else None)
            * weights).sum(), xr)
        torch.testing.assert_close(plain, expected, rtol=1e-10, atol=1e-12)
        # Using the recorded gradient without differentiating it again is fine.
        x.grad = None
        loss = se.pairwise_rank_loss(x, grades, TASK_KS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # backward(create_graph=True)'s reference-cycle warning
            loss.backward(create_graph=True)
        assert torch.isfinite(x.grad).all() and torch.equal(x.grad.detach(), torch.autograd.grad(
            se.pairwise_rank_loss(x, grades, TASK_KS), x)[0])
        x.grad = None
