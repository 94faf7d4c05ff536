"""Data-parallel training (SPEC §11) on CPU with gloo and 2 processes.

The reference for the global-pairs loss is one process computing the plain
loss on the concatenation of the ranks' batches: loss, pair counts and the
parameter gradients after DDP's averaging must equal it. The CLI is run under
torchrun on a tiny cohort: a rank that fails stops the run with its message,
and --resume finishes it. Every process is bounded by a timeout.
"""
import csv
import datetime
import gc
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import make_batch, write_cohort

import spinerank_ext
from spinerank_ext import _distributed
from spinerank import distributed
from spinerank.data import DiscDataset, load_or_make_splits, read_labels, split_rows
from spinerank.tasks import TaskTable

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


def test_the_distributed_sampler_shards_the_single_process_order():
    # Step k of the W ranks together sees what one process with W times the
    # batch sees: rank r holds positions r, r + W, ... of the same permutation.
    data = list(range(11))
    seed = 2**62 + 12345
    single = list(distributed.Context().sampler(data, seed))
    shards = [list(distributed.Context(rank=r, world_size=3).sampler(data, seed)) for r in range(3)]
    assert sorted(single) == data
    padded = single + single[:1]  # 11 -> 12, a multiple of 3, by repeating the start
    assert [shard[i] for i in range(4) for shard in shards] == padded


def test_sync_batchnorm_on_cpu_is_refused_with_a_message():
    from spinerank.config import TrainConfig

    context = distributed.Context(rank=0, world_size=2)
    with pytest.raises(ValueError, match="sync_batchnorm needs --device cuda"):
        context.wrap_model(torch.nn.BatchNorm1d(3), TrainConfig(sync_batchnorm=True), torch.device("cpu"))


def test_a_session_without_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session("cpu", 10) as context:
        assert context == distributed.Context() and not torch.distributed.is_initialized()


# ---------------------------------------------------------------------------
# The CLI under torchrun


def _corrupt_second_epoch_volume(data, tasks):
    """Corrupts a training volume that the first epoch does not read and the
    second does (the dataset picks each disc's sequence per epoch). Returns its
    path and original bytes."""
    rows = read_labels(data, tasks)
    train = split_rows(rows, load_or_make_splits(data, rows, 0))["train"]
    dataset = DiscDataset(data, train, tasks, (6, 20, 24), mode="train", seed=0)
    for index in range(len(dataset)):
        dataset.set_epoch(1000)  # phase 1, epoch 0 (train.py: epoch + 1000 * phase)
        first = dataset.row(index)
        dataset.set_epoch(1001)
        second = dataset.row(index)
        if first != second:
            path = dataset.paths[second]
            original = path.read_bytes()
            path.write_bytes(b"not a volume")
            return path, original
    raise AssertionError("no disc changes its sequence between epochs 1 and 2")


def _torchrun(*args, cwd, timeout=240, **env_vars):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               "-m", "spinerank", "train", *args, "--quiet"]
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1", **env_vars}
    # cwd: not the checkout, whose spinerank_ext has no compiled library.
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def test_torchrun_cli_a_failing_rank_stops_the_run_and_resume_finishes_it(tmp_path):
    data = write_cohort(tmp_path / "data", subjects=20)
    path, original = _corrupt_second_epoch_volume(data, TaskTable())
    (tmp_path / "c.json").write_text(json.dumps(dict(
        width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20], batch_size=4, epochs_phase1=2,
        epochs_phase2=1, patience=5, min_epochs=1, max_pairs=6, dist_timeout_s=60)))
    run = tmp_path / "run"
    args = ("--data", str(data), "--out", str(run))
    # The preflight finds the bad volume on every rank before the first epoch: all stop, none hangs.
    stopped = _torchrun(*args, "--config", str(tmp_path / "c.json"), cwd=tmp_path)
    assert stopped.returncode != 0
    assert "1 of " in stopped.stderr and f"{path} (labels.csv line" in stopped.stderr
    assert not (run / "last.pt").exists()
    # Without it (contents unchecked), the rank that reads the volume in epoch 2 fails and stops the run.
    failed = _torchrun(*args, "--config", str(tmp_path / "c.json"), cwd=tmp_path, SPINERANK_PREFLIGHT="0")
    assert failed.returncode != 0
    assert f"volume {path} cannot be read" in failed.stdout + failed.stderr
    # Epoch 1 was checkpointed by rank 0 before the failure.
    assert torch.load(run / "last.pt", weights_only=False)["phase"]["epoch"] == 1
    path.write_bytes(original)
    finished = _torchrun(*args, "--resume", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("done: best mean validation") == 1  # rank 0 alone reports
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(m["phase"], m["epoch"]) for m in lines] == [(1, 1), (1, 2), (2, 1)]
    for name in ("config.json", "best_phase1.pt", "best.pt"):
        assert (run / name).exists()
    assert not list(run.glob(".*.tmp"))
    with open(data / "splits.csv") as f:
        assert {row["split"] for row in csv.DictReader(f)} == {"train", "val", "test"}
