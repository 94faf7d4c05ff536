"""labels.csv: one checked VolumeRow per volume (see the package docstring)."""
from __future__ import annotations

import csv
import dataclasses
import io
import pathlib

from ..tasks import TaskTable

ID_COLUMNS = ("ivd_id", "subject_id", "level", "sequence", "centre")


@dataclasses.dataclass(frozen=True)
class VolumeRow:
    """One row of labels.csv: a volume and its grades (-1 = missing)."""

    ivd_id: str
    subject_id: str
    level: str
    sequence: str
    centre: str
    grades: tuple[int, ...]
    line: int  # in labels.csv, for messages


#: Characters an id used in a volume's file name may not hold: path separators
#: (both kinds on every system, so a dataset behaves alike everywhere), ``:``
#: (a drive or stream on Windows) and control characters (NUL among them).
_UNSAFE_ID_CHARS = frozenset('/\\:') | {chr(c) for c in range(32)} | {chr(127)}


def unsafe_id_reason(value: str) -> str | None:
    """Why ``value`` cannot be part of a file name inside ``volumes/``, or None."""
    bad = sorted({ch for ch in value if ch in _UNSAFE_ID_CHARS})
    if bad:
        return f"holds {', '.join(repr(ch) for ch in bad)}, which a file name in volumes/ cannot"
    if ".." in value:
        return "holds '..', which a file name in volumes/ may not"
    return None


def _decode_labels(path: pathlib.Path) -> str:
    """The text of labels.csv: UTF-8, with or without a byte-order mark."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(f"{path} is not UTF-8 text{hint}: byte 0x{data[exc.start]:02x} at line {line}, byte "
                         f"{column} cannot be decoded ({exc.reason}); save it as UTF-8 (with or without a "
                         "byte-order mark), e.g. from a spreadsheet as 'CSV UTF-8'") from None


def read_labels(data_dir: str | pathlib.Path, tasks: TaskTable) -> list[VolumeRow]:
    """The rows of labels.csv, checked: every problem names the file and its line(s).

    The file is UTF-8 (a byte-order mark is allowed). A ``(ivd_id, sequence)`` pair
    appears once; a disc (``ivd_id``) belongs to one subject; ``ivd_id`` and
    ``sequence`` name a file in ``volumes/``, so they hold no path separator,
    ``..``, ``:`` or control character, and no two rows name the same file."""
    path = pathlib.Path(data_dir) / "labels.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: a dataset folder needs labels.csv (SPEC §10)")
    reader = csv.DictReader(io.StringIO(_decode_labels(path), newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
    missing = [c for c in (*ID_COLUMNS, *tasks.names) if c not in header]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {', '.join(missing)} "
                         f"(has {', '.join(header) or 'no header'})")
    rows = []
    seen: dict[tuple[str, str], VolumeRow] = {}  # (ivd_id, sequence) -> its row
    files: dict[str, VolumeRow] = {}  # volume file name (without suffix) -> its row
    subject_of: dict[str, VolumeRow] = {}  # ivd_id -> its first row
    records = iter(reader)
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
        line = reader.line_num
        grades = _grades(record, tasks, path, line)
        row = VolumeRow(**_ids(record, path, line), grades=grades, line=line)
        _check_unique(row, seen, files, subject_of, path)
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def _grades(record: dict, tasks: TaskTable, path: pathlib.Path, line: int) -> tuple[int, ...]:
    """A row's grades, one per task (-1: missing, an empty or negative cell), checked."""
    grades = []
    for task in tasks.tasks:
        cell = (record[task.name] or "").strip()
        if cell == "":
            grades.append(-1)
            continue
        try:
            grade = int(float(cell)) if float(cell).is_integer() else None
        except (ValueError, OverflowError):
            grade = None
        if grade is None:
            raise ValueError(f"{path}, line {line}, column {task.name}: grade {cell!r} is not an integer")
        if grade >= task.num_grades:
            raise ValueError(f"{path}, line {line}, column {task.name}: grade {grade} is outside "
                             f"0..{task.num_grades - 1} (empty or negative = missing)")
        grades.append(grade if grade >= 0 else -1)
    return tuple(grades)


def _ids(record: dict, path: pathlib.Path, line: int) -> dict[str, str]:
    """A row's id columns, stripped; ivd_id, subject_id and sequence given, and
    ivd_id and sequence safe in a file name inside volumes/."""
    ids = {c: (record[c] or "").strip() for c in ID_COLUMNS}
    for c in ("ivd_id", "subject_id", "sequence"):
        if not ids[c]:
            raise ValueError(f"{path}, line {line}: column {c} is empty")
    for c in ("ivd_id", "sequence"):
        reason = unsafe_id_reason(ids[c])
        if reason:
            raise ValueError(f"{path}, line {line}, column {c}: {ids[c]!r} {reason} "
                             f"(volumes/<ivd_id>_<sequence>.npy must stay inside volumes/)")
    return ids


def _check_unique(row: VolumeRow, seen: dict, files: dict, subject_of: dict, path: pathlib.Path) -> None:
    """``row`` against the rows before it: one row per (ivd_id, sequence), one row per
    volume file, one subject per disc (``seen``, ``files``, ``subject_of`` record them)."""
    line = row.line
    key = (row.ivd_id, row.sequence)
    if key in seen:
        first = seen[key]
        same = "the same grades" if first.grades == row.grades else "different grades"
        raise ValueError(f"{path}, lines {first.line} and {line}: ivd_id {row.ivd_id!r}, sequence "
                         f"{row.sequence!r} appears twice (with {same}); keep one row per volume")
    seen[key] = row
    name = f"{row.ivd_id}_{row.sequence}"
    if name in files:
        first = files[name]
        raise ValueError(f"{path}, lines {first.line} and {line}: (ivd_id {first.ivd_id!r}, sequence "
                         f"{first.sequence!r}) and (ivd_id {row.ivd_id!r}, sequence {row.sequence!r}) "
                         f"both name the volume volumes/{name}")
    files[name] = row
    first = subject_of.setdefault(row.ivd_id, row)
    if first.subject_id != row.subject_id:
        raise ValueError(f"{path}, lines {first.line} and {line}: ivd_id {row.ivd_id!r} is under subject "
                         f"{first.subject_id!r} on line {first.line} and subject {row.subject_id!r} on line "
                         f"{line}; a disc belongs to one subject")
