"""SPIDER (van der Graaf et al., Sci Data 2024; Zenodo 10159290; CC BY 4.0) into a
disc dataset folder: ``spinerank import spider SRC --out DST``.

SRC holds ``images/*.mha``, ``masks/*.mha`` (same names), ``overview.csv`` and
``radiological_gradings.csv`` (found also one folder deeper, and with the
``.mha`` files one ``images/images/`` deeper). ../shared/DATASETS.md §1 has what
is known of these files. What the importer does:

- series ``<patient>_<t1|t2|t2_SPACE>.mha``; its mask is the file of the same
  name in ``masks/``, on exactly the same grid;
- disc ``200 + IVD label`` of the mask (labels counted from the bottom: 201 is
  the disc below the lowest vertebra, named L5/S1 assuming five lumbar
  vertebrae) is cut out as an aligned crop (``geometry``): its centre and normal
  from its voxels in world millimetres, rows along the normal superior ->
  inferior, columns anterior -> posterior, slices left -> right;
- each crop gets the gradings of its (patient, IVD label): SPIDER grades per
  patient and disc, so every series of a patient carries them;
- ``centre`` is the scanner: make (first word of ``Manufacturer``: SIEMENS,
  Philips) and ``ManufacturerModelName``, e.g. ``SIEMENS Avanto_fit``.

Everything skipped (a series without mask or gradings, a file that cannot be
read, a graded disc absent from a mask, a mask disc without grading, an ``IVD
label`` of 0, a grade outside its documented values) is a row of
``import_report.csv`` with its reason: nothing is dropped silently.

Series are imported in parallel processes. Each finished series leaves a record
in ``DST/.import/``; a rerun after an interruption reuses finished series with
unchanged sources and settings, and redoes the others (every file is written
under a temporary name and renamed, so none is ever half-written).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import time

import numpy as np

from ..checkpoint import atomic_write_text
from ..tasks import Task, TaskTable
from . import common, geometry

SOURCE = {"name": "SPIDER", "citation": "van der Graaf et al., Lumbar spine segmentation in MR images: a dataset "
          "and a public benchmark. Sci Data 11, 264 (2024), doi:10.1038/s41597-024-03090-w",
          "data": "https://zenodo.org/records/10159290", "licence": "CC BY 4.0"}

#: File-name sequence -> labels.csv sequence.
SEQUENCES = {"t1": "T1", "t2": "T2", "t2_SPACE": "T2_SPACE"}

#: The dataset's task table: Pfirrmann (file grades 1-5 -> 0-4) and Modic (0 none, 1 any type: the type
#: is kept in the column modic_type), then six binary findings; Pfirrmann and narrowing not graded on T1.
TASKS = TaskTable((
    Task("Pfirrmann", 5, masked_for=("T1",)),
    Task("Modic", 2),
    Task("UpperEndplateDefect", 2),
    Task("LowerEndplateDefect", 2),
    Task("Spondylolisthesis", 2),
    Task("Herniation", 2),
    Task("DiscNarrowing", 2, masked_for=("T1",)),
    Task("DiscBulging", 2),
))

#: radiological_gradings.csv column (exact spelling) -> (task, documented file values, file value -> grade).
GRADING_COLUMNS = {
    "Pfirrman grade": ("Pfirrmann", (1, 2, 3, 4, 5), lambda v: v - 1),
    "Modic": ("Modic", (0, 1, 2, 3), lambda v: int(v > 0)),
    "UP endplate": ("UpperEndplateDefect", (0, 1), int),
    "LOW endplate": ("LowerEndplateDefect", (0, 1), int),
    "Spondylolisthesis": ("Spondylolisthesis", (0, 1), int),
    "Disc herniation": ("Herniation", (0, 1), int),
    "Disc narrowing": ("DiscNarrowing", (0, 1), int),
    "Disc bulging": ("DiscBulging", (0, 1), int),
}
GRADING_KEYS = ("Patient", "IVD label")
OVERVIEW_COLUMNS = ("new_file_name", "subset", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength")

#: IVD label (disc from the bottom) -> level name, assuming five lumbar vertebrae and no transitional anatomy.
LEVELS = {1: "L5/S1", 2: "L4/L5", 3: "L3/L4", 4: "L2/L3", 5: "L1/L2", 6: "T12/L1", 7: "T11/T12", 8: "T10/T11",
          9: "T9/T10", 10: "T8/T9", 11: "T7/T8", 12: "T6/T7"}
DISC_LABEL_OFFSET = 200
#: A disc's mask label must lie at (or within one voxel of) its crop's centre.
MASK_CHECK_RADIUS = 1
#: Fewer voxels than this and a mask disc is too small to place a crop on.
MIN_DISC_VOXELS = 8

LABEL_COLUMNS = ("ivd_id", "subject_id", "level", "sequence", "centre", *TASKS.names, "modic_type", "series",
                 "in_field")
REPORT_COLUMNS = common.REPORT_COLUMNS
SPLIT_CHOICES = ("stratified", "spider")
#: Bump when the crops an import writes change: records of older imports are then redone.
IMPORTER_VERSION = 1


# ---------------------------------------------------------------------------
# The source folder and its CSVs


@dataclasses.dataclass(frozen=True)
class Source:
    root: pathlib.Path
    images: pathlib.Path
    masks: pathlib.Path
    overview: pathlib.Path
    gradings: pathlib.Path


def _mha_folder(base: pathlib.Path, name: str) -> pathlib.Path | None:
    for folder in (base / name, base / name / name):
        if folder.is_dir() and any(folder.glob("*.mha")):
            return folder
    return None


def find_source(src) -> Source:
    """The SPIDER files under ``src`` or one folder below it; raises naming what is missing."""
    src = pathlib.Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"SPIDER source folder {src} does not exist")
    candidates = [src] + sorted(p for p in src.iterdir() if p.is_dir())
    wanted = ("images/*.mha", "masks/*.mha", "overview.csv", "radiological_gradings.csv")
    best, best_missing = None, list(wanted)
    for base in candidates:
        found = {"images/*.mha": _mha_folder(base, "images"), "masks/*.mha": _mha_folder(base, "masks"),
                 "overview.csv": base / "overview.csv" if (base / "overview.csv").is_file() else None,
                 "radiological_gradings.csv": base / "radiological_gradings.csv"
                 if (base / "radiological_gradings.csv").is_file() else None}
        missing = [k for k, v in found.items() if v is None]
        if not missing:
            return Source(base, found["images/*.mha"], found["masks/*.mha"], found["overview.csv"],
                          found["radiological_gradings.csv"])
        if len(missing) < len(best_missing):
            best, best_missing = base, missing
    where = best or src
    raise FileNotFoundError(f"{where} is not a SPIDER folder: {', '.join(best_missing)} not found there (nor one "
                            f"folder below {src}); it needs images/ and masks/ of .mha files (Zenodo images.zip and "
                            "masks.zip), overview.csv and radiological_gradings.csv")


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    stem: str
    centre: str
    subset: str
    line: int


def _centre(record: dict) -> str:
    make = (record.get("Manufacturer") or "").strip().split(" ")[0]
    model = (record.get("ManufacturerModelName") or "").strip()
    if make or model:
        return " ".join(p for p in (make, model) if p)
    field = (record.get("MagneticFieldStrength") or "").strip()
    return f"{field}T" if field else "unknown"


def read_overview(path: pathlib.Path) -> tuple[dict[str, SeriesInfo], list[dict]]:
    """Series stem -> its scanner and subset; the report rows of unusable lines."""
    _, records = common.read_csv(path, OVERVIEW_COLUMNS)
    series, report = {}, []
    for line, record in records:
        stem = (record["new_file_name"] or "").strip()
        if not stem:
            report.append(common.report_row("series", "overview.csv row without new_file_name", file=path, line=line))
            continue
        if stem in series:
            report.append(common.report_row("series", f"{stem} listed twice in overview.csv (line {series[stem].line} kept)",
                                  series=stem, file=path, line=line))
            continue
        series[stem] = SeriesInfo(stem, _centre(record), (record["subset"] or "").strip(), line)
    return series, report


def _file_value(cell: str) -> int | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() else None


def read_gradings(path: pathlib.Path) -> tuple[dict[tuple[int, int], dict], list[dict]]:
    """(patient, IVD label) -> {task: grade (-1 missing), "modic_type": file value
    or ""}; the report rows of skipped lines and of values outside the documented
    ones (those grades are left missing, the rest of the row is kept)."""
    _, records = common.read_csv(path, (*GRADING_KEYS, *GRADING_COLUMNS))
    gradings, report = {}, []
    for line, record in records:
        patient, ivd = (_file_value((record[k] or "").strip()) for k in GRADING_KEYS)
        if patient is None or ivd is None or patient < 0:
            report.append(common.report_row("grading", f"Patient {record['Patient']!r} / IVD label {record['IVD label']!r} "
                                  "are not integers; row skipped", file=path, line=line))
            continue
        if ivd < 1:
            report.append(common.report_row("grading", f"IVD label {ivd} names no disc (the mask's discs are 200 + IVD "
                                  "label, from 201); row skipped", patient=patient, ivd_label=ivd, file=path,
                                  line=line))
            continue
        if (patient, ivd) in gradings:
            report.append(common.report_row("grading", f"patient {patient}, IVD label {ivd} graded twice (line "
                                  f"{gradings[patient, ivd]['line']} kept); row skipped", patient=patient,
                                  ivd_label=ivd, file=path, line=line))
            continue
        grades = {"line": line, "modic_type": ""}
        for column, (task, allowed, to_grade) in GRADING_COLUMNS.items():
            cell = (record[column] or "").strip()
            value = _file_value(cell)
            if cell == "":
                grades[task] = -1
            elif value not in allowed:
                grades[task] = -1
                report.append(common.report_row("grade", f"column {column!r}: {cell!r} is not one of "
                                      f"{', '.join(map(str, allowed))}; {task} left missing for this disc",
                                      patient=patient, ivd_label=ivd, file=path, line=line))
            else:
                grades[task] = to_grade(value)
                if column == "Modic":
                    grades["modic_type"] = str(value)
        gradings[patient, ivd] = grades
    return gradings, report


_SERIES_NAME = re.compile(r"^(\d+)_(t1|t2|t2_SPACE)$")


def parse_series_name(stem: str) -> tuple[int, str] | None:
    """(patient, file-name sequence) of ``<patient>_<t1|t2|t2_SPACE>``, else None."""
    match = _SERIES_NAME.match(stem)
    return (int(match.group(1)), match.group(2)) if match else None


# ---------------------------------------------------------------------------
# One series


@dataclasses.dataclass(frozen=True)
class SeriesJob:
    stem: str
    patient: int
    sequence: str  # labels.csv spelling
    image: str
    mask: str
    centre: str
    gradings: dict  # IVD label -> grades of read_gradings
    grid: geometry.CropGrid
    volumes: str  # output folder


def ivd_id(patient: int, ivd_label: int) -> str:
    return f"P{patient:03d}_IVD{ivd_label}"


def disc_labels(mask: np.ndarray) -> dict[int, int]:
    """Disc label (201..) -> voxel count in a mask."""
    values, counts = np.unique(mask, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if DISC_LABEL_OFFSET < v < DISC_LABEL_OFFSET + 100}


def disc_crop(scan: geometry.Scan, mask: geometry.Scan, label: int, grid: geometry.CropGrid):
    """(normalised crop, in-field fraction, frame) of disc ``label``, or a reason it cannot be cut."""
    kji = np.argwhere(mask.array == label)
    if len(kji) < MIN_DISC_VOXELS:
        return None, f"disc label {label} has {len(kji)} voxel(s) in the mask; too few to place a crop"
    try:
        frame = geometry.disc_frame(mask.world_of_indices(kji))
    except ValueError as exc:
        return None, f"disc label {label}: {exc}"
    # The mask on a small grid of the crop's spacing around the centre: the disc's label must be there.
    r = MASK_CHECK_RADIUS
    around = geometry.resample(mask, frame, geometry.CropGrid((2 * r + 1,) * 3, grid.spacing), order=0)
    if not (around == label).any():
        return None, (f"disc label {label}: its crop's centre is not inside the disc in the mask (a fragmented or "
                      "strongly curved segmentation)")
    crop, fraction = geometry.normalise(geometry.resample(scan, frame, grid, order=1))
    return (crop, fraction, frame), None


def import_series(job: SeriesJob) -> dict:
    """Crops of every graded disc of one series (in a worker process): {"rows",
    "report", "seconds"}; the volumes are written under ``job.volumes``."""
    start = time.perf_counter()
    rows, report = [], []
    here = dict(patient=job.patient, series=job.stem)
    try:
        scan, mask = common.read_image(job.image), common.read_image(job.mask)
    except ValueError as exc:
        return {"rows": [], "report": [common.report_row("series", str(exc), **here, file=job.image)], "seconds": 0.0}
    if mask.array.dtype.kind not in "iub":
        return {"rows": [], "report": [common.report_row("series", f"mask {job.mask} holds {mask.array.dtype} values; "
                                               "a label mask holds integers", **here, file=job.mask)],
                "seconds": 0.0}
    if not scan.same_grid(mask):
        return {"rows": [], "report": [common.report_row(
            "series", f"image {job.image} ({scan.describe()}) and mask {job.mask} ({mask.describe()}) are not on "
            "the same grid (size, origin, spacing and direction must match)", **here, file=job.mask)],
            "seconds": 0.0}
    if not np.isfinite(scan.array).all():
        return {"rows": [], "report": [common.report_row("series", f"image {job.image} holds NaN or infinite values",
                                               **here, file=job.image)], "seconds": 0.0}
    in_mask = disc_labels(mask.array)
    for label in sorted(set(in_mask) - {DISC_LABEL_OFFSET + i for i in job.gradings}):
        report.append(common.report_row("disc", f"mask disc {label} (IVD label {label - DISC_LABEL_OFFSET}) has no row in "
                              "radiological_gradings.csv", **here, ivd_label=label - DISC_LABEL_OFFSET,
                              file=job.mask))
    for ivd in sorted(job.gradings):
        label = DISC_LABEL_OFFSET + ivd
        if label not in in_mask:
            report.append(common.report_row("disc", f"graded disc IVD label {ivd} (mask label {label}) is not in the mask",
                                  **here, ivd_label=ivd, file=job.mask))
            continue
        result, problem = disc_crop(scan, mask, label, job.grid)
        if problem:
            report.append(common.report_row("disc", problem, **here, ivd_label=ivd, file=job.mask))
            continue
        crop, fraction, frame = result
        common.write_crop(job.volumes, f"{ivd_id(job.patient, ivd)}_{job.sequence}.nii.gz", crop,
                          frame.affine_ras(job.grid))
        grades = job.gradings[ivd]
        rows.append({"ivd_id": ivd_id(job.patient, ivd), "subject_id": str(job.patient),
                     "level": LEVELS.get(ivd, f"IVD{ivd}"), "sequence": job.sequence, "centre": job.centre,
                     **{t: ("" if grades[t] < 0 else grades[t]) for t in TASKS.names},
                     "modic_type": grades["modic_type"], "series": job.stem, "in_field": f"{fraction:.3f}"})
    return {"rows": rows, "report": report, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------
# The whole import


def _job_key(job: SeriesJob) -> str:
    """What a series' crops depend on: the importer, the grid, both files and the gradings."""
    return common.content_key({"version": IMPORTER_VERSION, "grid": dataclasses.asdict(job.grid),
                               "sequence": job.sequence, "centre": job.centre, "image": common.file_stamp(job.image),
                               "mask": common.file_stamp(job.mask),
                               "gradings": {str(k): v for k, v in sorted(job.gradings.items())}})


def _jobs(source: Source, out: pathlib.Path, grid, overview, gradings) -> tuple[list[SeriesJob], list[dict]]:
    """One job per usable image; the report rows of the others."""
    report = []
    by_patient: dict[int, dict[int, dict]] = {}
    for (patient, ivd), grades in gradings.items():
        by_patient.setdefault(patient, {})[ivd] = grades
    jobs = []
    images = sorted(source.images.glob("*.mha"))
    for image in images:
        stem = image.name[:-len(".mha")]
        parsed = parse_series_name(stem)
        if parsed is None:
            report.append(common.report_row("series", f"{image.name} is not named <patient>_<t1|t2|t2_SPACE>.mha; skipped",
                                  series=stem, file=image))
            continue
        patient, seq = parsed
        mask = source.masks / image.name
        info = overview.get(stem)
        reason = (f"no mask {mask}" if not mask.is_file() else
                  f"not listed in {source.overview}" if info is None else
                  f"patient {patient} has no row in {source.gradings}" if patient not in by_patient else None)
        if reason:
            report.append(common.report_row("series", f"{reason}; series skipped", patient=patient, series=stem, file=image))
            continue
        jobs.append(SeriesJob(stem, patient, SEQUENCES[seq], str(image), str(mask), info.centre,
                              by_patient[patient], grid, str(out / "volumes")))
    on_disk = {p.name[:-len(".mha")] for p in images}
    for stem, info in sorted(overview.items()):
        if stem not in on_disk:
            report.append(common.report_row("series", f"listed in overview.csv but {source.images / (stem + '.mha')} does "
                                  "not exist", series=stem, file=source.overview, line=info.line))
    imaged = {parsed[0] for parsed in map(parse_series_name, on_disk) if parsed}
    for patient in sorted(set(by_patient) - imaged):
        report.append(common.report_row("grading", f"patient {patient} is graded but has no image in {source.images}",
                              patient=patient, file=source.gradings))
    return jobs, report


def spider_splits(rows: list[dict], overview: dict[str, SeriesInfo], seed: int = 0) -> tuple[dict[str, str], list]:
    """SPIDER's own subsets as the project's splits: its ``validation`` patients
    are the test split; its ``training`` patients are dealt into train and val
    (8 : 2) by the project's stratified rule (centre, worst Pfirrmann)."""
    from ..data import VolumeRow, make_splits

    subset_of: dict[str, set[str]] = {}
    for row in rows:
        subset_of.setdefault(row["subject_id"], set()).add(overview[row["series"]].subset)
    report = []
    splits = {}
    training = []
    for subject, subsets in sorted(subset_of.items()):
        if subsets - {"training", "validation"} or len(subsets) > 1:
            report.append(common.report_row("patient", f"overview.csv gives patient {subject} the subset(s) "
                                  f"{', '.join(sorted(subsets))}; put in the test split", patient=subject))
        if subsets == {"training"}:
            training.append(subject)
        else:
            splits[subject] = "test"
    first = [VolumeRow(r["ivd_id"], r["subject_id"], r["level"], r["sequence"], r["centre"],
                       (int(r["Pfirrmann"]) if r["Pfirrmann"] != "" else -1,), 0)
             for r in rows if r["subject_id"] in set(training)]
    dealt = make_splits(first, seed) if first else {}
    splits.update({s: "val" if split != "train" else "train" for s, split in dealt.items()})
    return splits, report


def import_spider(src, out, *, grid: geometry.CropGrid | None = None, workers: int | None = None,
                  split: str = "stratified", progress: bool = True) -> dict:
    """Imports SPIDER from ``src`` into the dataset folder ``out``; returns the
    summary also written to ``out/dataset.json``."""
    started = time.perf_counter()
    grid = grid or geometry.CropGrid()
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    source = find_source(src)
    try:  # checked before any worker starts
        import SimpleITK  # noqa: F401
    except ImportError:
        raise ValueError("importing SPIDER needs SimpleITK to read .mha: pip install 'spinerank_ext[data]'") from None
    out = pathlib.Path(out)
    common.prepare_out(out, "SPIDER")
    overview, report = read_overview(source.overview)
    gradings, graded_report = read_gradings(source.gradings)
    report += graded_report
    jobs, job_report = _jobs(source, out, grid, overview, gradings)
    report += job_report
    if not jobs:
        raise ValueError(f"no SPIDER series could be imported from {source.root}: "
                         + "; ".join(r["reason"] for r in report[:5]))
    results = common.run_jobs({job.stem: job for job in jobs}, {job.stem: _job_key(job) for job in jobs},
                              import_series, out, workers=workers, progress=progress, desc="import spider",
                              unit="series")
    rows = [row for job in jobs for row in results[job.stem]["rows"]]
    report += [r for job in jobs for r in results[job.stem]["report"]]
    if not rows:
        atomic_write_text(out / "import_report.csv", common.csv_text(REPORT_COLUMNS, report))
        raise ValueError(f"no disc of {len(jobs)} SPIDER series could be cropped; see {out / 'import_report.csv'}")
    rows.sort(key=lambda r: (int(r["subject_id"]), r["ivd_id"], r["sequence"]))
    if split == "spider":
        splits, split_report = spider_splits(rows, overview)
        report += split_report
        atomic_write_text(out / "splits.csv", "subject_id,split\n" + "".join(
            f"{s},{splits[s]}\n" for s in sorted(splits, key=int)))
    elif (out / "splits.csv").exists():
        (out / "splits.csv").unlink()  # a stratified split is made by train, from these labels
    seconds = [results[j.stem]["seconds"] for j in jobs if results[j.stem].get("seconds")]
    summary = {
        "source": {**SOURCE, "folder": str(source.root.resolve())},
        "importer": {"name": "spider", "version": IMPORTER_VERSION, "split": split, "workers": workers or "all CPUs"},
        "crop": {**grid.to_dict(), "axes": "rows: disc normal, superior -> inferior; columns: anterior -> "
                 "posterior in the disc plane; slices: the patient's left -> right",
                 "frame": "centre and normal from the disc's mask voxels in world mm (geometry.disc_frame)",
                 "affine": "NIfTI sform/qform: voxel (row, column, slice) -> the source scan's world RAS mm",
                 "intensity": "clipped to the 0.5-99.5th percentiles of the voxels inside the scan, then mean 0, "
                 "std 1; voxels outside the scan 0", "interpolation": "trilinear"},
        "levels": "IVD label n (mask label 200 + n) counted from the bottom: 1 = L5/S1, 2 = L4/L5, ... assuming "
                  "five lumbar vertebrae (transitional anatomy is not encoded in SPIDER)",
        "centre": "scanner make and model from overview.csv (Manufacturer's first word, ManufacturerModelName)",
        "tasks": TASKS.to_config(),
        "counts": {"series_found": len(jobs) + sum(r["kind"] == "series" for r in job_report),
                   "series_imported": sum(bool(results[j.stem]["rows"]) for j in jobs),
                   "volumes": len(rows), "discs": len({r["ivd_id"] for r in rows}),
                   "subjects": len({r["subject_id"] for r in rows}),
                   "skipped": common.skipped_counts(report)},
        "seconds": {"total": round(time.perf_counter() - started, 2),
                    "per_series_median": round(float(np.median(seconds)), 3) if seconds else None},
    }
    atomic_write_text(out / "labels.csv", common.csv_text(LABEL_COLUMNS, rows))
    atomic_write_text(out / "tasks.json", json.dumps({"tasks": TASKS.to_config()}, indent=2) + "\n")
    atomic_write_text(out / "import_report.csv", common.csv_text(REPORT_COLUMNS, report))
    atomic_write_text(out / "dataset.json", json.dumps(summary, indent=2) + "\n")
    return summary
