"""spinerank predict on bad inputs (issue 13): missing paths, unreadable files,
volumes smaller than the model's input (flagged) or below the floor (skipped),
and the exit status that says whether anything was skipped."""
import csv

import numpy as np
import pytest
from conftest import tiny_config, write_cohort

from spinerank import cli
from spinerank.predict import EXIT_SKIPPED, MIN_INPUT_FRACTION, input_size_problem
from spinerank.train import Trainer

# The test model: volume_shape (6, 20, 24), input_shape (4, 16, 20) as (D, H, W);
# volumes are stored (H, W, D). Floor: a quarter of the input per axis, (1, 4, 5).
GOOD = (20, 24, 6)
SMALL = (10, 12, 3)  # (D, H, W) (3, 10, 12): below the input (4, 16, 20) on every axis, above the floor
TINY = (2, 2, 2)  # H 2 < 4, W 2 < 5: below the floor
EMPTY = (0, 80, 10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cohort = write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(cohort, out, method="ce", epochs_phase1=1, epochs_phase2=0)).run()
    return out


def volume(folder, name, shape, seed=0):
    path = folder / name
    np.save(path, np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    return path


def predict(run, out, *inputs):
    return cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--quiet",
                     *map(str, inputs)])


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_floor_and_the_small_flag():
    assert MIN_INPUT_FRACTION == 0.25
    assert input_size_problem((4, 16, 20), (4, 16, 20)) == (False, None)
    assert input_size_problem((9, 40, 40), (4, 16, 20)) == (False, None)
    assert input_size_problem((3, 16, 20), (4, 16, 20)) == (True, None)
    assert input_size_problem((1, 4, 5), (4, 16, 20)) == (True, None)  # exactly the floor
    for below in ((1, 3, 5), (1, 4, 4), (0, 16, 20)):
        small, refusal = input_size_problem(below, (4, 16, 20))
        assert small and "the floor is (1, 4, 5)" in refusal
    assert input_size_problem((2, 32, 64), (12, 128, 256))[1] is not None  # the paper's input: floor (3, 32, 64)


def test_all_predicted_exits_0(run, tmp_path, capsys):
    a, b = volume(tmp_path, "a.npy", GOOD), volume(tmp_path, "b.npy", GOOD, seed=1)
    assert predict(run, tmp_path / "p.csv", a, b) == 0
    rows = read(tmp_path / "p.csv")
    assert [r["file"] for r in rows] == [str(a), str(b)] and [r["small_input"] for r in rows] == ["0", "0"]
    assert "skipped" not in capsys.readouterr().err


def test_small_volumes_are_flagged_and_too_small_ones_skipped(run, tmp_path, capsys):
    good = volume(tmp_path, "a_good.npy", GOOD)
    small = volume(tmp_path, "b_small.npy", SMALL)
    tiny = volume(tmp_path, "c_tiny.npy", TINY)
    empty = volume(tmp_path, "d_empty.npy", EMPTY)
    assert predict(run, tmp_path / "p.csv", tmp_path) == EXIT_SKIPPED == 3
    rows = {r["file"]: r for r in read(tmp_path / "p.csv")}
    assert list(rows) == [str(good), str(small)]
    assert rows[str(good)]["small_input"] == "0" and rows[str(small)]["small_input"] == "1"
    assert rows[str(small)]["Pfirrmann_grade"] != ""
    captured = capsys.readouterr()
    err = captured.err
    assert (f"spinerank: warning: volume {small} is smaller than the model's input: (D, H, W) (3, 10, 12) < "
            f"(4, 16, 20)") in err
    assert f"spinerank: skipped: volume {tiny} (H, W, D) (2, 2, 2) is too small to predict" in err
    assert "the floor is (1, 4, 5)" in err
    assert f"spinerank: skipped: volume {empty} has shape (0, 80, 10): it is empty" in err
    assert str(good) not in err
    assert "wrote 2 prediction(s)" in captured.out and "1 flagged small_input; skipped 2 input(s)" in captured.out


def test_a_missing_path_is_skipped_not_fatal(run, tmp_path, capsys):
    good = volume(tmp_path, "a.npy", GOOD)
    (tmp_path / "broken.npy").write_bytes(b"junk")
    missing = tmp_path / "nowhere" / "x.nii.gz"
    assert predict(run, tmp_path / "p.csv", missing, good, tmp_path / "broken.npy") == EXIT_SKIPPED
    assert [r["file"] for r in read(tmp_path / "p.csv")] == [str(good)]
    captured = capsys.readouterr()
    assert f"spinerank: skipped: {missing} does not exist" in captured.err
    assert "broken.npy cannot be read" in captured.err
    assert "wrote 1 prediction(s)" in captured.out and "skipped 2 input(s)" in captured.out


def test_nothing_predicted_exits_2(run, tmp_path, capsys):
    tiny = volume(tmp_path, "tiny.npy", TINY)
    assert predict(run, tmp_path / "p.csv", tiny, tmp_path / "missing.npy") == 2
    err = capsys.readouterr().err
    assert "spinerank: error: no volume could be read or predicted; skipped 2 input(s)" in err
    assert predict(run, tmp_path / "p.csv", tmp_path / "missing.npy") == 2
