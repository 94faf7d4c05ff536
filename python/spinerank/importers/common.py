"""What every importer shares: reading its CSVs and images, the report of what was
skipped, the output folder, writing crops, and running one job per series or
study in parallel with a record per finished job (so an interrupted import,
rerun, redoes only the unfinished ones).

Every file is written under a temporary name and renamed (``atomic_write``), so
no file under a final name is ever half-written; ``prepare_out`` removes the
temporary files an interrupted run left.
"""
from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import os
import pathlib

import numpy as np

from ..checkpoint import atomic_write, atomic_write_text
from . import geometry

#: The columns of import_report.csv: one row per thing skipped, with its reason.
REPORT_COLUMNS = ("kind", "patient", "series", "ivd_label", "file", "line", "reason")
RECORDS = ".import"


def report_row(kind, reason, *, patient="", series="", ivd_label="", file="", line="") -> dict:
    return {"kind": kind, "patient": patient, "series": series, "ivd_label": ivd_label, "file": str(file),
            "line": line, "reason": reason}


def read_csv(path: pathlib.Path, required) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line, record)]) of a CSV (UTF-8, a BOM and CRLF allowed); raises
    naming the file when it is not UTF-8 or lacks a required column (listing the
    columns it has). Header cells are stripped."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        records = [(reader.line_num, record) for record in reader]
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (spelled as in the "
                         f"dataset's file; it has {', '.join(repr(h) for h in header) or 'no header'})")
    return header, records


def csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_image(path) -> geometry.Scan:
    """A scan (``.mha``, ``.nii.gz``, anything SimpleITK reads) with its geometry;
    raises ValueError naming the file when it cannot be read."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ValueError("reading .mha scans needs SimpleITK: pip install 'spinerank_ext[data]' "
                         "(or pip install SimpleITK)") from None
    path = pathlib.Path(path)
    try:
        image = sitk.ReadImage(str(path))
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"it is {image.GetDimension()}-D with {image.GetNumberOfComponentsPerPixel()} "
                             "component(s) per voxel; expected a 3-D scalar image")
        array = sitk.GetArrayFromImage(image)
    except Exception as exc:  # SimpleITK raises RuntimeError with ITK's message
        message = str(exc).strip().splitlines()
        detail = next((m.strip() for m in message if "ERROR" in m.upper() or "exception" in m.lower()),
                      message[-1].strip() if message else type(exc).__name__)
        raise ValueError(f"{path} cannot be read: {detail}") from None
    matrix = geometry.index_to_world(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise ValueError(f"{path} has an unusable geometry (spacing {image.GetSpacing()}, direction "
                         f"{image.GetDirection()})")
    return geometry.Scan(array, matrix, str(path))


def write_crop(volumes: str | pathlib.Path, name: str, crop: np.ndarray, affine_ras: np.ndarray) -> None:
    data = geometry.nifti_bytes(crop, affine_ras)
    atomic_write(pathlib.Path(volumes) / name, lambda f: f.write(data), durable=False)


def file_stamp(path) -> list:
    """What says a source file changed: its size and modification time."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def content_key(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def prepare_out(out: pathlib.Path, source_name: str) -> None:
    """Makes ``out`` (new, empty, or an earlier import) ready: refuses a file or a
    folder of something else; removes the temporary files an interrupted import left."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORDS).is_dir():
        raise ValueError(f"--out {out} is not empty and holds no earlier {source_name} import ({RECORDS}/); give an "
                         "empty or new folder")
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    (out / RECORDS).mkdir(exist_ok=True)
    for folder in (out, out / "volumes", out / RECORDS):
        for tmp in folder.glob(".*.tmp"):  # atomic_write's temporary names
            tmp.unlink(missing_ok=True)


def run_jobs(jobs: dict, keys: dict, work, out: pathlib.Path, *, workers: int | None, progress: bool,
             desc: str, unit: str) -> dict:
    """Runs ``work(job)`` for every ``jobs[name]`` whose record in ``out/.import/``
    is missing or stale (its key differs from ``keys[name]``, or a volume it lists
    is gone); in ``workers`` processes; returns {name: {"rows", "report", ...}}.

    ``work`` returns {"rows": [labels.csv rows with ivd_id and sequence],
    "report": [report rows], "seconds": float}; its volumes are written before it
    returns, and the record after, so a record always describes files that exist."""
    from ..progress import progress_bar

    results, pending = {}, []
    for name, job in jobs.items():
        try:
            saved = json.loads((out / RECORDS / f"{name}.json").read_text())
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and saved.get("key") == keys[name] and all(
                (out / "volumes" / f"{r['ivd_id']}_{r['sequence']}.nii.gz").is_file() for r in saved["rows"]):
            results[name] = saved
        else:
            pending.append(name)
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending) or 1))
    bar = progress_bar(total=len(jobs), initial=len(results), desc=desc, unit=unit, disable=not progress)

    def finish(name, result):
        result = {"key": keys[name], **result}
        atomic_write_text(out / RECORDS / f"{name}.json", json.dumps(result) + "\n")
        results[name] = result
        bar.update()

    try:
        if workers == 1:
            for name in pending:
                finish(name, work(jobs[name]))
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(work, jobs[name]): name for name in pending}
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], future.result())
    finally:
        bar.close()
    return {name: results[name] for name in jobs}


def skipped_counts(report: list[dict]) -> dict:
    return {kind: sum(r["kind"] == kind for r in report) for kind in sorted({r["kind"] for r in report})}
