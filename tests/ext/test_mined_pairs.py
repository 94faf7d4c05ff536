"""mined_pairs and hard-pair mining in the loss (max_pairs): the hard part
against the reference, the random part's counts, determinism and uniformity,
the loss on the kept pairs; the mining table and the buffered selection; bad
input; CUDA against CPU.
"""
import math

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import CUDA, CUDA_TESTS, TASK_KS, fused_loss_and_grad, make_batch, op_setting


def pair_set(pairs_t):
    return {tuple(p) for p in pairs_t.tolist() if p[0] >= 0}


class TestMining:
    """Hard-pair mining: the hard part against the reference, the random part's
    counts, determinism and uniformity, and the loss on the kept pairs."""

    @pytest.mark.parametrize("seed", range(4))
    @pytest.mark.parametrize("max_pairs", [1, 17, 100])
    def test_hard_part_matches_reference(self, seed, max_pairs):
        # Scores on a 0.5 grid: many pairs are equally hard, so the tie rule
        # (smaller i, then smaller j) decides which are kept.
        scores, grades = make_batch(30, TASK_KS, seed=seed)
        kw = dict(max_pairs=max_pairs, hard_fraction=1.0, margin_base=0.5, margin_scale=1.5)
        fused = se.mined_pairs(scores, grades, TASK_KS, **kw)
        expected = ref.mined_pairs(scores, grades, TASK_KS, **kw)
        assert torch.equal(fused, expected)

    @pytest.mark.parametrize("max_pairs", [3, 250, 4000])
    def test_hard_part_matches_reference_through_many_buffer_cuts(self, max_pairs):
        # A few hundred samples on a coarse grid: the selection buffer is cut back
        # many times while most hardness values are tied with the k-th.
        scores, grades = make_batch(260, (4, 5, 2), seed=max_pairs, missing=0.1)
        scores = torch.round(scores) / 4
        kw = dict(max_pairs=max_pairs, hard_fraction=1.0)
        assert torch.equal(se.mined_pairs(scores, grades, (4, 5, 2), **kw),
                           ref.mined_pairs(scores, grades, (4, 5, 2), **kw))

    def test_hard_part_is_kept_with_a_random_part(self):
        scores, grades = make_batch(40, TASK_KS, seed=11)
        max_pairs, hard_fraction = 50, 0.7
        k_hard = math.floor(max_pairs * hard_fraction)
        fused = se.mined_pairs(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=hard_fraction, generator=5)
        hard = ref.mined_pairs(scores, grades, TASK_KS, max_pairs=k_hard, hard_fraction=1.0)
        for t in range(len(TASK_KS)):
            assert pair_set(hard[t]) <= pair_set(fused[t])

    @pytest.mark.parametrize("hard_fraction", [0.0, 0.3, 0.7, 1.0])
    def test_counts_and_validity(self, hard_fraction):
        scores, grades = make_batch(24, TASK_KS, seed=2, missing=0.5)
        max_pairs = 40
        pairs = se.mined_pairs(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=hard_fraction, generator=1)
        _, counts = se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=max_pairs,
                                          hard_fraction=hard_fraction, generator=1, return_counts=True)
        for t in range(len(TASK_KS)):
            n = int((grades[:, t] >= 0).sum())
            kept = pair_set(pairs[t])
            assert len(kept) == min(max_pairs, n * (n - 1) // 2) == int(counts[t].sum())
            for i, j in kept:  # valid, ordered, distinct
                assert i < j and grades[i, t] >= 0 and grades[j, t] >= 0
            listed = [tuple(p) for p in pairs[t].tolist() if p[0] >= 0]
            assert listed == sorted(listed)
            n_similar = sum(int(grades[i, t] == grades[j, t]) for i, j in kept)
            assert counts[t].tolist() == [len(kept) - n_similar, n_similar]

    @pytest.mark.parametrize("hard_fraction", [0.0, 0.5, 0.7, 1.0])
    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    def test_loss_on_kept_pairs_matches_reference(self, hard_fraction, pair_fn):
        scores, grades = make_batch(33, TASK_KS, seed=3)
        kw = dict(max_pairs=60, hard_fraction=hard_fraction)
        pairs = se.mined_pairs(scores, grades, TASK_KS, generator=9, **kw)
        x = scores.clone().requires_grad_()
        loss, counts = se.pairwise_rank_loss(x, grades, TASK_KS, pair_fn=pair_fn, generator=9, return_counts=True, **kw)
        loss.backward()
        xr = scores.clone().requires_grad_()
        loss_r, counts_r = ref.pairwise_rank_loss(xr, grades, TASK_KS, pair_fn=pair_fn, pairs=pairs, return_counts=True)
        loss_r.backward()
        torch.testing.assert_close(loss, loss_r, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
        assert torch.equal(counts, counts_r)

    def test_max_pairs_above_candidates_is_all_pairs(self):
        scores, grades = make_batch(10, TASK_KS, seed=4, missing=0.0)
        a = se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=45, generator=0)
        b = se.pairwise_rank_loss(scores, grades, TASK_KS)
        assert torch.equal(a, b)

    def test_deterministic_under_a_fixed_seed(self):
        scores, grades = make_batch(30, TASK_KS, seed=5)
        kw = dict(max_pairs=50, hard_fraction=0.5)
        a = se.mined_pairs(scores, grades, TASK_KS, generator=123, **kw)
        assert torch.equal(a, se.mined_pairs(scores, grades, TASK_KS, generator=123, **kw))
        assert not torch.equal(a, se.mined_pairs(scores, grades, TASK_KS, generator=124, **kw))
        # A torch.Generator in the same state draws the same pairs; its next draw differs.
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        b = se.mined_pairs(scores, grades, TASK_KS, generator=g1, **kw)
        assert torch.equal(b, se.mined_pairs(scores, grades, TASK_KS, generator=g2, **kw))
        assert not torch.equal(b, se.mined_pairs(scores, grades, TASK_KS, generator=g1, **kw))
        # The loss draws the same pairs as mined_pairs for the same generator state.
        g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
        pairs = se.mined_pairs(scores, grades, TASK_KS, generator=g1, **kw)
        loss = se.pairwise_rank_loss(scores, grades, TASK_KS, generator=g2, **kw)
        assert torch.equal(loss, ref.pairwise_rank_loss(scores, grades, TASK_KS, pairs=pairs))
        # torch's default generator: reproducible under torch.manual_seed.
        torch.manual_seed(0)
        c = se.pairwise_rank_loss(scores, grades, TASK_KS, **kw)
        torch.manual_seed(0)
        assert torch.equal(c, se.pairwise_rank_loss(scores, grades, TASK_KS, **kw))

    def test_module_with_int_seed_is_reproducible_and_varies_per_call(self):
        scores, grades = make_batch(30, TASK_KS, seed=6)
        a, b = (se.PairwiseRankLoss(TASK_KS, max_pairs=40, hard_fraction=0.2, generator=3) for _ in range(2))
        first = a(scores, grades)
        assert torch.equal(first, b(scores, grades))
        second = a(scores, grades)
        assert not torch.equal(first, second)
        # Call k uses seed generator + k, the same pairs as the functional form.
        assert torch.equal(second, se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=40, hard_fraction=0.2,
                                                         generator=4))
        # The stream resumes from a state_dict.
        c = se.PairwiseRankLoss(TASK_KS, max_pairs=40, hard_fraction=0.2, generator=0)
        c.load_state_dict(a.state_dict())
        assert torch.equal(c(scores, grades), a(scores, grades))

    def test_random_part_is_uniform(self):
        # One task, 12 samples, all grades equal: 66 candidate pairs. The 10 hardest
        # (largest |delta|) are fixed; 10 more are drawn from the other 56, so each
        # of those should be kept with probability 10/56.
        n, max_pairs, hard_fraction, draws = 12, 20, 0.5, 3000
        scores = torch.arange(n, dtype=torch.float64).pow(1.5).unsqueeze(1)
        grades = torch.zeros(n, 1, dtype=torch.long)
        hard = pair_set(ref.mined_pairs(scores, grades, 2, max_pairs=10, hard_fraction=1.0)[0])
        freq = torch.zeros(n, n)
        for seed in range(draws):
            kept = pair_set(se.mined_pairs(scores, grades, 2, max_pairs=max_pairs, hard_fraction=hard_fraction,
                                           generator=seed)[0])
            assert hard <= kept and len(kept) == max_pairs
            for i, j in kept - hard:
                freq[i, j] += 1
        rest = [(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in hard]
        p = 10 / 56
        observed = torch.tensor([freq[i, j].item() for i, j in rest]) / draws
        sd = math.sqrt(p * (1 - p) / draws)
        assert (observed - p).abs().max() < 5 * sd  # every pair within 5 standard deviations
        chi2 = (((observed - p) * draws) ** 2 / (p * draws)).sum().item()
        assert chi2 < 2 * len(rest)  # ~55 expected; a biased sampler lands far above

    def test_reference_mining_accepts_every_generator_kind(self):
        scores, grades = make_batch(20, (4, 4), seed=13)
        kw = dict(max_pairs=30, hard_fraction=0.5)
        a = ref.mined_pairs(scores, grades, 4, generator=5, **kw)
        assert torch.equal(a, ref.mined_pairs(scores, grades, 4, generator=5, **kw))
        assert torch.equal(a, ref.mined_pairs(scores, grades, 4, generator=torch.Generator().manual_seed(5), **kw))
        assert ref.mined_pairs(scores, grades, 4, generator=None, **kw).shape == (2, 30, 2)


# ---------------------------------------------------------------------------
# The mining table and the buffered selection

# The hardest pairs are selected from a table of every pair's hardness for
# tasks of at most _mining_table_max_pairs() pairs, by the buffered selection
# above that; both must keep exactly the same pairs.
ops = torch.ops.spinerank_ext
TABLE, BUFFERED = 2**62, 0  # caps that force one selection for every task


def selection(cap):
    return op_setting(ops._mining_table_max_pairs, cap)


def random_mining_case(case):
    """A batch of 2..199 samples, 3 tasks (K = 2..5), scores with many ties,
    float32 on a 0..10 scale or tiny float64 ones; any max_pairs and hard_fraction."""
    g = torch.Generator().manual_seed(case)
    B = int(torch.randint(2, 200, (1,), generator=g))
    ks = [int(k) for k in torch.randint(2, 6, (3,), generator=g)]
    kind = case % 3
    if kind == 0:
        scores = torch.randint(0, 4, (B, 3), generator=g).double()  # hardness ties everywhere
    elif kind == 1:
        scores = (torch.rand(B, 3, generator=g) * 10).float()
    else:
        scores = torch.randn(B, 3, generator=g).double() * 1e-3
    grades = torch.stack([torch.randint(-1, k, (B,), generator=g) for k in ks], 1)
    max_pairs = int(torch.randint(1, max(2, B * B // 4), (1,), generator=g))
    hard_fraction = float(torch.rand(1, generator=g))
    return scores, grades, ks, dict(max_pairs=max_pairs, hard_fraction=hard_fraction, generator=case)


class TestSelections:
    """The table and the buffered selection of the hardest pairs keep the same pairs."""

    def test_table_cap_op_sets_and_returns_the_previous_value(self):
        default = ops._mining_table_max_pairs(-1)
        assert default == 2**18
        assert ops._mining_table_max_pairs(7) == default
        assert ops._mining_table_max_pairs(-1) == 7
        assert ops._mining_table_max_pairs(default) == 7

    # 283, 333 and 439: the table's first bound (a sample quantile) has fewer than
    # k pairs at or above it and is lowered.
    @pytest.mark.parametrize("case", list(range(0, 600, 15)) + [283, 333, 439])
    def test_table_and_buffered_selections_keep_the_same_pairs(self, case):
        scores, grades, ks, kw = random_mining_case(case)
        with selection(TABLE):
            table = se.mined_pairs(scores, grades, ks, **kw)
            table_loss = se.pairwise_rank_loss(scores, grades, ks, **kw)
        with selection(BUFFERED):
            buffered = se.mined_pairs(scores, grades, ks, **kw)
            buffered_loss = se.pairwise_rank_loss(scores, grades, ks, **kw)
        assert torch.equal(table, buffered)
        assert torch.equal(table_loss, buffered_loss)

    @pytest.mark.parametrize("cap", [TABLE, BUFFERED])
    def test_both_selections_match_the_reference_hard_part(self, cap):
        scores, grades = make_batch(90, (4, 5, 2), seed=3, missing=0.1)
        kw = dict(max_pairs=700, hard_fraction=1.0)
        with selection(cap):
            assert torch.equal(se.mined_pairs(scores, grades, (4, 5, 2), **kw),
                               ref.mined_pairs(scores, grades, (4, 5, 2), **kw))


# ---------------------------------------------------------------------------
# Bad input (the checks mined_pairs shares with the loss: pairwise_rank_loss/test_arguments.py)

def good(B=6, T=3, K=4):
    return torch.rand(B, T), torch.randint(0, K, (B, T))


class TestBadInputs:
    """Bad input of mined_pairs of its own."""

    def test_mined_pairs_needs_max_pairs(self):
        with pytest.raises(ValueError, match="mined_pairs needs max_pairs"):
            se.mined_pairs(*good(), 4, max_pairs=None)


# ---------------------------------------------------------------------------
# CUDA against CPU

class TestCuda:
    """Mining on CUDA against the CPU: exactly the same mined pairs, the same loss
    on them, the mining seed on the device. Skipped without a GPU."""

    pytestmark = CUDA_TESTS

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("B,max_pairs,hard_fraction", [
        (40, 50, 0.7), (40, 780, 0.7), (40, 2000, 0.5), (120, 300, 0.0), (120, 300, 1.0),
        (300, 6000, 0.5),  # 3000 random draws: the hash set lives in global memory
    ])
    def test_mined_pairs_match_cpu_exactly(self, dtype, B, max_pairs, hard_fraction):
        # Rounded scores: many equal hardness values, so the tie rule decides.
        scores, grades = make_batch(B, TASK_KS, seed=B + max_pairs, dtype=dtype)
        kw = dict(max_pairs=max_pairs, hard_fraction=hard_fraction, generator=1234)
        cpu = se.mined_pairs(scores, grades, TASK_KS, **kw)
        gpu = se.mined_pairs(scores.to(CUDA), grades.to(CUDA), TASK_KS, **kw)
        assert torch.equal(gpu.cpu(), cpu)

    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize("B,max_pairs", [(30, 100), (200, 500), (64, 5000)])
    @pytest.mark.parametrize("normalization", ["per_kind", "all"])
    def test_mined_loss_matches_cpu(self, pair_fn, reduction, B, max_pairs, normalization):
        scores, grades = make_batch(B, TASK_KS, seed=7)
        kw = dict(pair_fn=pair_fn, task_reduction=reduction, max_pairs=max_pairs, generator=99,
                  pair_normalization=normalization)
        l_cpu, g_cpu, c_cpu = fused_loss_and_grad(scores, grades, TASK_KS, **kw)
        l_gpu, g_gpu, c_gpu = fused_loss_and_grad(scores.to(CUDA), grades.to(CUDA), TASK_KS, **kw)
        assert torch.equal(c_gpu.cpu(), c_cpu)
        torch.testing.assert_close(l_gpu.cpu(), l_cpu, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-10, atol=1e-12)

    def test_seed_on_the_device_equals_seed_on_the_host(self):
        scores, grades = make_batch(100, TASK_KS, seed=8, device=CUDA)
        args = (scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0, 200,
                0.7, "mean")
        host = ops.pairwise_rank_loss(*args, torch.tensor(5))
        device = ops.pairwise_rank_loss(*args, torch.tensor(5, device=CUDA))
        for a, b in zip(host, device):
            assert torch.equal(a, b)

    def test_module_on_cuda_keeps_its_seed_stream_on_the_device(self):
        scores, grades = make_batch(64, TASK_KS, seed=15, device=CUDA)
        loss_fn = se.PairwiseRankLoss(TASK_KS, max_pairs=100, generator=3).to(CUDA)
        cpu_fn = se.PairwiseRankLoss(TASK_KS, max_pairs=100, generator=3)
        assert loss_fn.mining_seed.device.type == torch.device(CUDA).type
        for _ in range(2):
            torch.testing.assert_close(loss_fn(scores, grades).cpu(), cpu_fn(scores.cpu(), grades.cpu()),
                                       rtol=1e-10, atol=1e-12)
