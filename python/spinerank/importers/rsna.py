"""The RSNA 2024 Lumbar Spine Degenerative Classification dataset (Kaggle) into a
disc dataset folder: ``spinerank import rsna SRC --out DST``.

SRC holds ``train.csv``, ``train_label_coordinates.csv``,
``train_series_descriptions.csv`` and ``train_images/<study>/<series>/<n>.dcm``
(also found one folder deeper). ../shared/DATASETS.md §2 has what is known of
these files. What the importer does, per study:

- reads its sagittal series (``Sagittal T2/STIR`` -> sequence ``T2``, ``Sagittal
  T1`` -> ``T1``) as scans (``dicom``: slices in spatial order, world geometry
  from each instance's own tags). Axial series are not read: the crops are
  sagittal, and no task needs them;
- places each level (L1/L2 ... L5/S1) at its **Spinal Canal Stenosis point** (x,
  y on an instance of the series it was labelled on, taken to world coordinates
  through that instance's geometry), or, for a level without one, at the
  midpoint of its left and right Neural Foraminal Narrowing points;
- aligns each level's crop with the local spine axis, the direction between the
  neighbouring levels' points of one kind (``spine_axis``; rows superior -> inferior along it, columns
  anterior -> posterior, slices left -> right), and cuts it from every sagittal
  series of the study: the T1 crops are placed through the DICOM geometry of both
  series, not by slice numbers;
- grades from ``train.csv``: ``Normal/Mild`` 0, ``Moderate`` 1, ``Severe`` 2, empty
  missing; the same grades on the T1 and the T2 crop of a level.

Everything skipped is a row of ``import_report.csv``: a study without a sagittal
series or images, a series listed without files, an unreadable DICOM, a
coordinate on an instance that does not exist, a level without a point, an
unknown spelling or grade.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from ..checkpoint import atomic_write_text
from ..tasks import Task, TaskTable
from . import common, dicom, geometry

SOURCE = {"name": "RSNA 2024 Lumbar Spine Degenerative Classification",
          "data": "https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification",
          "licence": "subject to the competition rules (non-commercial use); the images may not be redistributed"}

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")  # top to bottom
#: train_label_coordinates.csv condition (exact spelling) -> task name.
CONDITIONS = {
    "Spinal Canal Stenosis": "SpinalCanalStenosis",
    "Left Neural Foraminal Narrowing": "LeftNeuralForaminalNarrowing",
    "Right Neural Foraminal Narrowing": "RightNeuralForaminalNarrowing",
    "Left Subarticular Stenosis": "LeftSubarticularStenosis",
    "Right Subarticular Stenosis": "RightSubarticularStenosis",
}
GRADES = {"Normal/Mild": 0, "Moderate": 1, "Severe": 2}
TASKS = TaskTable((
    Task("SpinalCanalStenosis", 3),
    Task("LeftNeuralForaminalNarrowing", 3, swap_with="RightNeuralForaminalNarrowing"),
    Task("RightNeuralForaminalNarrowing", 3, swap_with="LeftNeuralForaminalNarrowing"),
    Task("LeftSubarticularStenosis", 3, swap_with="RightSubarticularStenosis"),
    Task("RightSubarticularStenosis", 3, swap_with="LeftSubarticularStenosis"),
))
#: Series description -> labels.csv sequence; other descriptions (Axial T2) are not read.
SAGITTAL = {"Sagittal T2/STIR": "T2", "Sagittal T1": "T1"}
AXIAL = "Axial T2"
COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS = ("study_id", "series_id", "series_description")
LABEL_COLUMNS = ("ivd_id", "subject_id", "level", "sequence", "centre", *TASKS.names, "series", "centred_on",
                 "in_field")
IMPORTER_VERSION = 1


def train_column(condition: str, level: str) -> str:
    """train.csv's column of a condition and level: ``spinal_canal_stenosis_l4_l5``."""
    return f"{condition.lower().replace(' ', '_')}_{level.lower().replace('/', '_')}"


def ivd_id(study: str, level: str) -> str:
    return f"{study}_{level.replace('/', '-')}"


@dataclasses.dataclass(frozen=True)
class Source:
    root: pathlib.Path
    grades: pathlib.Path
    coordinates: pathlib.Path
    descriptions: pathlib.Path
    images: pathlib.Path


def find_source(src) -> Source:
    """The RSNA files under ``src`` or one folder below it; raises naming what is missing."""
    src = pathlib.Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"RSNA source folder {src} does not exist")
    wanted = {"train.csv": "file", "train_label_coordinates.csv": "file", "train_series_descriptions.csv": "file",
              "train_images": "dir"}
    best, best_missing = src, list(wanted)
    for base in [src] + sorted(p for p in src.iterdir() if p.is_dir()):
        missing = [n for n, kind in wanted.items()
                   if not ((base / n).is_file() if kind == "file" else (base / n).is_dir())]
        if not missing:
            return Source(base, base / "train.csv", base / "train_label_coordinates.csv",
                          base / "train_series_descriptions.csv", base / "train_images")
        if len(missing) < len(best_missing):
            best, best_missing = base, missing
    raise FileNotFoundError(f"{best} is not an RSNA 2024 folder: {', '.join(best_missing)} not found there (nor one "
                            f"folder below {src}); it needs train.csv, train_label_coordinates.csv, "
                            "train_series_descriptions.csv and train_images/")


# ---------------------------------------------------------------------------
# The CSVs


def read_grades(path: pathlib.Path) -> tuple[dict[str, dict[str, dict[str, int]]], list[dict]]:
    """study -> level -> task -> grade (-1 missing); report rows of values outside
    Normal/Mild, Moderate, Severe (left missing)."""
    columns = {train_column(c, level): (task, level) for c, task in CONDITIONS.items() for level in LEVELS}
    _, records = common.read_csv(path, ("study_id", *columns))
    grades, report = {}, []
    for line, record in records:
        study = (record["study_id"] or "").strip()
        if not study.isdigit():
            report.append(common.report_row("grading", f"study_id {study!r} is not a number; row skipped",
                                            file=path, line=line))
            continue
        levels = grades.setdefault(study, {level: {task: -1 for task in TASKS.names} for level in LEVELS})
        for column, (task, level) in columns.items():
            cell = (record[column] or "").strip()
            if cell == "":
                continue
            if cell not in GRADES:
                report.append(common.report_row("grade", f"column {column!r}: {cell!r} is not one of "
                                                f"{', '.join(GRADES)}; left missing", patient=study,
                                                ivd_label=level, file=path, line=line))
                continue
            levels[level][task] = GRADES[cell]
    return grades, report


@dataclasses.dataclass(frozen=True)
class Point:
    series_id: str
    instance: int
    task: str
    level: str
    x: float
    y: float
    line: int


def read_coordinates(path: pathlib.Path) -> tuple[dict[str, list[Point]], list[dict]]:
    """study -> its labelled points; report rows of unusable lines."""
    _, records = common.read_csv(path, COORDINATE_COLUMNS)
    points, report = {}, []
    for line, record in records:
        cell = {c: (record[c] or "").strip() for c in COORDINATE_COLUMNS}
        problem = None
        if cell["condition"] not in CONDITIONS:
            problem = f"condition {cell['condition']!r} is not one of {', '.join(CONDITIONS)}"
        elif cell["level"] not in LEVELS:
            problem = f"level {cell['level']!r} is not one of {', '.join(LEVELS)}"
        else:
            try:
                x, y = float(cell["x"]), float(cell["y"])
                instance = int(float(cell["instance_number"]))
                if not (np.isfinite(x) and np.isfinite(y)):
                    raise ValueError
            except ValueError:
                problem = f"instance_number {cell['instance_number']!r}, x {cell['x']!r}, y {cell['y']!r}: not numbers"
        if problem:
            report.append(common.report_row("point", problem + "; row skipped", patient=cell["study_id"],
                                            series=cell["series_id"], file=path, line=line))
            continue
        points.setdefault(cell["study_id"], []).append(Point(cell["series_id"], instance, CONDITIONS[cell["condition"]],
                                                             cell["level"], x, y, line))
    return points, report


def read_descriptions(path: pathlib.Path) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """study -> series -> description."""
    _, records = common.read_csv(path, DESCRIPTION_COLUMNS)
    series, report = {}, []
    for line, record in records:
        study, sid, description = ((record[c] or "").strip() for c in DESCRIPTION_COLUMNS)
        if description not in (*SAGITTAL, AXIAL):
            report.append(common.report_row("series", f"series_description {description!r} is not one of "
                                            f"{', '.join((*SAGITTAL, AXIAL))}; not used", patient=study, series=sid,
                                            file=path, line=line))
            continue
        series.setdefault(study, {})[sid] = description
    return series, report


# ---------------------------------------------------------------------------
# One study


@dataclasses.dataclass(frozen=True)
class StudyJob:
    study: str
    series: dict  # series_id -> (description, folder)
    points: tuple  # Point
    grades: dict  # level -> task -> grade
    grid: geometry.CropGrid
    volumes: str
    coordinates_file: str


def _choose_series(job: StudyJob, here: dict, report: list) -> dict[str, dicom.Series]:
    """Sequence -> the study's series of that description, read. Where a study has
    several, the one holding most labelled points (then the lowest id) is used."""
    by_sequence: dict[str, list[str]] = {}
    for sid, (description, _) in job.series.items():
        if description in SAGITTAL:
            by_sequence.setdefault(SAGITTAL[description], []).append(sid)
    chosen = {}
    for sequence, ids in sorted(by_sequence.items()):
        ids.sort(key=lambda s: (-sum(p.series_id == s for p in job.points), int(s) if s.isdigit() else 0, s))
        for sid in ids[1:]:
            report.append(common.report_row("series", f"a second {job.series[sid][0]} series of the study (series "
                                            f"{ids[0]} is used: it holds more labelled points)", **here, series=sid,
                                            file=job.series[sid][1]))
        folder = job.series[ids[0]][1]
        try:
            series = dicom.read_series(folder)
        except ValueError as exc:
            report.append(common.report_row("series", str(exc), **here, series=ids[0], file=folder))
            continue
        for problem in series.problems:
            report.append(common.report_row("dicom", problem, **here, series=ids[0], file=folder))
        chosen[sequence] = (ids[0], series)
    return chosen


def level_points(job: StudyJob, readable: dict[str, dicom.Series], here: dict,
                 report: list) -> dict[str, dict[str, np.ndarray]]:
    """The study's points in world LPS, by kind: {"canal": {level: point},
    "foramina": {level: midpoint of its left and right foraminal points}}."""
    world: dict[tuple[str, str], np.ndarray] = {}
    for point in job.points:
        series = readable.get(point.series_id)
        if series is None:
            continue  # an axial series, or one that could not be read (reported)
        instance = series.instances.get(point.instance)
        if instance is None:
            report.append(common.report_row("point", f"{point.task} at {point.level} is on instance "
                                            f"{point.instance}, which series {point.series_id} does not have",
                                            **here, series=point.series_id, ivd_label=point.level,
                                            file=job.coordinates_file, line=point.line))
            continue
        world.setdefault((point.task, point.level), instance.world(point.x, point.y))
    chains = {"canal": {}, "foramina": {}}
    for level in LEVELS:
        if ("SpinalCanalStenosis", level) in world:
            chains["canal"][level] = world["SpinalCanalStenosis", level]
        left = world.get(("LeftNeuralForaminalNarrowing", level))
        right = world.get(("RightNeuralForaminalNarrowing", level))
        if left is not None and right is not None:
            chains["foramina"][level] = (left + right) / 2
    return chains


def spine_axis(level: str, chains: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """The local spine axis at ``level`` (towards superior): the direction between
    the nearest levels above and below it (or itself, at an end) among points of
    one kind, the canal points first (a chord mixing canal points and the more
    anterior foraminal midpoints would tilt it); the patient's superior axis
    where no kind has two levels."""
    index = LEVELS.index(level)
    for chain in (chains["canal"], chains["foramina"]):
        above = [lv for lv in LEVELS[:index] if lv in chain]
        below = [lv for lv in LEVELS[index + 1:] if lv in chain]
        upper = above[-1] if above else (level if level in chain else None)
        lower = below[0] if below else (level if level in chain else None)
        if upper is not None and lower is not None and upper != lower:
            step = chain[upper] - chain[lower]
            if np.linalg.norm(step) > 1e-6:
                return step / np.linalg.norm(step)
    return geometry.SUPERIOR.copy()


def _centre_name(series: dicom.Series) -> str:
    make = series.manufacturer.split(" ")[0]
    field = f"{float(series.field_strength):g}T" if series.field_strength.replace(".", "", 1).isdigit() else ""
    return " ".join(p for p in (make, field) if p) or "unknown"


def import_study(job: StudyJob) -> dict:
    """The crops of every placed level of one study, on each of its sagittal series."""
    start = time.perf_counter()
    here = {"patient": job.study}
    rows, report = [], []
    chosen = _choose_series(job, here, report)
    if not chosen:
        if not any(d in SAGITTAL for d, _ in job.series.values()):
            report.append(common.report_row("study", "no sagittal series (Sagittal T2/STIR or Sagittal T1)", **here))
        return {"rows": rows, "report": report, "seconds": time.perf_counter() - start}
    readable = {sid: series for sid, series in chosen.values()}
    chains = level_points(job, readable, here, report)
    centres = {level: (chains["canal"][level], "canal") if level in chains["canal"] else
               (chains["foramina"][level], "foramina") for level in LEVELS
               if level in chains["canal"] or level in chains["foramina"]}
    for level in LEVELS:
        if level not in centres:
            report.append(common.report_row("level", "no Spinal Canal Stenosis point and not both foraminal points "
                                            "on a readable sagittal series: the level cannot be placed", **here,
                                            ivd_label=level))
    centre_name = _centre_name(next(iter(chosen.values()))[1])
    for level, (point, kind) in centres.items():
        frame = geometry.frame_from_normal(point, spine_axis(level, chains))
        for sequence, (sid, series) in sorted(chosen.items()):
            crop, fraction = geometry.normalise(geometry.resample(series.scan, frame, job.grid))
            if fraction == 0:
                report.append(common.report_row("level", f"the crop at {level} lies outside series {sid}", **here,
                                                series=sid, ivd_label=level, file=series.folder))
                continue
            common.write_crop(job.volumes, f"{ivd_id(job.study, level)}_{sequence}.nii.gz", crop,
                              frame.affine_ras(job.grid))
            grades = job.grades.get(level, {})
            rows.append({"ivd_id": ivd_id(job.study, level), "subject_id": job.study, "level": level,
                         "sequence": sequence, "centre": centre_name,
                         **{t: ("" if grades.get(t, -1) < 0 else grades[t]) for t in TASKS.names},
                         "series": sid, "centred_on": kind, "in_field": f"{fraction:.3f}"})
    return {"rows": rows, "report": report, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------
# The whole import


def _study_key(job: StudyJob) -> str:
    files = {sid: [[p.name, *common.file_stamp(p)] for p in sorted(pathlib.Path(folder).glob("*.dcm"))]
             for sid, (description, folder) in job.series.items() if description in SAGITTAL}
    return common.content_key({"version": IMPORTER_VERSION, "grid": dataclasses.asdict(job.grid), "files": files,
                               "points": [dataclasses.asdict(p) for p in job.points], "grades": job.grades})


def _jobs(source: Source, out: pathlib.Path, grid, grades, points, descriptions) -> tuple[dict, list, int]:
    """One job per study with images; the report rows of the others; the number of axial series not read."""
    report, jobs, axial = [], {}, 0
    studies = sorted(set(grades) | set(descriptions), key=lambda s: (len(s), s))
    for study in studies:
        here = {"patient": study}
        series = {}
        for sid, description in sorted(descriptions.get(study, {}).items()):
            folder = source.images / study / sid
            if not folder.is_dir() or not any(folder.glob("*.dcm")):
                report.append(common.report_row("series", f"{description} series listed in "
                                                f"{source.descriptions.name} but {folder} holds no .dcm files",
                                                **here, series=sid, file=folder))
                continue
            if description == AXIAL:
                axial += 1
                continue
            series[sid] = (description, str(folder))
        if study not in grades:
            report.append(common.report_row("study", f"not in {source.grades.name}: no grades; not imported",
                                            **here))
            continue
        if not series:
            report.append(common.report_row("study", "no sagittal series with images (Sagittal T2/STIR or Sagittal "
                                            "T1)", **here, file=source.images / study))
            continue
        jobs[study] = StudyJob(study, series, tuple(points.get(study, ())), grades[study], grid, str(out / "volumes"),
                               str(source.coordinates))
    return jobs, report, axial


def import_rsna(src, out, *, grid: geometry.CropGrid | None = None, workers: int | None = None,
                progress: bool = True) -> dict:
    """Imports the RSNA 2024 training data from ``src`` into the dataset folder
    ``out``; returns the summary also written to ``out/dataset.json``."""
    started = time.perf_counter()
    grid = grid or geometry.CropGrid()
    source = find_source(src)
    dicom._pydicom()  # checked before any worker starts
    out = pathlib.Path(out)
    common.prepare_out(out, "RSNA")
    grades, report = read_grades(source.grades)
    points, point_report = read_coordinates(source.coordinates)
    descriptions, description_report = read_descriptions(source.descriptions)
    report += point_report + description_report
    jobs, job_report, axial = _jobs(source, out, grid, grades, points, descriptions)
    report += job_report
    if not jobs:
        raise ValueError(f"no RSNA study could be imported from {source.root}: "
                         + "; ".join(r["reason"] for r in report[:5]))
    results = common.run_jobs(jobs, {s: _study_key(j) for s, j in jobs.items()}, import_study, out, workers=workers,
                              progress=progress, desc="import rsna", unit="study")
    rows = [row for study in jobs for row in results[study]["rows"]]
    report += [r for study in jobs for r in results[study]["report"]]
    atomic_write_text(out / "import_report.csv", common.csv_text(common.REPORT_COLUMNS, report))
    if not rows:
        raise ValueError(f"no level of {len(jobs)} RSNA studies could be cropped; see {out / 'import_report.csv'}")
    rows.sort(key=lambda r: (len(r["subject_id"]), r["subject_id"], r["level"], r["sequence"]))
    seconds = [results[s]["seconds"] for s in jobs if results[s].get("seconds")]
    summary = {
        "source": {**SOURCE, "folder": str(source.root.resolve())},
        "importer": {"name": "rsna", "version": IMPORTER_VERSION, "workers": workers or "all CPUs"},
        "crop": {**grid.to_dict(), "axes": "rows: the local spine axis, superior -> inferior; columns: anterior -> "
                 "posterior; slices: the patient's left -> right",
                 "frame": "centre: the level's Spinal Canal Stenosis point (or the midpoint of its foraminal points) "
                 "in world mm; axis: between the neighbouring levels' points",
                 "affine": "NIfTI sform/qform: voxel (row, column, slice) -> the source scan's world RAS mm",
                 "intensity": "clipped to the 0.5-99.5th percentiles of the voxels inside the scan, then mean 0, "
                 "std 1; voxels outside the scan 0", "interpolation": "trilinear"},
        "levels": "as labelled: L1/L2 ... L5/S1",
        "centre": "the scanner from the DICOM tags: Manufacturer's first word and MagneticFieldStrength",
        "tasks": TASKS.to_config(),
        "counts": {"studies": len(jobs), "volumes": len(rows), "discs": len({r["ivd_id"] for r in rows}),
                   "subjects": len({r["subject_id"] for r in rows}), "axial_series_not_read": axial,
                   "skipped": common.skipped_counts(report)},
        "seconds": {"total": round(time.perf_counter() - started, 2),
                    "per_study_median": round(float(np.median(seconds)), 3) if seconds else None},
    }
    atomic_write_text(out / "labels.csv", common.csv_text(LABEL_COLUMNS, rows))
    atomic_write_text(out / "tasks.json", json.dumps({"tasks": TASKS.to_config()}, indent=2) + "\n")
    atomic_write_text(out / "dataset.json", json.dumps(summary, indent=2) + "\n")
    return summary
