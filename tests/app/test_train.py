"""Training: a step lowers the loss, an interrupted run resumes to the same end
state, the run folder's files, and the CLI's errors."""
import json
import re

import pytest
import torch
from conftest import tiny_config, whole_and_resumed, write_cohort

from spinerank.cli import main
from spinerank.train import Trainer, weighted_cross_entropy


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)


@pytest.mark.parametrize("phase", [1, 2])
def test_a_step_decreases_the_loss_on_a_fixed_batch(cohort, tmp_path, phase):
    trainer = Trainer(tiny_config(cohort, tmp_path, dropout=0.0))
    volumes, grades = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=12)))
    volumes = volumes[:, :, :4, :16, :20]
    optimizer, _ = trainer._optimizer(phase)
    trainer.model.train()
    losses = []
    for _ in range(4):
        loss = trainer._loss(phase, trainer.model(volumes), grades)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_weighted_cross_entropy_matches_a_plain_computation():
    logits = [torch.randn(6, 3), torch.randn(6, 4)]
    grades = torch.tensor([[0, -1], [1, 3], [2, 0], [-1, 1], [1, 1], [0, 2]])
    weights = [torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 3.0, 0.2])]
    expected = []
    for t in range(2):
        keep = grades[:, t] >= 0
        y, lt, w = grades[keep, t], logits[t][keep], weights[t]
        nll = -torch.log_softmax(lt, 1)[torch.arange(len(y)), y]
        expected.append((w[y] * nll).sum() / w[y].sum())
    torch.testing.assert_close(weighted_cross_entropy(logits, grades, weights), torch.stack(expected).mean())


def test_interrupted_and_resumed_equals_uninterrupted(cohort, tmp_path):
    # Killed after 3 epochs (the middle of phase 2), then resumed from last.pt.
    whole, resumed = whole_and_resumed(cohort, tmp_path, 3, epochs_phase1=2, epochs_phase2=2, max_pairs=30)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(whole.history) == strip(resumed.history)
    lines = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["phase"], m["epoch"]) for m in lines] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for name in ("config.json", "last.pt", "best_phase1.pt", "best.pt"):
        assert (tmp_path / "split" / name).exists()
    assert not list((tmp_path / "split").glob(".*.tmp"))  # no temp files left behind


def test_early_stopping_respects_patience_and_minimum(cohort, tmp_path):
    trainer = Trainer(tiny_config(cohort, tmp_path, epochs_phase1=8, epochs_phase2=0, patience=1, min_epochs=3,
                                  lr_phase1=0.0))
    trainer.run()  # lr 0: the metric never improves after epoch 1
    epochs = [h["epoch"] for h in trainer.history]
    assert epochs == [1, 2, 3]  # not before min_epochs, then at once (patience 1)


def run_cli(*args):
    return main(["train", *args, "--quiet"])


def test_cli_train_runs_and_refuses_to_overwrite(cohort, tmp_path, capsys):
    args = ("--data", str(cohort), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.json"))
    (tmp_path / "c.json").write_text(json.dumps(dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20],
                                                     batch_size=8, epochs_phase1=1, epochs_phase2=1)))
    assert run_cli(*args) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["width"] == 4
    assert run_cli(*args) == 2
    assert "already holds a run (last.pt): continue it with --resume" in capsys.readouterr().err
    assert run_cli(*args, "--resume") == 0  # finished: nothing left to do


@pytest.mark.parametrize("problem,message", [
    ("no_labels", r"labels.csv does not exist"),
    ("column", r"missing required column\(s\) Herniation"),
    ("grade", r"line 2, column Pfirrmann: grade 7 is outside 0..4"),
    ("volume", r"volume .*_T1.npy .* does not exist"),
    ("few", r"the (val|test) split is empty"),
])
def test_cli_bad_inputs_stop_with_a_message(tmp_path, capsys, problem, message):
    import csv

    data = write_cohort(tmp_path / "data", subjects=3 if problem == "few" else 12)
    labels = data / "labels.csv"
    rows = list(csv.reader(open(labels)))
    if problem == "no_labels":
        labels.unlink()
    elif problem == "column":
        index = rows[0].index("Herniation")
        rows = [r[:index] + r[index + 1:] for r in rows]
    elif problem == "grade":
        rows[1][5] = "7"
    elif problem == "volume":
        next((data / "volumes").glob("*_T1.npy")).unlink()
    if labels.exists():
        with open(labels, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    assert run_cli("--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny") == 2
    err = capsys.readouterr().err
    assert err.startswith("spinerank: error: ") and re.search(message, err), err


def test_kill_then_resume_through_the_cli(cohort, tmp_path):
    # A real SIGTERM in the middle of training: exit 130 with a message, intact
    # checkpoints, and --resume finishes the run.
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "c.json").write_text(json.dumps(dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20],
                                                     batch_size=8, epochs_phase1=30, epochs_phase2=1,
                                                     patience=100, min_epochs=1)))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "spinerank", "train", "--data", str(cohort), "--out", str(run),
               "--config", str(tmp_path / "c.json"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted. Checkpoints are intact; continue with --resume" in err
    # last.pt is the truth; metrics.jsonl is rewritten right after it, so it may lag one epoch.
    done = torch.load(run / "last.pt", weights_only=False)["phase"]["epoch"]
    logged = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 30 and done - 1 <= logged <= done
    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 31)) + [1]


def test_bad_volumes_stop_training_before_the_first_epoch(tmp_path, capsys):
    # Every bad train or validation volume listed in one message, before any epoch; test volumes are not read.
    import csv

    import numpy as np

    from spinerank.data import load_or_make_splits, read_labels
    from spinerank.tasks import TaskTable

    data = write_cohort(tmp_path / "data", subjects=20)
    splits = load_or_make_splits(data, read_labels(data, TaskTable()), seed=0)
    by_split = {"train": [], "val": [], "test": []}
    for r in csv.DictReader(open(data / "labels.csv")):
        by_split[splits[r["subject_id"]]].append(data / "volumes" / f"{r['ivd_id']}_{r['sequence']}.npy")
    train, val, test = by_split["train"], by_split["val"], by_split["test"]
    train[0].write_bytes(train[0].read_bytes()[:-100])  # truncated
    np.save(train[5], np.zeros((20, 24), np.float32))  # 2-D
    np.save(val[0], np.full((20, 24, 6), np.nan, np.float32))
    np.save(val[1], np.empty((20, 24, 6), dtype=object), allow_pickle=True)
    train[7].unlink()
    test[0].write_bytes(b"junk")  # not read by training
    with pytest.raises(ValueError, match=r"^5 of \d+ volume\(s\) .* cannot be used") as info:
        Trainer(tiny_config(data, tmp_path / "run"))
    message = str(info.value)
    for path in (train[0], train[5], train[7], val[0], val[1]):
        assert path.name in message
    assert test[0].name not in message
    assert run_cli("--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny") == 2
    err = capsys.readouterr().err
    assert err.startswith("spinerank: error: 5 of") and "truncated" in err and "dtype object" in err
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
