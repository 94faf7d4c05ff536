"""spinerank import rsna (importers/rsna.py, importers/dicom.py) on synthetic DICOM
studies written in the RSNA 2024 layout (importers/rsna_phantom.py): DICOM slice
order and geometry, where every crop comes from in millimetres and degrees, what
it shows, the grades on the right level, bad input, an interrupted import, and
import -> train -> evaluate (with the competition's metric) -> predict on DICOM."""
import json
import shutil

import nibabel
import numpy as np
import pytest
from conftest import axis_angle_deg as angle
from conftest import crop_world
from conftest import read_csv_rows as read_csv

from spinerank import cli
from spinerank.importers import geometry, rsna
from spinerank.tasks import TaskTable

pydicom = pytest.importorskip("pydicom")
from spinerank.importers import dicom, rsna_phantom  # noqa: E402

GRID = geometry.CropGrid((48, 80, 10), (1.2, 1.2, 4.0))
SEQUENCE_OF = {"Sagittal T2/STIR": "T2", "Sagittal T1": "T1"}
PHANTOM_SEQUENCE = {"T2": "t2", "T1": "t1"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna") / "rsna-2024"
    truth = rsna_phantom.write_rsna(root, studies=3, seed=0)
    return root, truth


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    root, truth = source
    out = tmp_path_factory.mktemp("imported") / "data"
    summary = rsna.import_rsna(root, out, grid=GRID, workers=2, progress=False)
    return out, summary, truth


def expected_centre(study, level):
    """The level's point in world LPS: its canal point, else the midpoint of its foraminal points."""
    points = study["points"]
    if ("Spinal Canal Stenosis", level) in points:
        return np.asarray(points["Spinal Canal Stenosis", level]["world"]), "canal"
    left = points.get(("Left Neural Foraminal Narrowing", level))
    right = points.get(("Right Neural Foraminal Narrowing", level))
    if left is None or right is None:
        return None, None
    return (np.asarray(left["world"]) + np.asarray(right["world"])) / 2, "foramina"


def test_slices_are_ordered_in_space_whatever_the_instance_numbers(source):
    _, truth = source
    orders = set()
    for study in truth["studies"].values():
        for sid, series in study["series"].items():
            read = dicom.read_series(series["folder"])
            if len(series["stacks"]) > 1:  # an axial series of two angled stacks: one is used, the other named
                assert any("2 stacks of different orientation" in p for p in read.problems)
                continue
            orders.add(series["instance_order"])
            scan = read.scan
            assert scan.array.shape[0] == len(series["slices"])
            for k, truth_slice in enumerate(series["slices"]):
                first_pixel = scan.world_of_indices(np.array([[k, 0, 0]]))[0]
                assert np.allclose(first_pixel, truth_slice["position"], atol=1e-3)
            # Each instance's pixels are its own file's, in that spatial place.
            k = len(series["slices"]) // 2
            file = series["slices"][k]["file"]
            assert np.array_equal(scan.array[k], pydicom.dcmread(str(file)).pixel_array.astype(np.float32))
    assert {"against", "shuffled"} <= orders


def test_labels_hold_every_placed_level_of_every_sagittal_series_with_its_grades(imported):
    out, summary, truth = imported
    rows = read_csv(out / "labels.csv")
    expected = set()
    for study_id, study in truth["studies"].items():
        sequences = {SEQUENCE_OF[s["description"]] for s in study["series"].values() if s["description"] in
                     SEQUENCE_OF}
        for level in rsna.LEVELS:
            if expected_centre(study, level)[0] is not None:
                expected |= {(str(study_id), level, seq) for seq in sequences}
    assert {(r["subject_id"], r["level"], r["sequence"]) for r in rows} == expected and len(rows) == len(expected)
    values = {"Normal/Mild": "0", "Moderate": "1", "Severe": "2", None: ""}
    for row in rows:
        study = truth["studies"][int(row["subject_id"])]
        for condition, task in rsna.CONDITIONS.items():
            assert row[task] == values[study["grades"][condition, row["level"]]], (row, task)
    table = TaskTable.from_file(out / "tasks.json")
    assert table == rsna.TASKS and table.swap_pairs == [(1, 2), (3, 4)]
    assert summary["counts"]["axial_series_not_read"] == len(truth["studies"])


def test_every_crop_is_centred_on_its_level_point_and_aligned_with_the_spine(imported):
    out, _, truth = imported
    centred_on = set()
    for row in read_csv(out / "labels.csv"):
        study = truth["studies"][int(row["subject_id"])]
        centre, kind = expected_centre(study, row["level"])
        assert row["centred_on"] == kind
        centred_on.add(kind)
        image = nibabel.load(str(out / "volumes" / f"{row['ivd_id']}_{row['sequence']}.nii.gz"))
        affine = image.affine
        got = geometry.LPS_TO_RAS @ (affine @ np.r_[(np.array(GRID.shape) - 1) / 2, 1])[:3]
        assert np.linalg.norm(got - centre) < 2.0, row
        disc = next(d for d in study["phantom"].discs if d.label == rsna_phantom.LEVEL_DISCS[row["level"]])
        _, axes = crop_world(image)
        assert angle(axes[0], disc.normal) < 10 and axes[0] @ disc.normal > 0, row
        assert angle(axes[1], disc.posterior) < 10 and axes[1] @ disc.posterior > 0, row
        assert angle(axes[2], disc.right) < 10 and axes[2] @ disc.right > 0, row
    assert centred_on == {"canal", "foramina"}  # the phantom leaves one canal point out


def test_each_crop_shows_the_phantom_at_its_level(imported):
    """The crop's voxels are the phantom's image at their world points, and the
    disc nearest the crop's centre is the disc of the row's level."""
    out, _, truth = imported
    for row in read_csv(out / "labels.csv"):
        phantom = truth["studies"][int(row["subject_id"])]["phantom"]
        image = nibabel.load(str(out / "volumes" / f"{row['ivd_id']}_{row['sequence']}.nii.gz"))
        crop = image.get_fdata(dtype=np.float32)
        world, _ = crop_world(image)
        expected = phantom.intensity_at(world.reshape(-1, 3), PHANTOM_SEQUENCE[row["sequence"]]).reshape(GRID.shape)
        inside = crop != 0
        assert np.corrcoef(crop[inside], expected[inside])[0, 1] > 0.8, row
        centre = world[tuple(n // 2 for n in GRID.shape)]
        nearest = min(phantom.discs, key=lambda d: np.linalg.norm(d.centre - centre))
        assert nearest.label == rsna_phantom.LEVEL_DISCS[row["level"]], row


def test_the_report_names_what_was_skipped(imported):
    out, _, truth = imported
    report = read_csv(out / "import_report.csv")
    # The quirks the importer reads past are named: the second stack of the two-stack axial series is not
    # read at all (axial series are not read); nothing else of a well-formed phantom is skipped.
    assert not [r for r in report if r["kind"] in ("series", "study", "point", "grade")]
    levels = [r for r in report if r["kind"] == "level"]
    for r in levels:
        assert expected_centre(truth["studies"][int(r["patient"])], r["ivd_label"])[0] is None


def copy_source(root, dest):
    shutil.copytree(root, dest)
    return dest


def test_bad_input_becomes_report_rows(source, tmp_path):
    root, truth = source
    src = copy_source(root, tmp_path / "S")
    studies = list(truth["studies"].items())
    # 1. a damaged DICOM file in a sagittal series: that file is named, the rest of the series used
    sid0, s0 = studies[0]
    series0 = next(v for v in s0["series"].values() if v["description"] == "Sagittal T1")
    broken = src / series0["slices"][0]["file"].relative_to(root)
    broken.write_bytes(b"not a dicom file")
    # 2. a series listed without files, and with it a study left without a sagittal series
    sid1, s1 = studies[1]
    for sid, series in s1["series"].items():
        if series["description"] in SEQUENCE_OF:
            shutil.rmtree(src / series["folder"].relative_to(root))
    # 3. a coordinate on an instance that does not exist
    coordinates = src / "train_label_coordinates.csv"
    lines = coordinates.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if line.startswith(f"{studies[2][0]},")
                  and "Spinal Canal Stenosis" in line)
    cells = lines[target].split(",")
    cells[2] = "999"
    lines[target] = ",".join(cells)
    coordinates.write_text("\r\n".join(lines) + "\r\n")
    out = tmp_path / "out"
    rsna.import_rsna(src, out, grid=GRID, workers=1, progress=False)
    report = read_csv(out / "import_report.csv")
    assert any(r["kind"] == "dicom" and str(broken) in r["reason"] for r in report)
    assert sum(r["kind"] == "series" and r["patient"] == str(sid1) and "holds no .dcm files" in r["reason"]
               for r in report) == 2
    assert any(r["kind"] == "study" and r["patient"] == str(sid1) for r in report)
    missing = [r for r in report if r["kind"] == "point"]
    assert len(missing) == 1 and "instance 999" in missing[0]["reason"] and missing[0]["line"] == str(target + 1)
    rows = read_csv(out / "labels.csv")
    assert str(sid1) not in {r["subject_id"] for r in rows}
    assert any(r["subject_id"] == str(sid0) and r["sequence"] == "T1" for r in rows)


def test_a_missing_csv_or_an_unknown_spelling_is_named(source, tmp_path):
    root, _ = source
    src = copy_source(root, tmp_path / "S")
    (src / "train_series_descriptions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="train_series_descriptions.csv not found"):
        rsna.import_rsna(src, tmp_path / "out", grid=GRID, progress=False)
    src2 = copy_source(root, tmp_path / "S2")
    grades = src2 / "train.csv"
    grades.write_text(grades.read_text().replace("spinal_canal_stenosis_l1_l2", "spinal_canal_stenosis_L1_L2"))
    with pytest.raises(ValueError, match=r"train.csv: missing column\(s\) 'spinal_canal_stenosis_l1_l2'"):
        rsna.import_rsna(src2, tmp_path / "out2", grid=GRID, progress=False)


def test_an_interrupted_import_finishes_when_rerun(source, tmp_path, monkeypatch):
    root, _ = source
    out = tmp_path / "data"
    real = rsna.import_study
    calls = []

    def interrupted(job):
        if calls:
            raise KeyboardInterrupt
        calls.append(job.study)
        return real(job)

    monkeypatch.setattr(rsna, "import_study", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rsna.import_rsna(root, out, grid=GRID, workers=1, progress=False)
    monkeypatch.setattr(rsna, "import_study", real)
    record = (out / ".import" / f"{calls[0]}.json").stat().st_mtime_ns
    rsna.import_rsna(root, out, grid=GRID, workers=1, progress=False)
    rows = read_csv(out / "labels.csv")
    assert len({(r["ivd_id"], r["sequence"]) for r in rows}) == len(rows)
    assert (out / ".import" / f"{calls[0]}.json").stat().st_mtime_ns == record
    assert not list(out.rglob("*.tmp"))


def test_import_train_evaluate_predict_end_to_end(tmp_path, capsys):
    root = tmp_path / "rsna-2024"
    truth = rsna_phantom.write_rsna(root, studies=10, seed=1)
    data = tmp_path / "data"
    assert cli.main(["import", "rsna", str(root), "--out", str(data), "--shape", *map(str, GRID.shape),
                     "--spacing", *map(str, GRID.spacing), "--quiet"]) == 0
    assert "imported" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--epochs-phase1", "1",
                     "--epochs-phase2", "1", "--quiet"]) == 0
    assert cli.main(["evaluate", "--run", str(run), "--no-tta", "--quiet"]) == 0
    metrics = json.loads((run / "eval-no-tta" / "metrics.json").read_text())
    assert np.isfinite(metrics["rsna_2024"]["score"])
    # Predict one study's T2 series from its competition coordinates (pixel coordinates on instances).
    study_id, study = next(iter(truth["studies"].items()))
    sid, series = next((s, v) for s, v in study["series"].items() if v["description"] == "Sagittal T2/STIR")
    points = tmp_path / "points.csv"
    with open(points, "w") as f:
        f.write("level,instance_number,x,y\n")
        for (condition, level), p in sorted(study["points"].items(), key=lambda kv: kv[0][1]):
            if condition == "Spinal Canal Stenosis" and p["series_id"] == sid:
                f.write(f"{level},{p['instance']},{p['x']},{p['y']}\n")
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--dicom", str(series["folder"]),
                     "--disc-points", str(points), "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out)
    assert rows and all(0 <= int(r["SpinalCanalStenosis_grade"]) <= 2 for r in rows)
    for row in rows:
        world = np.asarray(study["points"]["Spinal Canal Stenosis", row["level"]]["world"])
        centre = geometry.LPS_TO_RAS @ np.array([float(row[c]) for c in ("centre_r", "centre_a", "centre_s")])
        assert np.linalg.norm(centre - world) < 0.01  # written to 0.01 mm
