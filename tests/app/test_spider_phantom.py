"""The SPIDER phantom writer (spinerank.importers.spider_phantom, imaging the
SpinePhantom of importers.phantom): files read back with SimpleITK and the csv
module and checked against SPIDER's layout (DATASETS.md section 1) and against the
phantom's own truth."""
import csv
import re

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from spinerank.importers import phantom, spider_phantom  # noqa: E402

OVERVIEW_HEADER = (
    b"new_file_name,num_vertebrae,num_discs,sex,birth_date,subset,AngioFlag,BodyPartExamined,"
    b"DeviceSerialNumber,EchoNumbers,EchoTime,EchoTrainLength,FlipAngle,ImagedNucleus,ImagingFrequency,"
    b"InPlanePhaseEncodingDirection,MRAcquisitionType,MagneticFieldStrength,Manufacturer,"
    b"ManufacturerModelName,NumberOfPhaseEncodingSteps,PercentPhaseFieldOfView,PercentSampling,"
    b"PhotometricInterpretation,PixelBandwidth,PixelSpacing,RepetitionTime,SAR,SamplesPerPixel,"
    b"ScanningSequence,SequenceName,SeriesDescription,SliceThickness,SoftwareVersions,"
    b"SpacingBetweenSlices,SpecificCharacterSet,TransmitCoilName,WindowCenter,WindowWidth\r\n"
)
GRADINGS_HEADER = (b"Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,Disc herniation,"
                   b"Disc narrowing,Disc bulging,Pfirrman grade\r\n")
GRADINGS_COLUMNS = GRADINGS_HEADER.decode().strip().split(",")
BINARY = ["UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation", "Disc narrowing", "Disc bulging"]


@pytest.fixture(scope="module")
def spider(tmp_path_factory):
    root = tmp_path_factory.mktemp("spider")
    return root, spider_phantom.write_spider(root, patients=3, seed=0)


@pytest.fixture(scope="module")
def volumes(spider):
    """stem -> (image, mask) as read back by SimpleITK."""
    root, _ = spider
    return {path.stem: (sitk.ReadImage(str(path)), sitk.ReadImage(str(root / "masks" / path.name)))
            for path in sorted((root / "images").glob("*.mha"))}


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def direction(image):
    return np.array(image.GetDirection()).reshape(3, 3)   # column m = index axis m


def world_of(mask, index_xyz):
    """LPS points of (M, 3) ITK indices: origin + D @ (spacing * index)."""
    return np.asarray(mask.GetOrigin()) + (index_xyz * np.asarray(mask.GetSpacing())) @ direction(mask).T


def voxels_labelled(mask, label):
    """World points of the voxels with ``label`` (GetArrayFromImage is [k, j, i])."""
    kji = np.argwhere(sitk.GetArrayFromImage(mask) == label)
    return world_of(mask, kji[:, ::-1].astype(float))


def slice_axis(image):
    """The index axis closest to the patient's left-right axis."""
    return int(np.argmax(np.abs(direction(image)[0])))


def mha_header(path):
    header = {}
    with open(path, "rb") as f:
        for line in f:
            key, _, value = line.decode("ascii").strip().partition(" = ")
            header[key] = value
            if key == "ElementDataFile":
                return header
    raise AssertionError(f"{path}: no ElementDataFile line")


# ---- files and CSVs -------------------------------------------------------------------


def test_layout_and_file_names(spider):
    root, truth = spider
    assert sorted(p.name for p in root.iterdir()) == ["images", "masks", "overview.csv", "radiological_gradings.csv"]
    names = sorted(p.name for p in (root / "images").iterdir())
    assert names == sorted(p.name for p in (root / "masks").iterdir())
    assert names == sorted(["1_t1.mha", "1_t2.mha", "2_t1.mha", "2_t2.mha", "3_t1.mha", "3_t2.mha", "3_t2_SPACE.mha"])
    assert sorted(truth["series"]) == sorted(n[:-4] for n in names)
    for stem, series in truth["series"].items():
        patient, seq = stem.split("_", 1)        # SPIDER: split at the first underscore
        assert (int(patient), seq) == (series["patient"], series["seq"])
        assert series["image"] == root / "images" / f"{stem}.mha"
        assert series["mask"] == root / "masks" / f"{stem}.mha"
        # every series of a patient shows the same phantom
        assert series["phantom"] is truth["series"][f"{patient}_t1"]["phantom"]
        assert series["discs"] == series["phantom"].discs


def test_overview_csv(spider, volumes):
    root, truth = spider
    raw = (root / "overview.csv").read_bytes()
    assert raw.startswith(OVERVIEW_HEADER)                          # exact header, no BOM
    assert raw.count(b"\n") == raw.count(b"\r\n") == len(truth["series"]) + 1
    rows = read_rows(root / "overview.csv")
    assert [len(r) for r in rows] == [39] * len(rows)
    assert sorted(r["new_file_name"] for r in rows) == sorted(truth["series"])
    assert {"F ", "M"} <= {r["sex"] for r in rows} and {r["sex"].strip() for r in rows} <= {"F", "M"}
    ages = [r["birth_date"] for r in rows]
    assert "" in ages and all(14 <= float(age) <= 84 for age in ages if age)
    assert {r["subset"] for r in rows} == {"training", "validation"}
    assert {r["Manufacturer"] for r in rows} == {"SIEMENS", "Philips Healthcare", "Philips Medical Systems"}
    assert {r["MagneticFieldStrength"] for r in rows} == {"1.5", "3.0"}
    assert sorted(r["ScanningSequence"] for r in rows) == ["SE"] * (len(rows) - 1) + ["['SE', 'IR']"]
    assert "['5.6.1', '5.6.1.2']" in {r["SoftwareVersions"] for r in rows}
    assert "T2_space_sag_c4" in {r["SeriesDescription"] for r in rows}
    assert any(re.fullmatch(r"\[\.\d+, \.\d+\]", r["PixelSpacing"]) for r in rows)   # '[.9765625, .9765625]'
    for row in rows:
        image, _ = volumes[row["new_file_name"]]
        series = truth["series"][row["new_file_name"]]
        n = series["phantom"].num_vertebrae
        assert int(row["num_vertebrae"]) == int(row["num_discs"]) == n
        spacing = np.array(image.GetSpacing())
        axis = slice_axis(image)
        assert float(row["SpacingBetweenSlices"]) == pytest.approx(spacing[axis])
        assert float(row["SliceThickness"]) <= spacing[axis]
        pixel = [float(v) for v in re.findall(r"\d*\.\d+|\d+", row["PixelSpacing"])]
        assert sorted(pixel) == pytest.approx(sorted(np.delete(spacing, axis)))


def test_gradings_csv_and_quirks(spider):
    root, truth = spider
    raw = (root / "radiological_gradings.csv").read_bytes()
    assert raw.startswith(GRADINGS_HEADER)
    assert raw.count(b"\n") == raw.count(b"\r\n")
    rows = [{k: int(v) for k, v in r.items()} for r in read_rows(root / "radiological_gradings.csv")]
    overview = {r["new_file_name"]: int(r["num_discs"]) for r in read_rows(root / "overview.csv")}
    zero = [r for r in rows if r["IVD label"] == 0]
    assert len(zero) == 1 and zero[0]["Pfirrman grade"] == 1
    assert all(zero[0][c] == 0 for c in ["Modic", *BINARY])
    graded = {}
    for r in rows:
        assert r["Modic"] in {0, 1, 2, 3} and all(r[c] in {0, 1} for c in BINARY)
        assert 1 <= r["Pfirrman grade"] <= 5
        if r["IVD label"]:
            graded.setdefault(r["Patient"], []).append(r["IVD label"])
    discs = {p: overview[f"{p}_t1"] for p in (1, 2, 3)}
    # patient 1's top disc is ungraded; everyone else has 1..num_discs graded
    assert graded == {p: list(range(1, n + 1 - (p == 1))) for p, n in discs.items()}
    assert {r["Pfirrman grade"] for r in rows if r["IVD label"]} == {1, 2, 3, 4, 5}
    # the truth holds exactly the joinable rows; the quirks are listed as skipped
    assert truth["gradings"] == {(r["Patient"], r["IVD label"]): {k: r[k] for k in GRADINGS_COLUMNS[2:]}
                                 for r in rows if r["IVD label"]}
    assert sorted((s["patient"], s["ivd_label"]) for s in truth["skipped"]) == [(1, discs[1]), (zero[0]["Patient"], 0)]



# ---- volumes --------------------------------------------------------------------------


def test_image_and_mask_share_geometry_and_types(volumes):
    determinants, mask_types = set(), set()
    for stem, (image, mask) in volumes.items():
        assert image.GetSize() == mask.GetSize()
        assert image.GetSpacing() == mask.GetSpacing()
        assert image.GetOrigin() == mask.GetOrigin()
        assert image.GetDirection() == mask.GetDirection()
        d = direction(image)
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)
        determinants.add(round(float(np.linalg.det(d))))
        assert image.GetPixelID() == sitk.sitkUInt16
        mask_types.add(mask.GetPixelID())
        pixels = sitk.GetArrayFromImage(image)
        assert 800 < pixels.max() < 2500                     # uint16, ~0..2000
        spacing = np.array(image.GetSpacing())
        axis = slice_axis(image)
        in_plane = np.delete(spacing, axis)
        assert (2.0 if stem.endswith("SPACE") else 3.3) <= spacing[axis] <= (2.0 if stem.endswith("SPACE") else 4.4)
        assert np.all((0.97 <= in_plane) & (in_plane <= 1.5))
    assert determinants == {-1, 1}
    assert mask_types == {sitk.sitkUInt8, sitk.sitkInt16}
    assert any(np.ptp(np.delete(image.GetSpacing(), slice_axis(image))) > 0.1 for image, _ in volumes.values())


def test_mask_labels(spider, volumes):
    _, truth = spider
    for stem, (_, mask) in volumes.items():
        n = truth["series"][stem]["phantom"].num_vertebrae
        assert 6 <= n <= 8
        labels = set(np.unique(sitk.GetArrayFromImage(mask)).tolist())
        assert labels == {0, *range(1, n + 1), 100, *range(201, 201 + n)}


def test_axis_orders_flips_and_obliques(spider, volumes):
    _, truth = spider
    orders, obliques, in_plane_columns = set(), set(), []
    for stem, (image, _) in volumes.items():
        d = direction(image)
        axis = slice_axis(image)
        assert axis in (0, 2)
        order = "slice_first" if axis == 0 else "slice_last"
        # the angle of each index axis from its nearest world axis
        off_axis = np.degrees(np.arccos(np.clip(np.abs(d).max(axis=0), -1, 1))).max()
        oblique = off_axis > 1
        if oblique:
            assert 5 <= off_axis <= 15
        assert (order, oblique) == (truth["series"][stem]["axis_order"], truth["series"][stem]["oblique"])
        orders.add(order)
        obliques.add(oblique)
        in_plane_columns += [d[:, m] for m in range(3) if m != axis]
    assert orders == {"slice_first", "slice_last"} and obliques == {True, False}
    dominant = {(int(np.argmax(np.abs(c))), int(np.sign(c[np.argmax(np.abs(c))]))) for c in in_plane_columns}
    assert {(2, -1), (2, 1), (1, -1), (1, 1)} <= dominant     # running inferior, superior, anterior, posterior


def test_compressed_and_uncompressed_files(spider):
    _, truth = spider
    seen = set()
    for series in truth["series"].values():
        for path in (series["image"], series["mask"]):
            header = mha_header(path)
            assert header["CompressedData"] == str(series["compressed"])
            assert header["ElementDataFile"] == "LOCAL"
        seen.add(series["compressed"])
    assert seen == {True, False}


# ---- truth ------------------------------------------------------------------------------


def test_disc_truth_frames(spider):
    _, truth = spider
    for series in truth["series"].values():
        discs = series["discs"]
        assert [d.label for d in discs] == list(range(201, 201 + len(discs)))
        tilts = []
        for d in discs:
            frame = np.stack([d.normal, d.posterior, d.right])
            np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-9)
            assert d.normal[2] < 0 and d.posterior[1] > 0 and d.right[0] < 0
            # right = the patient's right (-x) made orthogonal to the normal
            expected = np.array([-1.0, 0, 0]) + d.normal[0] * d.normal
            np.testing.assert_allclose(d.right, expected / np.linalg.norm(expected), atol=1e-9)
            tilts.append(np.degrees(np.arccos(-d.normal[2])))
        assert max(tilts) <= 32 and np.argmax(tilts) == 0       # L5/S1 the most tilted
        assert max(tilts) - min(tilts) > 10


def test_mask_discs_match_truth(spider, volumes):
    """Centroid and plane of each disc's voxels, in world mm, against DiscTruth (t2 series)."""
    _, truth = spider
    for stem in [s for s in volumes if truth["series"][s]["seq"] != "t1"]:
        _, mask = volumes[stem]
        d = direction(mask)
        axis = slice_axis(mask)
        step = mask.GetSpacing()[axis]
        # the index -> world formula agrees with SimpleITK's
        probe = (3, 5, 2)
        np.testing.assert_allclose(world_of(mask, np.array([probe], float))[0],
                                   mask.TransformIndexToPhysicalPoint(probe), atol=1e-9)
        for disc in truth["series"][stem]["discs"]:
            points = voxels_labelled(mask, disc.label)
            offset = (points.mean(axis=0) - disc.centre) @ d      # along each index axis
            assert abs(offset[axis]) <= step
            assert np.all(np.abs(np.delete(offset, axis)) <= 1.0)
            spread = np.linalg.eigh(np.cov(points.T))[1][:, 0]    # smallest principal axis
            angle = np.degrees(np.arccos(min(1.0, abs(spread @ disc.normal))))
            assert angle <= 5, (stem, disc.label, angle)


def test_disc_lies_below_its_vertebra(spider, volumes):
    _, truth = spider
    for stem in ("1_t2", "2_t2", "3_t2"):
        _, mask = volumes[stem]
        vertebrae = {n: voxels_labelled(mask, n).mean(axis=0) for n in range(1, 10)
                     if np.any(sitk.GetArrayFromImage(mask) == n)}
        for disc in truth["series"][stem]["discs"]:
            n = disc.label - 200
            superior = -disc.normal
            height = disc.centre @ superior
            assert height < vertebrae[n] @ superior
            if n > 1:
                assert vertebrae[n - 1] @ superior < height


def test_intensities_follow_the_description(spider, volumes):
    _, truth = spider
    nucleus_by_grade = {}
    for stem, (image, mask) in volumes.items():
        pixels, labels = sitk.GetArrayFromImage(image).astype(float), sitk.GetArrayFromImage(mask)
        patient, seq = truth["series"][stem]["patient"], truth["series"][stem]["seq"]
        body = np.median(pixels[(labels >= 1) & (labels <= 9)])
        disc = np.median(pixels[labels > 200])
        canal = np.median(pixels[labels == 100])
        corner = pixels[:2, :2, :2]                           # background, away from the spine
        assert corner.mean() < 50
        assert disc < body
        assert (canal < body) if seq == "t1" else (canal > body)
        if seq == "t2":
            for n in range(201, 201 + truth["series"][stem]["phantom"].num_vertebrae):
                grade = truth["gradings"].get((patient, n - 200), {}).get("Pfirrman grade")
                if grade is not None:
                    nucleus_by_grade.setdefault(grade, []).append(np.percentile(pixels[labels == n], 95))
    means = [np.mean(nucleus_by_grade[g]) for g in sorted(nucleus_by_grade)]
    assert len(means) >= 4 and all(a > b + 100 for a, b in zip(means, means[1:]))


# ---- the phantom and the options ------------------------------------------------------


def test_phantom_api():
    spine = phantom.SpinePhantom(seed=5, num_vertebrae=6)
    again = phantom.SpinePhantom(seed=5, num_vertebrae=6)
    assert len(spine.discs) == 6
    centres = np.stack([d.centre for d in spine.discs])
    np.testing.assert_array_equal(centres, np.stack([d.centre for d in again.discs]))
    assert not np.allclose(centres, np.stack([d.centre for d in phantom.SpinePhantom(seed=6, num_vertebrae=6).discs]))
    assert np.all(np.diff(centres[:, 2]) > 20)                  # stacked bottom-up
    np.testing.assert_array_equal(spine.labels_at(centres), np.arange(201, 207))
    # 3 mm along the normal stays in the disc; 12 mm below lands in the vertebra below (or not in a disc)
    assert np.all(spine.labels_at(centres + 3 * np.stack([d.normal for d in spine.discs])) == np.arange(201, 207))
    below = spine.labels_at(centres + 14 * np.stack([d.normal for d in spine.discs]))
    assert below[0] == 0 and list(below[1:]) == [1, 2, 3, 4, 5]
    t2 = [spine.intensity_at(centres, "t2", {d.label: g}) for d, g in zip(spine.discs[:1] * 5, range(1, 6))]
    assert all(a[0] > b[0] for a, b in zip(t2, t2[1:]))         # nucleus darkens with the grade
    t1 = spine.intensity_at(centres, "t1")
    assert t1.shape == (6,) and np.all(t1 < spine.intensity_at(centres, "t2"))
    with pytest.raises(ValueError):
        spine.intensity_at(centres, "flair")
    with pytest.raises(ValueError):
        spine.labels_at(centres[:, :2])


def test_options_and_determinism(tmp_path):
    clean = spider_phantom.write_spider(tmp_path / "a", patients=1, seed=3, compress="none", quirks=False)
    spider_phantom.write_spider(tmp_path / "b", patients=1, seed=3, compress="all", quirks=False)
    assert sorted(clean["series"]) == ["1_t1", "1_t2", "1_t2_SPACE"]
    assert clean["skipped"] == []
    rows = read_rows(tmp_path / "a" / "radiological_gradings.csv")
    n = clean["series"]["1_t1"]["phantom"].num_vertebrae
    assert [int(r["IVD label"]) for r in rows] == list(range(1, n + 1))
    overview = read_rows(tmp_path / "a" / "overview.csv")
    assert all(r["sex"] in {"F", "M"} and r["birth_date"] and not r["PixelSpacing"].startswith("[.") for r in overview)
    for stem in clean["series"]:
        for kind in ("images", "masks"):
            assert mha_header(tmp_path / "a" / kind / f"{stem}.mha")["CompressedData"] == "False"
            assert mha_header(tmp_path / "b" / kind / f"{stem}.mha")["CompressedData"] == "True"
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / kind / f"{stem}.mha")))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / kind / f"{stem}.mha")))
            np.testing.assert_array_equal(a, b)                    # same seed, same data
    for name in ("overview.csv", "radiological_gradings.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError):
        spider_phantom.write_spider(tmp_path / "c", compress="some")
