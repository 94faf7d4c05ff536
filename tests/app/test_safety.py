"""What a user feeds the CLI cannot run code, lose a run's way or crash it:
checkpoints load with weights_only, runs keep absolute paths and find a dataset
that moved (and refuse one that is not theirs), --resume refuses settings it
cannot honour, OS errors are one line with exit 2, files honour the umask."""
import json
import os
import pickle
import shutil
import stat

import pytest
import torch
from conftest import write_cohort

from spinerank.checkpoint import atomic_write_text, load_checkpoint
from spinerank.cli import main

TINY = dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20], batch_size=8, epochs_phase1=1,
            epochs_phase2=1, tta_shifts_h=[0], tta_shifts_w=[0], tta_shifts_d=[0, 1])


class _Payload:
    """Unpickling this object calls os.system: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (both phases) and its dataset, in a folder of their own."""
    root = tmp_path_factory.mktemp("trained")
    data = write_cohort(root / "data", subjects=20)
    (root / "c.json").write_text(json.dumps(TINY))
    before = os.umask(0o022)  # the usual umask, whatever the test runner's is
    try:
        assert main(["train", "--data", str(data), "--out", str(root / "run"), "--config", str(root / "c.json"),
                     "--quiet"]) == 0
        assert main(["evaluate", "--run", str(root / "run"), "--no-tta", "--quiet", "--out", str(root / "eval")]) == 0
    finally:
        os.umask(before)
    return root


def test_a_crafted_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    crafted = tmp_path / "best.pt"
    torch.save({"model": {}, "config": _Payload(marker)}, crafted)
    # The payload is real: unpickling without weights_only runs it.
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()

    with pytest.raises(ValueError, match=r"was refused: it holds more than tensors and plain data"):
        load_checkpoint(crafted)
    volume = tmp_path / "v.npy"
    import numpy as np
    np.save(volume, np.zeros((20, 24, 6), np.float32))
    code = main(["predict", "--checkpoint", str(crafted), "--out", str(tmp_path / "p.csv"), str(volume), "--quiet"])
    assert code == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_a_checkpoint_that_is_not_a_dict_is_named(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"is not a spinerank checkpoint \(it holds a Tensor\)"):
        load_checkpoint(path)


def test_the_run_checkpoints_load_with_weights_only(trained):
    for name in ("last.pt", "best.pt", "best_phase1.pt"):
        state = torch.load(trained / "run" / name, weights_only=True)
        assert "model" in state


def test_config_json_holds_absolute_paths(trained):
    saved = json.loads((trained / "run" / "config.json").read_text())
    assert saved["data"] == str((trained / "data").resolve())
    assert saved["out"] == str((trained / "run").resolve())
    record = json.loads((trained / "run" / "dataset.json").read_text())
    assert record["data"] == saved["data"] and len(record["labels_sha256"]) == 64


def test_train_with_relative_paths_then_calibrate_from_elsewhere(tmp_path, monkeypatch):
    data = write_cohort(tmp_path / "work" / "cohort", subjects=20)
    (tmp_path / "work" / "c.json").write_text(json.dumps(TINY))
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--data", "cohort", "--out", "run", "--config", "c.json", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--run", "work/run", "--no-tta", "--quiet"]) == 0
    assert json.loads((tmp_path / "work" / "run" / "config.json").read_text())["data"] == str(data.resolve())


def _copy_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    return run


def test_a_moved_dataset_is_found_with_data(trained, tmp_path, capsys):
    original = tmp_path / "original"
    shutil.copytree(trained / "data", original)
    assert main(["train", "--data", str(original), "--out", str(tmp_path / "run"), "--config",
                 str(trained / "c.json"), "--quiet"]) == 0
    moved = tmp_path / "moved"
    original.rename(moved)

    assert main(["evaluate", "--run", str(tmp_path / "run"), "--no-tta", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"the run's dataset {original} (labels.csv) is not there any more; if it moved, give its new " \
           "folder with --data" in err
    assert main(["calibrate", "--run", str(tmp_path / "run"), "--no-tta", "--quiet", "--data", str(moved)]) == 0
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--no-tta", "--quiet", "--data", str(moved)]) == 0
    assert json.loads((tmp_path / "run" / "eval-no-tta" / "metrics.json").read_text())["volumes"] > 0


def test_a_dataset_with_other_labels_or_splits_is_refused(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(trained / "data", other)
    labels = (other / "labels.csv").read_text().splitlines()
    cells = labels[1].split(",")
    cells[5] = "0" if cells[5] != "0" else "1"  # one grade changed
    (other / "labels.csv").write_text("\n".join([labels[0], ",".join(cells), *labels[2:]]) + "\n")
    assert main(["evaluate", "--run", str(run), "--no-tta", "--quiet", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not the dataset run" in err and "its labels differ" in err

    shutil.rmtree(other)
    shutil.copytree(trained / "data", other)
    splits = (other / "splits.csv").read_text().splitlines()
    first, second = splits[1].split(","), [s.split(",") for s in splits[2:] if s.split(",")[1] != splits[1].split(",")[1]][0]
    swapped = [f"{first[0]},{second[1]}", *(f"{s}" for s in splits[2:])]
    (other / "splits.csv").write_text("\n".join([splits[0], *swapped]) + "\n")
    assert main(["calibrate", "--run", str(run), "--no-tta", "--quiet", "--data", str(other)]) == 2
    assert "split of the subjects differs" in capsys.readouterr().err


def test_a_damaged_dataset_record_is_named(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    (run / "dataset.json").write_text("[1, 2]")
    assert main(["evaluate", "--run", str(run), "--no-tta", "--quiet"]) == 2
    assert "dataset.json is not a dataset record (a JSON object); it holds a list" in capsys.readouterr().err
    (run / "dataset.json").write_text("{not json")
    assert main(["evaluate", "--run", str(run), "--no-tta", "--quiet"]) == 2
    assert "dataset.json cannot be read" in capsys.readouterr().err


def test_resume_from_another_directory_with_a_moved_dataset(tmp_path, monkeypatch, capsys):
    data = write_cohort(tmp_path / "a" / "cohort", subjects=20)
    (tmp_path / "c.json").write_text(json.dumps({**TINY, "epochs_phase1": 2}))
    from spinerank.config import resolve
    from spinerank.train import Trainer

    config = resolve("paper", str(tmp_path / "c.json"), data=str(data), out=str(tmp_path / "run"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config).run(interrupt_after=1)
    shutil.move(str(tmp_path / "a" / "cohort"), str(tmp_path / "b"))
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 2
    assert "give its new folder with --data" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet", "--data", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tmp_path / "b")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["phase"]["done"]


def test_resume_refuses_settings_it_cannot_honour_by_name(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    out = ["--out", str(run), "--resume", "--quiet"]
    assert main(["train", *out, "--seed", "7", "--max-pairs", "10"]) == 2
    err = capsys.readouterr().err
    assert "cannot change" in err and "seed (0 -> 7)" in err and "max_pairs (None -> 10)" in err
    (tmp_path / "wider.json").write_text(json.dumps({**TINY, "width": 8}))
    assert main(["train", *out, "--config", str(tmp_path / "wider.json")]) == 2
    assert "width (4 -> 8)" in capsys.readouterr().err
    # Giving the run's own settings again is fine: a finished run has nothing left to do.
    (tmp_path / "same.json").write_text(json.dumps(TINY))
    assert main(["train", *out, "--config", str(tmp_path / "same.json"), "--seed", "0"]) == 0


def test_os_errors_are_one_line_with_exit_2(trained, tmp_path, capsys, monkeypatch):
    run = _copy_run(trained, tmp_path)
    # --out under a regular file: the OS refuses to make the folder.
    (tmp_path / "file").write_text("x")
    code = main(["train", "--data", str(trained / "data"), "--out", str(tmp_path / "file" / "run"),
                 "--config", str(trained / "c.json"), "--preset", "paper", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("spinerank: error: ") and err.count("\n") == 1, err

    # A read-only or full disk (as root, permissions cannot be used to provoke it here).
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(run / "thresholds.json"))

    monkeypatch.setattr(os, "replace", refuse)
    assert main(["calibrate", "--run", str(run), "--no-tta", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"spinerank: error: Read-only file system: {run / 'thresholds.json'}\n"
    assert not list(run.glob(".*.tmp"))  # the temporary file is removed


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_run_outputs_are_readable_by_others_under_umask_022(trained):
    written = [*(trained / "run").glob("*.*"), *(trained / "eval").glob("*.*"), trained / "data" / "splits.csv"]
    assert {p.suffix for p in written} >= {".pt", ".json", ".jsonl", ".csv", ".md", ".png"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
