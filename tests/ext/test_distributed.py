"""Global pairs across the processes of a data-parallel job (SPEC §11), on CPU
with gloo and 2 processes.

The reference for the global-pairs loss is one process computing the plain
loss on the concatenation of the ranks' batches: loss, pair counts and the
parameter gradients after DDP's averaging must equal it. The same two
processes also check what the trainer asks of the process group
(spinerank.distributed.context). Data-parallel training through the CLI:
tests/app/test_distributed_training.py. Every process is bounded by a timeout.
"""
import datetime
import gc
import pathlib
import time

import numpy as np
import pytest
import torch
from conftest import make_batch

import spinerank_ext
from spinerank_ext import _distributed
from spinerank import distributed

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")

WORLD = 2
KS = (5, 4, 3)
FEATURES = 6

# (name, rows per rank, max_pairs, generator): generator "int" is the seed 7,
# "torch" a torch.Generator seeded differently on each rank.
CASES = [
    ("equal", (4, 4), None, None),
    ("unequal", (6, 3), None, None),
    ("one_rank_empty", (5, 0), None, None),
    ("mined_int_seed", (6, 3), 5, "int"),
    ("mined_torch_generator", (5, 4), 6, "torch"),
]
STEPS = 2  # the second step checks that the ranks' mining seeds stay in step


def _case_data(index, sizes):
    """Features and grades of the global batch of a case (missing grades included)."""
    g = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(sum(sizes), FEATURES, generator=g, dtype=torch.float64)
    _, grades = make_batch(sum(sizes), KS, seed=index, missing=0.3)
    return x, grades


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, len(KS))).double()


def _generator(kind, rank):
    if kind == "int":
        return 7
    if kind == "torch":
        return torch.Generator().manual_seed(100 + 100 * rank)  # rank 0's state is the one used
    return None


def _run_case(model, loss_fn, x, grades):
    """STEPS forward/backward passes; per step the loss, the counts, the
    gradient reaching the scores and the parameter gradients."""
    steps = []
    for _ in range(STEPS):
        model.zero_grad()
        scores = model(x)
        scores.retain_grad()
        loss = loss_fn(scores, grades)
        loss.backward()
        steps.append(dict(loss=loss.detach(), counts=loss_fn.last_counts.clone(), score_grad=scores.grad.clone(),
                          params=[p.grad.clone() for p in model.parameters()]))
    return steps


def _float32_batch():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(7, 4, generator=g) * 1e3
    grades = torch.randint(-1, 5, (7, 4), generator=g, dtype=torch.int32)
    return scores, grades


def _worker(rank, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        _check_cases(rank, out_dir)
    finally:
        gc.collect()  # DDP's reference cycles hold the group: see spinerank.distributed.session
        torch.distributed.destroy_process_group()


def _check_cases(rank, out_dir):
    results = {}
    for index, (name, sizes, max_pairs, kind) in enumerate(CASES):
        x, grades = _case_data(index, sizes)
        start = sum(sizes[:rank])
        rows = slice(start, start + sizes[rank])
        model = torch.nn.parallel.DistributedDataParallel(_model())
        loss_fn = spinerank_ext.PairwiseRankLoss(KS, max_pairs=max_pairs, generator=_generator(kind, rank),
                                                 global_pairs=True)
        results[name] = _run_case(model, loss_fn, x[rows], grades[rows])
    # Ranks that disagree on T all get the same error instead of a hang.
    scores = torch.zeros(3, 3 if rank == 0 else 2, dtype=torch.float64)
    try:
        spinerank_ext.PairwiseRankLoss(3, global_pairs=True)(scores, torch.zeros_like(scores, dtype=torch.long))
        results["mismatch"] = None
    except ValueError as exc:
        results["mismatch"] = str(exc)
    # float32 scores and int32 grades travel exactly (packed into one float64 message).
    scores, grades = _float32_batch()
    rows = slice(0, 3) if rank == 0 else slice(3, 7)
    results["gather_float32"] = _distributed.gather_batch(scores[rows], grades[rows], None)[:2]
    # What the trainer asks of the process group.
    context = distributed.context()
    results["context"] = (context.rank, context.world_size, context.is_main)
    results["mean"] = context.mean(float(rank + 1))
    results["on_main"] = context.on_main(lambda: {"computed_by": torch.distributed.get_rank()})

    def failing():
        raise ValueError("val volume unreadable")
    try:
        context.on_main(failing)
    except Exception as exc:
        results["on_main_error"] = (type(exc).__name__, str(exc))
    torch.save(results, pathlib.Path(out_dir) / f"rank{rank}.pt")


def _spawn(target, args, timeout=180):
    """Runs target(rank, *args) in WORLD fresh processes; fails (and kills them) after timeout."""
    context = torch.multiprocessing.start_processes(target, args=args, nprocs=WORLD, join=False,
                                                    start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} processes did not finish within {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _spawn(_worker, (str(out / "init"), str(out)))
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_global_pairs_equal_one_process_on_the_concatenated_batch(ranks, index):
    name, sizes, max_pairs, kind = CASES[index]
    x, grades = _case_data(index, sizes)
    model = _model()
    single = _run_case(model, spinerank_ext.PairwiseRankLoss(KS, max_pairs=max_pairs, generator=_generator(kind, 0)),
                       x, grades)
    for step in range(STEPS):
        expected = single[step]
        if max_pairs is None:  # the single-process loss itself against the plain PyTorch reference
            reference = spinerank_ext.reference.pairwise_rank_loss(model(x).detach(), grades, KS)
            torch.testing.assert_close(expected["loss"], reference)
        else:
            assert (expected["counts"].sum(1) <= max_pairs).all() and expected["counts"].sum() > 0
        starts = np.cumsum((0,) + sizes)
        for rank, result in enumerate(ranks):
            got = result[name][step]
            torch.testing.assert_close(got["loss"], expected["loss"])  # every rank: the global loss
            assert torch.equal(got["counts"], expected["counts"])  # the same pairs on every rank
            # The scaling rule: W times this rank's rows of the global gradient ...
            torch.testing.assert_close(got["score_grad"],
                                       WORLD * expected["score_grad"][starts[rank]:starts[rank + 1]])
            # ... so that after DDP's averaging the parameters get the single-process gradient.
            for g, e in zip(got["params"], expected["params"]):
                torch.testing.assert_close(g, e)


def test_ranks_with_different_task_counts_all_raise(ranks):
    for result in ranks:
        assert result["mismatch"] == ("global_pairs: the ranks' scores have different numbers of tasks T "
                                      "(rank 0: 3, rank 1: 2)")


def test_the_gather_is_exact_for_float32_scores_and_int32_grades(ranks):
    scores, grades = _float32_batch()
    for result in ranks:
        got_scores, got_grades = result["gather_float32"]
        assert got_scores.dtype == torch.float32 and torch.equal(got_scores, scores)
        assert torch.equal(got_grades, grades.long())


def test_rank_zero_results_reach_every_rank_and_its_errors_stop_every_rank(ranks):
    for rank, result in enumerate(ranks):
        assert result["context"] == (rank, WORLD, rank == 0)
        assert result["mean"] == 1.5
        assert result["on_main"] == {"computed_by": 0}
    assert ranks[0]["on_main_error"] == ("ValueError", "val volume unreadable")
    assert ranks[1]["on_main_error"] == ("RuntimeError", "rank 0 failed: ValueError: val volume unreadable")


def test_global_pairs_without_a_process_group_is_the_local_loss():
    assert not torch.distributed.is_initialized()
    scores, grades = make_batch(12, KS, seed=3)
    scores.requires_grad_(True)
    local = spinerank_ext.PairwiseRankLoss(KS, max_pairs=8, generator=5)
    global_ = spinerank_ext.PairwiseRankLoss(KS, max_pairs=8, generator=5, global_pairs=True)
    a, = torch.autograd.grad(local(scores, grades), scores)
    b, = torch.autograd.grad(global_(scores, grades), scores)
    assert torch.equal(a, b) and torch.equal(local.last_counts, global_.last_counts)
    assert "global_pairs=True" in repr(global_)
