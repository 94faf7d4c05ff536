"""spinerank.data: labels.csv, volumes, splits, the dataset; with the messages of every bad input."""
import csv
import pathlib

import numpy as np
import pytest
import torch
from conftest import write_cohort

from spinerank.data import (DiscDataset, class_weights, fit_to_shape, load_or_make_splits, load_volume,
                            make_splits, read_labels, split_rows)
from spinerank.tasks import TaskTable

TASKS = TaskTable()


def rewrite_labels(folder, edit):
    path = pathlib.Path(folder) / "labels.csv"
    rows = list(csv.reader(open(path)))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_reads_rows_and_missing_cells(tmp_path):
    write_cohort(tmp_path, subjects=6)
    rows = read_labels(tmp_path, TASKS)
    assert len(rows) == 2 * 9  # 6 subjects with 1 or 2 discs, T1 and T2 each
    assert all(len(r.grades) == 11 for r in rows)
    assert any(g == -1 for r in rows for g in r.grades)
    assert all(-1 <= g < k for r in rows for g, k in zip(r.grades, TASKS.num_grades))


def test_missing_column_is_named(tmp_path):
    write_cohort(tmp_path, subjects=3)
    rewrite_labels(tmp_path, lambda rows: [r.pop(6) for r in rows])  # the DiscNarrowing column
    with pytest.raises(ValueError, match=r"labels.csv: missing required column\(s\) DiscNarrowing"):
        read_labels(tmp_path, TASKS)


def test_grade_out_of_range_names_line_and_column(tmp_path):
    write_cohort(tmp_path, subjects=3)

    def edit(rows):
        rows[3][5 + 3] = "3"  # Spondylolisthesis has K = 3
    rewrite_labels(tmp_path, edit)
    with pytest.raises(ValueError, match=r"labels.csv, line 4, column Spondylolisthesis: grade 3 is outside 0..2"):
        read_labels(tmp_path, TASKS)


def test_non_integer_grade(tmp_path):
    write_cohort(tmp_path, subjects=3)

    def edit(rows):
        rows[2][5] = "mild"
    rewrite_labels(tmp_path, edit)
    with pytest.raises(ValueError, match=r"line 3, column Pfirrmann: grade 'mild' is not an integer"):
        read_labels(tmp_path, TASKS)


def test_missing_and_corrupt_volumes_are_named(tmp_path):
    write_cohort(tmp_path, subjects=3)
    rows = read_labels(tmp_path, TASKS)
    victim = tmp_path / "volumes" / f"{rows[0].ivd_id}_{rows[0].sequence}.npy"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"volume .*{rows[0].ivd_id}_T1.npy .* line 2 does not exist"):
        DiscDataset(tmp_path, rows, TASKS, (6, 20, 24))
    victim.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match=rf"volume .*{victim.name} cannot be read"):
        load_volume(victim)
    np.save(victim, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"has shape \(4, 4\); expected 3 dimensions"):
        load_volume(victim)
    np.save(victim, np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        load_volume(victim)


def test_nifti_volumes_are_read(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    array = np.random.default_rng(0).standard_normal((5, 6, 3)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(tmp_path / "v.nii.gz"))
    np.testing.assert_allclose(load_volume(tmp_path / "v.nii.gz"), array)


def test_splits_are_patient_disjoint_stratified_and_reused(tmp_path):
    write_cohort(tmp_path, subjects=100)
    rows = read_labels(tmp_path, TASKS)
    splits = load_or_make_splits(tmp_path, rows, seed=3)
    counts = {name: sum(v == name for v in splits.values()) for name in ("train", "val", "test")}
    assert counts == {"train": 80, "val": 10, "test": 10}
    by_split = split_rows(rows, splits)
    for name in ("train", "val", "test"):  # every centre in every split
        assert {r.centre for r in by_split[name]} == {"c0", "c1"}
    subjects = [{r.subject_id for r in by_split[n]} for n in ("train", "val", "test")]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert (tmp_path / "splits.csv").exists()
    assert load_or_make_splits(tmp_path, rows, seed=99) == splits  # reused, not redrawn
    assert make_splits(rows, seed=4) != splits


def test_too_few_subjects_for_a_split(tmp_path):
    write_cohort(tmp_path, subjects=4)
    with pytest.raises(ValueError, match=r"the (val|test) split is empty \(4 subjects"):
        load_or_make_splits(tmp_path, read_labels(tmp_path, TASKS), seed=0)


def test_dataset_items_masking_and_sequence_choice(tmp_path):
    write_cohort(tmp_path, subjects=6, shape=(20, 24, 6))
    rows = read_labels(tmp_path, TASKS)
    train = DiscDataset(tmp_path, rows, TASKS, (8, 18, 30), mode="train", seed=1)
    evaluation = DiscDataset(tmp_path, rows, TASKS, (8, 18, 30), mode="eval")
    assert len(train) == 9 and len(evaluation) == 18
    volume, grades = evaluation[0]
    assert volume.shape == (1, 8, 18, 30) and grades.shape == (11,) and grades.dtype == torch.long
    for i in range(len(evaluation)):
        row = evaluation.row(i)
        _, g = evaluation[i]
        expected = [-1 if (row.sequence == "T1" and t < 2) else v for t, v in enumerate(row.grades)]
        assert g.tolist() == expected  # Pfirrmann and DiscNarrowing masked on T1
    picks = {(e, i): train.row(i).sequence for e in range(8) for i in range(len(train)) if not train.set_epoch(e)}
    assert set(picks.values()) == {"T1", "T2"}
    train.set_epoch(3)
    again = [train.row(i).sequence for i in range(len(train))]
    assert again == [picks[(3, i)] for i in range(len(train))]  # reproducible per epoch


def test_fit_to_shape_crops_and_pads_centred():
    v = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    out = fit_to_shape(v, (2, 7, 4))
    assert out.shape == (2, 7, 4)
    assert torch.equal(out[:, 1:6, :], v[1:3, :, 1:5])
    assert not out[:, 0].any() and not out[:, 6].any()


def test_class_weights_are_inverse_frequency(tmp_path):
    write_cohort(tmp_path, subjects=30)
    rows = read_labels(tmp_path, TASKS)
    weights = class_weights(rows, TASKS)
    for t, task in enumerate(TASKS.tasks):
        labels = [r.grades[t] for r in rows if r.grades[t] >= 0 and r.sequence not in task.masked_for]
        n = len(labels)
        for c in range(task.num_grades):
            n_c = labels.count(c)
            expected = n / (task.num_grades * n_c) if n_c else 0.0
            assert weights[t][c].item() == pytest.approx(expected)
