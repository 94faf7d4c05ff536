"""spinerank import spider (importers/spider.py) on phantoms written in SPIDER's
exact layout (importers/spider_phantom.py): what lands in labels.csv and the report,
where every crop comes from in millimetres and degrees, what it shows, bad input,
an interrupted import, and import -> train -> evaluate -> predict end to end."""
import json

import nibabel
import numpy as np
import pytest
from conftest import axis_angle_deg as angle
from conftest import crop_world
from conftest import read_csv_rows as read_csv

from spinerank import cli
from spinerank import config as config_lib
from spinerank.importers import geometry, spider
from spinerank.tasks import TaskTable

sitk = pytest.importorskip("SimpleITK")
from spinerank.importers import spider_phantom  # noqa: E402

#: The tiny preset's volume (D, H, W) = (10, 48, 80): 57.6 x 96 x 40 mm, the default crop's field of view in-plane.
GRID = geometry.CropGrid((48, 80, 10), (1.2, 1.2, 4.0))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("spider") / "SPIDER"
    truth = spider_phantom.write_spider(root, patients=3, seed=0)
    return root, truth


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    root, truth = source
    out = tmp_path_factory.mktemp("imported") / "data"
    summary = spider.import_spider(root, out, grid=GRID, workers=2, progress=False)
    return out, summary, truth


def truth_disc(truth, patient, ivd):
    for series in truth["series"].values():
        if series["patient"] == patient:
            for disc in series["discs"]:
                if disc.label == 200 + ivd:
                    return disc, series["phantom"]
    raise KeyError((patient, ivd))


def test_labels_hold_every_graded_disc_of_every_series_with_its_grades(imported):
    out, summary, truth = imported
    rows = read_csv(out / "labels.csv")
    assert list(rows[0])[:5] == ["ivd_id", "subject_id", "level", "sequence", "centre"]
    expected = set()
    for stem, series in truth["series"].items():
        for disc in series["discs"]:
            ivd = disc.label - 200
            if (series["patient"], ivd) in truth["gradings"]:
                expected.add((str(series["patient"]), ivd, spider.SEQUENCES[series["seq"]]))
    got = {(r["subject_id"], int(r["ivd_id"].split("IVD")[1]), r["sequence"]) for r in rows}
    assert got == expected and len(rows) == len(expected)
    for row in rows:
        ivd = int(row["ivd_id"].split("IVD")[1])
        file = truth["gradings"][int(row["subject_id"]), ivd]
        assert row["level"] == {1: "L5/S1", 2: "L4/L5", 3: "L3/L4", 4: "L2/L3", 5: "L1/L2", 6: "T12/L1",
                                7: "T11/T12", 8: "T10/T11"}[ivd]
        assert int(row["Pfirrmann"]) == int(file["Pfirrman grade"]) - 1
        assert int(row["Modic"]) == int(int(file["Modic"]) > 0) and row["modic_type"] == str(file["Modic"])
        for column, task in (("UP endplate", "UpperEndplateDefect"), ("LOW endplate", "LowerEndplateDefect"),
                             ("Spondylolisthesis", "Spondylolisthesis"), ("Disc herniation", "Herniation"),
                             ("Disc narrowing", "DiscNarrowing"), ("Disc bulging", "DiscBulging")):
            assert int(row[task]) == int(file[column])
        assert row["centre"].split(" ")[0] in ("SIEMENS", "Philips")
    # The importer's task table is the dataset's; train reads it when the configuration names none.
    table = TaskTable.from_file(out / "tasks.json")
    assert table.names == spider.TASKS.names and table.num_grades == [5, 2, 2, 2, 2, 2, 2, 2]
    assert table.masked("T1") == [True, False, False, False, False, False, True, False]
    config = config_lib.resolve("tiny", data=str(out), out=str(out / "run"))
    assert config.task_table == table


def test_everything_skipped_is_reported_with_its_reason(imported):
    out, summary, truth = imported
    report = read_csv(out / "import_report.csv")
    assert list(report[0]) == list(spider.REPORT_COLUMNS)
    zero = [r for r in report if r["kind"] == "grading" and r["ivd_label"] == "0"]
    assert zero and "IVD label 0" in zero[0]["reason"] and zero[0]["line"]
    ungraded = [r for r in report if r["kind"] == "disc" and "has no row in radiological_gradings.csv" in r["reason"]]
    graded = set(truth["gradings"])
    expected = {(s["patient"], stem, d.label - 200) for stem, s in truth["series"].items() for d in s["discs"]
                if (s["patient"], d.label - 200) not in graded}
    assert expected, "the phantom leaves a top disc ungraded"
    assert {(int(r["patient"]), r["series"], int(r["ivd_label"])) for r in ungraded} == expected
    assert not [r for r in report if r["kind"] == "series"]
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["volumes"] == len(read_csv(out / "labels.csv")) and counts["series_imported"] == len(truth["series"])


def test_every_crop_is_centred_on_and_aligned_with_its_disc(imported):
    out, _, truth = imported
    rows = read_csv(out / "labels.csv")
    for row in rows:
        ivd = int(row["ivd_id"].split("IVD")[1])
        disc, _ = truth_disc(truth, int(row["subject_id"]), ivd)
        image = nibabel.load(str(out / "volumes" / f"{row['ivd_id']}_{row['sequence']}.nii.gz"))
        assert image.shape == GRID.shape
        affine = image.affine
        centre_lps = geometry.LPS_TO_RAS @ (affine @ np.r_[(np.array(GRID.shape) - 1) / 2, 1])[:3]
        assert np.linalg.norm(centre_lps - disc.centre) < 2.0, row
        _, axes = crop_world(image)
        assert angle(axes[0], disc.normal) < 10 and axes[0] @ disc.normal > 0  # rows: superior -> inferior
        assert angle(axes[1], disc.posterior) < 10 and axes[1] @ disc.posterior > 0  # columns: anterior -> posterior
        assert angle(axes[2], disc.right) < 10 and axes[2] @ disc.right > 0  # slices: left -> right
        assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), GRID.spacing, rtol=1e-5)


def test_each_crop_shows_its_disc_and_carries_its_grades(imported):
    """The disc at the crop's centre (the phantom's own label at that world point)
    is the graded one, and the crop's voxels are the phantom's image at their
    world points (through the written affine)."""
    out, _, truth = imported
    rows = read_csv(out / "labels.csv")
    seq_of = {v: k for k, v in spider.SEQUENCES.items()}
    for row in rows:
        ivd = int(row["ivd_id"].split("IVD")[1])
        patient = int(row["subject_id"])
        _, model = truth_disc(truth, patient, ivd)
        image = nibabel.load(str(out / "volumes" / f"{row['ivd_id']}_{row['sequence']}.nii.gz"))
        crop = image.get_fdata(dtype=np.float32)
        world, _ = crop_world(image)
        centre = world[tuple(n // 2 for n in GRID.shape)]
        assert model.labels_at(centre[None])[0] == 200 + ivd
        grades = {d.label: int(truth["gradings"][patient, d.label - 200]["Pfirrman grade"])
                  for d in model.discs if (patient, d.label - 200) in truth["gradings"]}
        expected = model.intensity_at(world.reshape(-1, 3), seq_of[row["sequence"]], grades).reshape(GRID.shape)
        inside = crop != 0
        assert np.corrcoef(crop[inside], expected[inside])[0, 1] > 0.8, row


def test_the_nucleus_signal_follows_the_pfirrmann_grade(imported):
    """On T2 the grade is visible where the crop claims the disc is: the mean of
    the crop's central voxels falls with the Pfirrmann grade."""
    out, _, _ = imported
    rows = [r for r in read_csv(out / "labels.csv") if r["sequence"] == "T2" and r["Pfirrmann"] != ""]
    means = []
    for row in rows:
        crop = nibabel.load(str(out / "volumes" / f"{row['ivd_id']}_T2.nii.gz")).get_fdata()
        h, w, d = (n // 2 for n in GRID.shape)
        means.append((int(row["Pfirrmann"]), crop[h - 1:h + 2, w - 4:w + 4, d - 1:d + 2].mean()))
    grades = np.array([g for g, _ in means])
    values = np.array([v for _, v in means])
    assert len(set(grades)) >= 3
    assert np.corrcoef(grades, values)[0, 1] < -0.5


def test_spider_split_puts_the_validation_subset_in_test(source, tmp_path):
    root, truth = source
    out = tmp_path / "data"
    spider.import_spider(root, out, grid=GRID, workers=1, split="spider", progress=False)
    splits = {r["subject_id"]: r["split"] for r in read_csv(out / "splits.csv")}
    overview = {r["new_file_name"]: r["subset"] for r in read_csv(root / "overview.csv")}
    for stem, series in truth["series"].items():
        if str(series["patient"]) in splits:
            assert (splits[str(series["patient"])] == "test") == (overview[stem] == "validation")


def test_a_rerun_reuses_finished_series_and_an_interrupted_one_finishes(source, tmp_path, monkeypatch):
    root, _ = source
    out = tmp_path / "data"
    calls = []
    real = spider.import_series

    def interrupted(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.stem)
        return real(job)

    monkeypatch.setattr(spider, "import_series", interrupted)
    with pytest.raises(KeyboardInterrupt):
        spider.import_spider(root, out, grid=GRID, workers=1, progress=False)
    assert not (out / "labels.csv").exists()
    (out / "volumes" / ".P001_IVD1_T2.nii.gz.abc.tmp").write_bytes(b"half")  # as a killed write leaves it
    monkeypatch.setattr(spider, "import_series", real)
    records = {stem: (out / ".import" / f"{stem}.json").stat().st_mtime_ns for stem in calls}
    spider.import_spider(root, out, grid=GRID, workers=1, progress=False)
    rows = read_csv(out / "labels.csv")
    assert len({(r["ivd_id"], r["sequence"]) for r in rows}) == len(rows)
    assert {r["series"] for r in rows} >= set(calls) and len({r["series"] for r in rows}) > len(calls)
    assert not list(out.rglob("*.tmp"))
    # The series finished before the interruption were not redone.
    assert {stem: (out / ".import" / f"{stem}.json").stat().st_mtime_ns for stem in calls} == records
    first = (out / "labels.csv").read_text()
    spider.import_spider(root, out, grid=GRID, workers=1, progress=False)
    assert (out / "labels.csv").read_text() == first


def copy_source(root, dest):
    import shutil

    shutil.copytree(root, dest)
    return dest


def test_the_source_is_found_one_folder_deeper(source, tmp_path):
    root, _ = source
    copy_source(root, tmp_path / "download" / "SPIDER")
    assert spider.find_source(tmp_path / "download").root == tmp_path / "download" / "SPIDER"


@pytest.mark.parametrize("remove, message", [("overview.csv", "overview.csv not found"),
                                             ("masks", r"masks/\*.mha not found")])
def test_a_missing_file_or_folder_is_named(source, tmp_path, remove, message):
    import shutil

    src = copy_source(source[0], tmp_path / "S")
    target = src / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=message):
        spider.import_spider(src, tmp_path / "out", grid=GRID, progress=False)


def test_an_unknown_column_spelling_is_named(source, tmp_path):
    src = copy_source(source[0], tmp_path / "S")
    path = src / "radiological_gradings.csv"
    path.write_bytes(path.read_bytes().replace(b"Pfirrman grade", b"Pfirrmann grade"))
    with pytest.raises(ValueError, match=r"radiological_gradings.csv: missing column\(s\) 'Pfirrman grade'"):
        spider.import_spider(src, tmp_path / "out", grid=GRID, progress=False)


def test_bad_files_and_grades_become_report_rows(source, tmp_path):
    src = copy_source(source[0], tmp_path / "S")
    images = sorted((src / "images").glob("*.mha"))
    truncated, moved = images[0], images[1]
    truncated.write_bytes(truncated.read_bytes()[:-500])  # a download cut short
    mask = sitk.ReadImage(str(src / "masks" / moved.name))
    mask.SetOrigin([v + 5.0 for v in mask.GetOrigin()])  # the mask no longer lies on the image
    sitk.WriteImage(mask, str(src / "masks" / moved.name))
    gradings = src / "radiological_gradings.csv"
    lines = gradings.read_bytes().split(b"\r\n")
    last = max(i for i, line in enumerate(lines) if line.strip())  # the last patient's: its series are intact
    cells = lines[last].split(b",")
    cells[-1] = b"7"  # Pfirrmann grades are 1-5
    lines[last] = b",".join(cells)
    gradings.write_bytes(b"\r\n".join(lines))
    out = tmp_path / "out"
    spider.import_spider(src, out, grid=GRID, workers=1, progress=False)
    report = read_csv(out / "import_report.csv")
    reasons = {r["series"]: r["reason"] for r in report if r["kind"] == "series"}
    assert str(truncated) in reasons[truncated.name[:-4]] and "cannot be read" in reasons[truncated.name[:-4]]
    assert "not on the same grid" in reasons[moved.name[:-4]]
    bad = [r for r in report if r["kind"] == "grade"]
    assert len(bad) == 1 and bad[0]["line"] == str(last + 1) and "'Pfirrman grade'" in bad[0]["reason"]
    rows = read_csv(out / "labels.csv")
    patient, ivd = cells[0].decode(), int(cells[1])
    hit = [r for r in rows if r["subject_id"] == patient and r["ivd_id"].endswith(f"IVD{ivd}")]
    assert hit and all(r["Pfirrmann"] == "" for r in hit)  # that grade missing, the rest kept
    assert {r["series"] for r in rows}.isdisjoint({truncated.name[:-4], moved.name[:-4]})


def test_an_output_folder_of_something_else_is_refused(source, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not empty and holds no earlier SPIDER import"):
        spider.import_spider(source[0], tmp_path / "out", grid=GRID, progress=False)


def test_import_train_evaluate_predict_end_to_end(tmp_path, capsys):
    """The CLI as a user runs it: import a 10-patient phantom, train the tiny
    preset for one epoch per phase, evaluate, predict a whole series from its
    mask and from disc points."""
    root = tmp_path / "SPIDER"
    truth = spider_phantom.write_spider(root, patients=10, seed=1)
    data = tmp_path / "data"
    shape = [str(v) for v in GRID.shape]
    spacing = [str(v) for v in GRID.spacing]
    assert cli.main(["import", "spider", str(root), "--out", str(data), "--shape", *shape, "--spacing", *spacing,
                     "--quiet"]) == 0
    assert "imported" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--epochs-phase1", "1",
                     "--epochs-phase2", "1", "--quiet"]) == 0
    assert TaskTable.from_config(json.loads((run / "config.json").read_text())["tasks"]) == spider.TASKS
    assert json.loads((run / "dataset.json").read_text())["crop"]["shape_hwd"] == list(GRID.shape)
    assert cli.main(["evaluate", "--run", str(run), "--no-tta", "--quiet"]) == 0
    stem, series = next((s, v) for s, v in truth["series"].items() if v["seq"] == "t2")
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--mask", str(series["mask"]), "--out", str(out),
                     "--quiet", str(series["image"])]) == 0
    rows = read_csv(out)
    assert [int(r["disc"]) for r in rows] == [d.label for d in series["discs"]]
    for row, disc in zip(rows, series["discs"]):
        centre = geometry.LPS_TO_RAS @ np.array([float(row[c]) for c in ("centre_r", "centre_a", "centre_s")])
        assert np.linalg.norm(centre - disc.centre) < 2.0
        assert row["level"] == spider.LEVELS[disc.label - 200] and 0 <= int(row["Pfirrmann_grade"]) <= 4
    points = tmp_path / "points.csv"
    with open(points, "w") as f:
        f.write("level,x,y,z\n")
        for disc in series["discs"]:
            x, y, z = geometry.LPS_TO_RAS @ disc.centre
            f.write(f"{spider.LEVELS[disc.label - 200]},{x},{y},{z}\n")
    out2 = tmp_path / "pred-points.csv"
    assert cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--disc-points", str(points), "--out",
                     str(out2), "--quiet", str(series["image"])]) == 0
    by_points = read_csv(out2)
    assert [r["level"] for r in by_points] == [r["level"] for r in rows]
    for a, b in zip(rows, by_points):  # same place, normal from the neighbours instead of the mask
        assert abs(float(a["centre_s"]) - float(b["centre_s"])) < 2.0


def test_predict_on_a_series_refuses_bad_requests(tmp_path, imported):
    from spinerank.whole_series import disc_items, read_disc_points

    _, _, truth = imported
    series = next(iter(truth["series"].values()))
    with pytest.raises(ValueError, match="exactly one image"):
        next(disc_items(None, [series["image"], series["image"]], mask=series["mask"]))
    with pytest.raises(ValueError, match="either --mask or --disc-points"):
        next(disc_items(None, [series["image"]], mask=series["mask"], disc_points="p.csv"))
    points = tmp_path / "points.csv"
    points.write_text("level,x,y\nL4/L5,1,2\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) z"):
        read_disc_points(points)
    points.write_text("level,x,y,z\nL4/L5,1,nan,3\n")
    with pytest.raises(ValueError, match="line 2, column y"):
        read_disc_points(points)
    points.write_text("level,x,y,z,nx,ny,nz\nL4/L5,1,2,3,0,0,0\n")
    with pytest.raises(ValueError, match="line 2: the normal"):
        read_disc_points(points)


def test_a_disc_whose_crop_centre_misses_its_label_is_not_cut():
    """A fragmented segmentation: two pieces of disc 201, 40 mm apart. Their mean
    lies between them, on no disc: the crop would show the wrong place."""
    mask = np.zeros((40, 60, 12), dtype=np.uint8)
    mask[18:22, 5:15, 3:9] = 201
    mask[18:22, 45:55, 3:9] = 201
    image = np.ones(mask.shape, dtype=np.float32)
    matrix = geometry.index_to_world([0.0, 0.0, 0.0], [4.0, 1.0, 1.0], np.eye(3).flatten())
    result, problem = spider.disc_crop(geometry.Scan(image, matrix), geometry.Scan(mask, matrix), 201, GRID)
    assert result is None and "centre is not inside the disc" in problem
    mask[18:22, 25:35, 3:9] = 201  # joined: now the centre is on the disc
    result, problem = spider.disc_crop(geometry.Scan(image, matrix), geometry.Scan(mask, matrix), 201, GRID)
    assert problem is None and result[0].shape == GRID.shape
