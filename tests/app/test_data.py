"""spinerank.data: labels.csv, volumes, splits, the dataset; with the messages of every bad input."""
import csv
import dataclasses
import pathlib
import re
import time

import numpy as np
import pytest
import torch
from conftest import write_cohort

from spinerank.data import (PREFLIGHT_LISTED, DiscDataset, class_weights, fit_to_shape, load_or_make_splits,
                            load_volume, make_splits, preflight, read_labels, split_rows, volume_path)
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


# ---------------------------------------------------------------------------
# labels.csv: encoding, duplicates, ids that name files (issue 13)


def test_labels_with_a_byte_order_mark_are_read(tmp_path):
    write_cohort(tmp_path, subjects=3)
    plain = read_labels(tmp_path, TASKS)
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_labels(tmp_path, TASKS) == plain


def test_labels_in_another_encoding_name_the_file_encoding_and_line(tmp_path):
    write_cohort(tmp_path, subjects=3)
    rewrite_labels(tmp_path, lambda rows: rows[3].__setitem__(4, "Zürich"))
    path = tmp_path / "labels.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(ValueError, match=r"labels.csv is not UTF-8 text: byte 0xfc at line 4, byte \d+ "
                                         r"cannot be decoded .* save it as UTF-8") as info:
        read_labels(tmp_path, TASKS)
    assert str(path) in str(info.value)


def test_labels_can_hold_non_ascii_and_quoted_ids(tmp_path):
    write_cohort(tmp_path, subjects=3)
    rewrite_labels(tmp_path, lambda rows: [r.__setitem__(4, "Zürich, Nord") for r in rows[1:]])
    assert {r.centre for r in read_labels(tmp_path, TASKS)} == {"Zürich, Nord"}


@pytest.mark.parametrize("conflicting", [False, True])
def test_a_duplicated_volume_names_both_lines(tmp_path, conflicting):
    write_cohort(tmp_path, subjects=3)

    def edit(rows):
        copy = list(rows[3])
        if conflicting:
            copy[5] = "4" if copy[5] != "4" else "3"
        rows.insert(5, copy)  # line 6 repeats line 4
    rewrite_labels(tmp_path, edit)
    grades = "different grades" if conflicting else "the same grades"
    with pytest.raises(ValueError, match=rf"labels.csv, lines 4 and 6: ivd_id 's001_L4L5', sequence 'T1' "
                                         rf"appears twice \(with {grades}\)"):
        read_labels(tmp_path, TASKS)


def test_a_disc_under_two_subjects_names_both_lines(tmp_path):
    write_cohort(tmp_path, subjects=3)
    rewrite_labels(tmp_path, lambda rows: rows[4].__setitem__(1, "s099"))  # line 5: s001_L4L5 T2
    with pytest.raises(ValueError, match=r"labels.csv, lines 4 and 5: ivd_id 's001_L4L5' is under subject "
                                         r"'s001' on line 4 and subject 's099' on line 5"):
        read_labels(tmp_path, TASKS)


@pytest.mark.parametrize("column,value,shown", [
    (0, "../../x", r"'/'"), (0, "a/b", r"'/'"), (0, "a\\b", r"'\\\\'"), (0, "..", r"'\.\.'"),
    (0, "a\x00b", r"'\\x00'"), (0, "C:evil", r"':'"), (3, "../T1", r"'/'"),
])
def test_ids_that_would_leave_the_volumes_folder_are_refused(tmp_path, column, value, shown):
    write_cohort(tmp_path, subjects=3)
    rewrite_labels(tmp_path, lambda rows: rows[2].__setitem__(column, value))
    name = ["ivd_id", "", "", "sequence"][column]
    with pytest.raises(ValueError, match=rf"labels.csv, line 3, column {name}: .* holds {shown}"):
        read_labels(tmp_path, TASKS)


def test_two_rows_naming_one_volume_file_name_both_lines(tmp_path):
    write_cohort(tmp_path, subjects=3)

    def edit(rows):  # (s000_L4L5, T1_x) and (s000_L4L5_T1, x) are both volumes/s000_L4L5_T1_x
        rows[1][3] = "T1_x"
        rows[2][0], rows[2][3] = "s000_L4L5_T1", "x"
    rewrite_labels(tmp_path, edit)
    with pytest.raises(ValueError, match=r"lines 2 and 3: .* both name the volume volumes/s000_L4L5_T1_x"):
        read_labels(tmp_path, TASKS)


def test_volume_path_never_leaves_the_volumes_folder(tmp_path):
    write_cohort(tmp_path / "data", subjects=3)
    np.save(tmp_path / "x_T1.npy", np.zeros((2, 2, 2), np.float32))  # what ../../x_T1 would reach
    row = read_labels(tmp_path / "data", TASKS)[0]
    assert volume_path(tmp_path / "data", row).parent == tmp_path / "data" / "volumes"
    for ivd in ("../x", "..", "a/../../x", "/tmp/x", "a\x00"):
        with pytest.raises(ValueError, match=r"volume name .* of labels.csv line 2"):
            volume_path(tmp_path / "data", dataclasses.replace(row, ivd_id=ivd))


def test_splits_file_quotes_subject_ids(tmp_path):
    write_cohort(tmp_path, subjects=20)
    rewrite_labels(tmp_path, lambda rows: [r.__setitem__(1, r[1] + ", A") for r in rows[1:]])
    rows = read_labels(tmp_path, TASKS)
    splits = load_or_make_splits(tmp_path, rows, seed=0)
    assert load_or_make_splits(tmp_path, rows, seed=0) == splits  # read back: same subjects, same splits
    assert all(s.endswith(", A") for s in splits)


# ---------------------------------------------------------------------------
# Preflight: every volume checked before a command starts (issue 13)


def spoil(volumes, kind):
    """Makes the volume file ``volumes[...]`` bad in one way; returns the file."""
    path = volumes[kind]
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif kind == "2d":
        np.save(path, np.zeros((20, 24), np.float32))
    elif kind == "nan":
        array = np.load(path)
        array[3, 4, 2] = np.nan
        np.save(path, array)
    elif kind == "missing":
        path.unlink()
    elif kind == "object":
        np.save(path, np.empty((2, 2, 2), dtype=object), allow_pickle=True)
    elif kind == "empty":
        np.save(path, np.zeros((0, 24, 6), np.float32))
    elif kind == "complex":
        np.save(path, np.zeros((20, 24, 6), np.complex64))
    elif kind == "overflow":
        np.save(path, np.full((20, 24, 6), 1e300))
    return path


BAD_KINDS = {"truncated": r"truncated: its header says 20x24x6 float32 \(\d+ bytes with the header\) but the "
                          r"file holds \d+ bytes",
             "2d": r"shape \(20, 24\): expected 3 dimensions",
             "nan": r"contains NaN or infinite values",
             "missing": r"does not exist",
             "object": r"dtype object: expected real numbers",
             "empty": r"shape \(0, 24, 6\): it is empty",
             "complex": r"dtype complex64: expected real numbers",
             "overflow": r"contains NaN or infinite values \(as float32\)"}


def test_preflight_lists_every_bad_volume_in_one_message(tmp_path):
    write_cohort(tmp_path, subjects=8)
    rows = read_labels(tmp_path, TASKS)
    assert set(preflight(tmp_path, rows, progress=False).values()) == set((tmp_path / "volumes").glob("*.npy"))
    files = sorted((tmp_path / "volumes").glob("*.npy"))
    bad = {kind: spoil(dict(zip(BAD_KINDS, files)), kind) for kind in BAD_KINDS}
    with pytest.raises(ValueError) as info:
        preflight(tmp_path, rows, progress=False)
    message = str(info.value)
    assert message.startswith(f"{len(BAD_KINDS)} of {len(rows)} volume(s) in {tmp_path / 'volumes'} cannot be used")
    lines = message.splitlines()[1:]
    assert len(lines) == len(BAD_KINDS)
    for kind, path in bad.items():
        [line] = [x for x in lines if path.name in x]
        assert re.search(BAD_KINDS[kind], line), (kind, line)
        row = next(r for r in rows if f"{r.ivd_id}_{r.sequence}.npy" == path.name)
        assert f"line {row.line}" in line
    for kind in BAD_KINDS:  # what preflight refuses, load_volume refuses too (but only when it reads it)
        if kind != "missing":
            with pytest.raises(ValueError):
                load_volume(bad[kind])


def test_preflight_caps_the_listing(tmp_path):
    write_cohort(tmp_path, subjects=20)
    rows = read_labels(tmp_path, TASKS)
    for path in sorted((tmp_path / "volumes").glob("*.npy"))[:25]:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"(?s)^25 of 60 volume\(s\).*\n  \.\.\. and 5 more$") as info:
        preflight(tmp_path, rows, progress=False)
    assert len(str(info.value).splitlines()) == 1 + PREFLIGHT_LISTED + 1


def test_preflight_checks_nifti_volumes_in_full(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    write_cohort(tmp_path, subjects=3)
    rows = read_labels(tmp_path, TASKS)
    for path in sorted((tmp_path / "volumes").glob("*.npy")):
        nibabel.save(nibabel.Nifti1Image(np.load(path), np.eye(4)), str(path.with_suffix(".nii.gz")))
        path.unlink()
    assert len(preflight(tmp_path, rows, progress=False)) == len(rows)
    first, second, third = sorted((tmp_path / "volumes").glob("*.nii.gz"))[:3]
    data = first.read_bytes()
    first.write_bytes(data[:len(data) // 2])  # the header is intact: only a full decode finds this
    nibabel.save(nibabel.Nifti1Image(np.full((5, 5, 5), np.inf, np.float32), np.eye(4)), str(second))
    nibabel.save(nibabel.Nifti1Image(np.zeros((5, 5, 5, 2), np.float32), np.eye(4)), str(third))
    with pytest.raises(ValueError, match=r"^3 of \d+ volume") as info:
        preflight(tmp_path, rows, progress=False)
    message = str(info.value)
    assert re.search(rf"{first.name} .*cannot be read: EOFError", message)
    assert re.search(rf"{second.name} .*contains NaN or infinite values", message)
    assert re.search(rf"{third.name} .*shape \(5, 5, 5, 2\): expected 3 dimensions", message)


def test_preflight_is_fast_on_small_npy_volumes(tmp_path):
    write_cohort(tmp_path, subjects=100, shape=(48, 80, 10))  # the demo cohort's volume size
    rows = read_labels(tmp_path, TASKS)
    files = sorted((tmp_path / "volumes").glob("*.npy"))
    # Against a plain read of the same files in the same run (a wall-clock bound failed on a loaded machine):
    # the checks cost at most a few plain reads, whatever else the machine is doing.
    # Best of three each, interleaved: one descheduled pass must not decide it.
    plain = checked = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for path in files:
            assert np.isfinite(np.load(path)).all()
        plain = min(plain, time.perf_counter() - started)
        started = time.perf_counter()
        preflight(tmp_path, rows, progress=False, workers=1)
        checked = min(checked, time.perf_counter() - started)
    assert len(files) == len(rows)
    assert checked < 5 * plain + 0.05, f"preflight {checked:.3f} s, plain reads {plain:.3f} s"


def test_utf16_labels_are_named_as_such(tmp_path):
    write_cohort(tmp_path, subjects=3)
    path = tmp_path / "labels.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    with pytest.raises(ValueError, match=r"labels.csv is not UTF-8 text \(it looks like UTF-16\): byte 0x.. at "
                                         r"line 1, byte 1"):
        read_labels(tmp_path, TASKS)


def test_preflight_can_be_limited_to_existence(tmp_path, monkeypatch):
    write_cohort(tmp_path, subjects=3)
    rows = read_labels(tmp_path, TASKS)
    first, second = sorted((tmp_path / "volumes").glob("*.npy"))[:2]
    first.write_bytes(b"junk")
    second.unlink()
    monkeypatch.setenv("SPINERANK_PREFLIGHT", "0")
    with pytest.raises(ValueError, match=r"^1 of \d+ volume\(s\)") as info:
        preflight(tmp_path, rows, progress=False)
    assert second.name in str(info.value) and first.name not in str(info.value)
    monkeypatch.setenv("SPINERANK_PREFLIGHT", "1")
    with pytest.raises(ValueError, match=r"^2 of \d+ volume\(s\)"):
        preflight(tmp_path, rows, progress=False)
