"""The RSNA 2024 phantom writer (spinerank.importers.rsna_phantom): files read back with
pydicom and the csv module and checked against the competition's layout (DATASETS.md
section 2) and against the phantom's own truth. Geometry is recomputed from the tags with
the DICOM formula, independently of the writer's helpers."""
import csv
import math
import pathlib
import time

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from spinerank.importers import rsna_phantom  # noqa: E402

LEVELS = ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]
TRAIN_HEADER = ",".join(
    ["study_id"]
    + [f"spinal_canal_stenosis_{lv}" for lv in LEVELS]
    + [f"left_neural_foraminal_narrowing_{lv}" for lv in LEVELS]
    + [f"right_neural_foraminal_narrowing_{lv}" for lv in LEVELS]
    + [f"left_subarticular_stenosis_{lv}" for lv in LEVELS]
    + [f"right_subarticular_stenosis_{lv}" for lv in LEVELS]
).encode() + b"\n"
COORDINATES_HEADER = b"study_id,series_id,instance_number,condition,level,x,y\n"
DESCRIPTIONS_HEADER = b"study_id,series_id,series_description\n"
EXPECTED_SERIES = {
    "Spinal Canal Stenosis": "Sagittal T2/STIR",
    "Left Neural Foraminal Narrowing": "Sagittal T1",
    "Right Neural Foraminal Narrowing": "Sagittal T1",
    "Left Subarticular Stenosis": "Axial T2",
    "Right Subarticular Stenosis": "Axial T2",
}
LEVEL_NAMES = ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
DISC_OF_LEVEL = {"L1/L2": 205, "L2/L3": 204, "L3/L4": 203, "L4/L5": 202, "L5/S1": 201}
SEQUENCE_OF = {"Sagittal T2/STIR": "t2", "Sagittal T1": "t1", "Axial T2": "t2"}


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    start = time.perf_counter()
    truth = rsna_phantom.write_rsna(root, studies=3, seed=0)
    return root, truth, time.perf_counter() - start


@pytest.fixture(scope="module")
def files(rsna):
    """{(study_id, series_id): {instance number (file name): dataset}} read back."""
    root, _, _ = rsna
    out = {}
    for path in sorted((root / "train_images").glob("*/*/*.dcm")):
        out.setdefault((int(path.parent.parent.name), int(path.parent.name)), {})[int(path.stem)] = \
            pydicom.dcmread(path)
    return out


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def geometry(ds):
    """(IPP, row direction, column direction, (row spacing, column spacing)) as floats."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return (np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:],
            tuple(float(v) for v in ds.PixelSpacing))


def pixel_world(ds, x, y):
    """The DICOM formula: IPP + x * PixelSpacing[1] * IOP[0:3] + y * PixelSpacing[0] * IOP[3:6]."""
    ipp, row, column, spacing = geometry(ds)
    return ipp + x * spacing[1] * row + y * spacing[0] * column


def slice_normal(ds):
    _, row, column, _ = geometry(ds)
    n = np.cross(row, column)
    return n / np.linalg.norm(n)


def stacks_of(datasets):
    """Instances grouped by IOP rounded to 3 decimals, each group sorted by IPP projected
    on its normal; groups ordered by the mean z of their IPPs (inferior first)."""
    groups = {}
    for number, ds in datasets.items():
        key = tuple(np.round([float(v) for v in ds.ImageOrientationPatient], 3))
        groups.setdefault(key, []).append(number)
    ordered = []
    for numbers in groups.values():
        n = slice_normal(datasets[numbers[0]])
        numbers.sort(key=lambda k: geometry(datasets[k])[0] @ n)
        ordered.append(numbers)
    ordered.sort(key=lambda ns: np.mean([geometry(datasets[k])[0][2] for k in ns]))
    return ordered


def all_series(truth):
    return [(study_id, series_id, series) for study_id, study in truth["studies"].items()
            for series_id, series in study["series"].items()]


# ---- layout and CSVs -------------------------------------------------------------------


def test_write_time_and_layout(rsna, files):
    root, truth, seconds = rsna
    assert seconds < 30.0, f"writing 3 studies took {seconds:.1f} s (target: under ~10 s)"
    assert sorted(p.name for p in root.iterdir()) == [
        "train.csv", "train_images", "train_label_coordinates.csv", "train_series_descriptions.csv"]
    study_dirs = sorted(p.name for p in (root / "train_images").iterdir())
    assert sorted(int(s) for s in study_dirs) == sorted(truth["studies"])
    for name in study_dirs:
        assert name.isdigit() and 8 <= len(name) <= 10
        for series_dir in (root / "train_images" / name).iterdir():
            assert series_dir.name.isdigit() and 8 <= len(series_dir.name) <= 10
            names = sorted(p.name for p in series_dir.iterdir())
            assert names == sorted(f"{k}.dcm" for k in range(1, len(names) + 1))
    for (study_id, series_id), datasets in files.items():
        for number, ds in datasets.items():
            assert int(ds.InstanceNumber) == number
            assert ds.PatientID == str(study_id)
    series_ids = [series_id for _, series_id, _ in all_series(truth)]
    assert len(set(series_ids)) == len(series_ids) == 9


def test_csv_headers_exact(rsna):
    root, _, _ = rsna
    assert (root / "train.csv").read_bytes().splitlines(keepends=True)[0] == TRAIN_HEADER
    assert (root / "train_label_coordinates.csv").read_bytes().splitlines(keepends=True)[0] == COORDINATES_HEADER
    assert (root / "train_series_descriptions.csv").read_bytes().splitlines(keepends=True)[0] == DESCRIPTIONS_HEADER
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
        assert b"\r" not in (root / name).read_bytes()
    assert rsna_phantom.TRAIN_COLUMNS == tuple(TRAIN_HEADER.decode().strip().split(","))


def test_series_descriptions(rsna, files):
    root, truth, _ = rsna
    rows = read_rows(root / "train_series_descriptions.csv")
    assert len(rows) == 9
    by_study = {}
    for row in rows:
        study_id, series_id = int(row["study_id"]), int(row["series_id"])
        by_study.setdefault(study_id, []).append(row["series_description"])
        assert (study_id, series_id) in files
        assert all(ds.SeriesDescription == row["series_description"] for ds in files[(study_id, series_id)].values())
        assert truth["studies"][study_id]["series"][series_id]["description"] == row["series_description"]
    for descriptions in by_study.values():
        assert sorted(descriptions) == ["Axial T2", "Sagittal T1", "Sagittal T2/STIR"]


def test_train_csv_grades(rsna):
    root, truth, _ = rsna
    rows = read_rows(root / "train.csv")
    assert [int(r["study_id"]) for r in rows] == sorted(truth["studies"])
    values, empty = [], []
    for row in rows:
        study = truth["studies"][int(row["study_id"])]
        for condition in EXPECTED_SERIES:
            for level in LEVEL_NAMES:
                column = f"{condition.lower().replace(' ', '_')}_{level.lower().replace('/', '_')}"
                value = row[column]
                assert value in ("Normal/Mild", "Moderate", "Severe", "")
                assert study["grades"][(condition, level)] == (value or None)
                values.append(value)
                if value == "":
                    empty.append((int(row["study_id"]), column))
    assert {"Normal/Mild", "Moderate", "Severe"} <= set(values)
    assert values.count("Normal/Mild") > len(values) / 2
    assert sorted(empty) == sorted(truth["incomplete"]) and empty


# ---- coordinates --------------------------------------------------------------------


def test_coordinate_rows_name_existing_instances_of_the_right_series(rsna, files):
    root, truth, _ = rsna
    descriptions = {int(r["series_id"]): r["series_description"]
                    for r in read_rows(root / "train_series_descriptions.csv")}
    rows = read_rows(root / "train_label_coordinates.csv")
    assert len(rows) == sum(len(s["points"]) for s in truth["studies"].values())
    seen = set()
    for row in rows:
        study_id, series_id = int(row["study_id"]), int(row["series_id"])
        condition, level = row["condition"], row["level"]
        assert condition in EXPECTED_SERIES and level in LEVEL_NAMES
        assert descriptions[series_id] == EXPECTED_SERIES[condition]
        instance = int(row["instance_number"])
        assert (root / "train_images" / str(study_id) / str(series_id) / f"{instance}.dcm").is_file()
        ds = files[(study_id, series_id)][instance]
        x, y = float(row["x"]), float(row["y"])
        assert 0 <= x <= int(ds.Columns) - 1 and 0 <= y <= int(ds.Rows) - 1
        point = truth["studies"][study_id]["points"][(condition, level)]
        assert (point["series_id"], point["instance"], point["x"], point["y"]) == (series_id, instance, x, y)
        # A labelled cell only: empty grades have no annotation.
        assert truth["studies"][study_id]["grades"][(condition, level)] is not None
        seen.add((study_id, condition, level))
    assert len(seen) == len(rows)


def test_world_from_tags_matches_truth_and_target(rsna, files):
    _, truth, _ = rsna
    checked = 0
    for study_id, study in truth["studies"].items():
        for key, point in study["points"].items():
            ds = files[(study_id, point["series_id"])][point["instance"]]
            world = pixel_world(ds, point["x"], point["y"])
            np.testing.assert_allclose(world, point["world"], atol=1e-3)
            n = slice_normal(ds)
            offset = point["target"] - world
            spacing = study["series"][point["series_id"]]["spacing_between_slices"]
            assert abs(offset @ n) <= spacing / 2 + 1e-3, key
            # The rest of the offset is along the normal: world is the target's projection.
            assert np.linalg.norm(offset - (offset @ n) * n) < 1e-3, key
            checked += 1
    assert checked > 40


def test_targets_are_anatomical(rsna):
    _, truth, _ = rsna
    for study in truth["studies"].values():
        phantom = study["phantom"]
        assert phantom.num_vertebrae >= 6
        discs = {d.label: d for d in phantom.discs}
        points = study["points"]
        spinal = [(lv, p["target"]) for (c, lv), p in points.items() if c == "Spinal Canal Stenosis"]
        assert spinal
        assert (phantom.labels_at(np.array([t for _, t in spinal])) == 100).all()
        for level, target in spinal:
            disc = discs[DISC_OF_LEVEL[level]]
            # Posterior of the disc centre, in its mid-plane.
            assert (target - disc.centre) @ disc.posterior > 20.0
            assert abs((target - disc.centre) @ disc.normal) < 1e-6
        for level in LEVEL_NAMES:
            disc = discs[DISC_OF_LEVEL[level]]
            left = -disc.right
            for side, sign in (("Left", 1.0), ("Right", -1.0)):
                foramen = points.get((f"{side} Neural Foraminal Narrowing", level))
                if foramen is not None:
                    lateral = (foramen["target"] - disc.centre) @ left * sign
                    assert 18.0 - 1e-6 <= lateral <= 22.0 + 1e-6
                    assert 8.0 - 1e-6 <= (foramen["target"] - disc.centre) @ disc.posterior <= 12.0 + 1e-6
                    # Patient left is +x.
                    assert np.sign(foramen["target"][0] - disc.centre[0]) == sign
                zone = points.get((f"{side} Subarticular Stenosis", level))
                if zone is not None:
                    lateral = (zone["target"] - phantom.canal_centre(disc.label)) @ left * sign
                    assert 7.0 - 1e-6 <= lateral <= 9.0 + 1e-6


def test_canal_points_at_every_level_of_most_studies(rsna):
    _, truth, _ = rsna
    complete = [sid for sid, s in truth["studies"].items()
                if all(("Spinal Canal Stenosis", lv) in s["points"] for lv in LEVEL_NAMES)]
    assert len(complete) >= 2
    # Subarticular points exist exactly at the axial series' levels (where graded).
    for study in truth["studies"].values():
        for (condition, level), point in study["points"].items():
            if "Subarticular" in condition:
                assert level in study["axial_levels"]


# ---- DICOM files ----------------------------------------------------------------------


def test_dicom_part10_and_pixel_format(rsna, files):
    _, truth, _ = rsna
    sop_uids, series_uids = set(), set()
    for (study_id, series_id), datasets in files.items():
        series = truth["studies"][study_id]["series"][series_id]
        uids = {ds.SeriesInstanceUID for ds in datasets.values()}
        assert len(uids) == 1
        series_uids |= uids
        brightest = 0   # outer sagittal slices may miss the spine: noise only
        assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 1
        for number, ds in datasets.items():
            raw = (series["folder"] / f"{number}.dcm").read_bytes()
            assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.MRImageStorage
            assert ds.SOPClassUID == pydicom.uid.MRImageStorage
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            sop_uids.add(ds.SOPInstanceUID)
            assert ds.Modality == "MR" and ds.PhotometricInterpretation == "MONOCHROME2"
            assert (ds.BitsAllocated, ds.PixelRepresentation, ds.SamplesPerPixel) == (16, 0, 1)
            assert ds.BitsStored in (12, 16) and ds.HighBit == ds.BitsStored - 1
            assert ds.Manufacturer and float(ds.MagneticFieldStrength) in (1.5, 3.0)
            assert int(ds.SeriesNumber) >= 1
            image = ds.pixel_array
            assert image.dtype == np.uint16
            assert image.shape == (ds.Rows, ds.Columns) == (series["rows"], series["columns"])
            assert image.max() <= 2 ** ds.BitsStored - 1
            brightest = max(brightest, int(image.max()))
            assert 3.0 <= float(ds.SliceThickness) <= 4.0
            if series["missing_tag"] != "SpacingBetweenSlices":
                assert float(ds.SpacingBetweenSlices) == pytest.approx(series["spacing_between_slices"])
        assert brightest > 500
    assert len(series_uids) == 9 and len(sop_uids) == sum(len(d) for d in files.values())


def test_sagittal_grids_sizes(rsna, files):
    _, truth, _ = rsna
    for study_id, series_id, series in all_series(truth):
        ds = next(iter(files[(study_id, series_id)].values()))
        _, _, _, spacing = geometry(ds)
        if series["description"].startswith("Sagittal"):
            assert 15 <= len(series["slices"]) <= 17
            assert all(1.0 <= s <= 1.4 for s in spacing)
            assert 200 <= ds.Rows <= 260 and 200 <= ds.Columns <= 260
            assert 3.5 <= series["spacing_between_slices"] <= 4.5
        else:
            assert 3 <= len(series["slices"]) <= 30


def test_tags_match_truth_and_spatial_order(rsna, files):
    _, truth, _ = rsna
    for study_id, series_id, series in all_series(truth):
        datasets = files[(study_id, series_id)]
        assert sorted(datasets) == sorted(s["instance"] for s in series["slices"])
        for entry in series["slices"]:
            ipp, row, column, spacing = geometry(datasets[entry["instance"]])
            np.testing.assert_allclose(ipp, entry["position"], atol=1e-6)
            np.testing.assert_allclose(slice_normal(datasets[entry["instance"]]), entry["normal"], atol=1e-9)
            assert spacing == pytest.approx(series["pixel_spacing"])
        np.testing.assert_allclose(slice_normal(datasets[series["slices"][0]["instance"]]), series["normal"], atol=1e-9)
        # Sorting by IPP projected on the normal (per IOP group) gives the truth's order.
        order = [k for stack in stacks_of(datasets) for k in stack]
        assert order == [s["instance"] for s in series["slices"]]
        assert [k for stack in stacks_of(datasets) for k in stack] == [k for st in series["stacks"] for k in st]
        # Consecutive slices of a stack are SpacingBetweenSlices apart along the normal.
        for stack in stacks_of(datasets):
            n = slice_normal(datasets[stack[0]])
            steps = np.diff([geometry(datasets[k])[0] @ n for k in stack])
            np.testing.assert_allclose(steps, series["spacing_between_slices"], atol=1e-5)


def test_images_are_the_phantom_at_the_pixel_centres(rsna, files):
    """The middle slice of every series against the phantom sampled at the pixel centres
    computed from the tags: catches transposed or flipped pixel grids."""
    _, truth, _ = rsna
    for study_id, series_id, series in all_series(truth):
        study = truth["studies"][study_id]
        ds = files[(study_id, series_id)][series["slices"][len(series["slices"]) // 2]["instance"]]
        rows, columns = np.mgrid[0:ds.Rows, 0:ds.Columns]
        points = pixel_world(ds, columns.reshape(-1, 1), rows.reshape(-1, 1))
        expected = study["phantom"].intensity_at(points, SEQUENCE_OF[series["description"]], study["pfirrmann"])
        image = ds.pixel_array.reshape(-1).astype(float)
        assert np.corrcoef(image, expected)[0, 1] > 0.98
        # Transposed (where square) or flipped grids correlate much worse.
        flipped = ds.pixel_array[::-1, ::-1].reshape(-1).astype(float)
        assert np.corrcoef(flipped, expected)[0, 1] < 0.9


def test_canal_point_is_bright_on_t2(rsna, files):
    _, truth, _ = rsna
    for study_id, study in truth["studies"].items():
        for (condition, level), point in study["points"].items():
            if condition != "Spinal Canal Stenosis":
                continue
            image = files[(study_id, point["series_id"])][point["instance"]].pixel_array
            value = image[int(round(point["y"])), int(round(point["x"]))]
            assert value > 0.6 * np.percentile(image, 99.9)


# ---- quirks -------------------------------------------------------------------------


def rotation_angle_from_standard(ds):
    """Degrees between the slice frame and the nearest frame with axis-aligned IOP."""
    _, row, column, _ = geometry(ds)
    frame = np.column_stack([row, column, np.cross(row, column)])
    standard = np.zeros((3, 3))
    for m in range(3):
        k = int(np.argmax(np.abs(frame[:, m])))
        standard[k, m] = np.sign(frame[k, m])
    cos = (np.trace(standard.T @ frame) - 1) / 2
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def test_quirks_present(rsna, files):
    _, truth, _ = rsna
    orders, sagittal_iops = {}, set()
    for study_id, series_id, series in all_series(truth):
        datasets = files[(study_id, series_id)]
        spatial = [k for stack in stacks_of(datasets) for k in stack]
        count = len(spatial)
        if spatial == list(range(1, count + 1)):
            order = "along"
        elif spatial == list(range(count, 0, -1)):
            order = "against"
        else:
            order = "shuffled"
        assert order == series["instance_order"]
        orders.setdefault(order, []).append(series["description"])
        if order == "against":
            # Instance 1 is at the far end along the normal.
            n = slice_normal(datasets[1])
            assert geometry(datasets[1])[0] @ n == max(geometry(ds)[0] @ n for ds in datasets.values())
        angle = rotation_angle_from_standard(datasets[1])
        if series["oblique"]:
            assert series["description"].startswith("Sagittal") and 8.0 - 1e-6 <= angle <= 15.0 + 1e-6
        elif series["description"].startswith("Sagittal"):
            assert angle < 1e-6
            sagittal_iops.add(tuple(round(float(v)) for v in datasets[1].ImageOrientationPatient))
        missing = ["SpacingBetweenSlices" not in ds for ds in datasets.values()]
        assert all(missing) == (series["missing_tag"] == "SpacingBetweenSlices") and (all(missing) or not any(missing))
        assert len(stacks_of(datasets)) == len(series["stacks"])
    assert {"along", "against", "shuffled"} <= set(orders)
    assert any(s["oblique"] for _, _, s in all_series(truth))
    assert any(s["missing_tag"] == "SpacingBetweenSlices" and s["description"].startswith("Sagittal")
               for _, _, s in all_series(truth))
    assert {(0, 1, 0, 0, 0, -1), (0, -1, 0, 0, 0, -1)} <= sagittal_iops
    np.testing.assert_allclose(np.cross([0, 1, 0], [0, 0, -1]), [-1, 0, 0])
    # Non-square pixels somewhere; 12 bits stored somewhere.
    assert any(abs(s["pixel_spacing"][0] - s["pixel_spacing"][1]) > 0.01 for _, _, s in all_series(truth))
    assert any(s["bits_stored"] == 12 for _, _, s in all_series(truth))


def test_two_stack_axial_series(rsna, files):
    _, truth, _ = rsna
    two = [(sid, ser_id, s) for sid, ser_id, s in all_series(truth) if len(s["stacks"]) == 2]
    assert len(two) == 1 and two[0][2]["description"] == "Axial T2"
    study_id, series_id, series = two[0]
    datasets = files[(study_id, series_id)]
    stacks = stacks_of(datasets)
    normals = [slice_normal(datasets[stack[0]]) for stack in stacks]
    assert math.degrees(math.acos(normals[0] @ normals[1])) > 1.0
    # Each stack is angled to its own disc: its normal is within a degree of the disc's.
    phantom = truth["studies"][study_id]["phantom"]
    discs = {d.label: d for d in phantom.discs}
    for stack_levels, normal in zip(truth["studies"][study_id]["axial_stacks"], normals):
        (level,) = stack_levels
        assert -discs[DISC_OF_LEVEL[level]].normal @ normal > math.cos(math.radians(1.0))


def test_incomplete_row_and_missing_canal_point(rsna):
    root, truth, _ = rsna
    assert truth["incomplete"] and truth["no_canal_point"]
    rows = read_rows(root / "train_label_coordinates.csv")
    train = {int(r["study_id"]): r for r in read_rows(root / "train.csv")}
    for study_id, level in truth["no_canal_point"]:
        here = {(r["condition"]) for r in rows if int(r["study_id"]) == study_id and r["level"] == level}
        assert "Spinal Canal Stenosis" not in here
        # Both foraminal points remain (the importer's fallback) and the cell is graded.
        assert {"Left Neural Foraminal Narrowing", "Right Neural Foraminal Narrowing"} <= here
        assert train[study_id][f"spinal_canal_stenosis_{level.lower().replace('/', '_')}"] != ""
    for study_id, column in truth["incomplete"]:
        assert train[study_id][column] == ""
        # No coordinate row for an empty cell.
        assert not any(int(r["study_id"]) == study_id and rsna_phantom.column_name(r["condition"], r["level"]) == column
                       for r in rows)


def test_quirks_off(tmp_path):
    truth = rsna_phantom.write_rsna(tmp_path, studies=2, seed=1, quirks=False)
    assert truth["incomplete"] == [] and truth["no_canal_point"] == []
    for study_id, series_id, series in all_series(truth):
        assert series["instance_order"] == "along" and not series["oblique"] and series["missing_tag"] is None
        assert len(series["stacks"]) == 1
        for entry in series["slices"]:
            ds = pydicom.dcmread(entry["file"], stop_before_pixels=True)
            assert "SpacingBetweenSlices" in ds
            if series["description"].startswith("Sagittal"):
                assert [round(float(v)) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    for study in truth["studies"].values():
        assert all(("Spinal Canal Stenosis", lv) in study["points"] for lv in LEVEL_NAMES)
        assert None not in study["grades"].values()


def test_one_study_holds_every_quirk_and_is_deterministic(tmp_path):
    first = rsna_phantom.write_rsna(tmp_path / "a", studies=1, seed=7)
    second = rsna_phantom.write_rsna(tmp_path / "b", studies=1, seed=7)
    series = [s for _, _, s in all_series(first)]
    assert {"against", "shuffled"} <= {s["instance_order"] for s in series}
    assert any(s["oblique"] for s in series) and any(s["missing_tag"] for s in series)
    assert any(len(s["stacks"]) == 2 for s in series)
    assert first["incomplete"] and first["no_canal_point"]
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a_files = sorted(pathlib.Path(tmp_path / "a").glob("train_images/*/*/*.dcm"))
    b_files = sorted(pathlib.Path(tmp_path / "b").glob("train_images/*/*/*.dcm"))
    assert [p.relative_to(tmp_path / "a") for p in a_files] == [p.relative_to(tmp_path / "b") for p in b_files]
    assert a_files[0].read_bytes() == b_files[0].read_bytes()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        rsna_phantom.write_rsna(tmp_path, studies=0)
