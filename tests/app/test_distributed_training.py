"""Data-parallel training (SPEC §11) on CPU with gloo and 2 processes: the
distributed sampler, the process-group session, and the CLI run under
torchrun on a tiny cohort: a rank that fails stops the run with its message,
and --resume finishes it. Every process is bounded by a timeout. The
global-pairs loss across processes: tests/ext/test_distributed.py.
"""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import write_cohort

from spinerank import distributed
from spinerank.data import DiscDataset, load_or_make_splits, read_labels, split_rows
from spinerank.tasks import TaskTable

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")

WORLD = 2


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
