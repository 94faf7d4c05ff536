"""Synthetic DICOM studies in the on-disk layout of the Kaggle RSNA 2024 Lumbar Spine
Degenerative Classification dataset, with known geometry.

The competition's terms forbid redistributing its images, so the RSNA importer's tests
and CI use these files instead. ``write_rsna(root, studies, seed)`` writes::

    train.csv                       study_id + 25 grade columns (DATASETS.md section 2.2)
    train_label_coordinates.csv     study_id,series_id,instance_number,condition,level,x,y
    train_series_descriptions.csv   study_id,series_id,series_description
    train_images/<study_id>/<series_id>/<instance_number>.dcm

What a study is
---------------
One ``SpinePhantom`` (6-8 vertebrae, its own random pose) imaged three times:

* ``Sagittal T2/STIR`` and ``Sagittal T1``: 15-17 parallel slices 3.5-4.5 mm apart
  (SliceThickness 3-4 mm), ~200-260 pixels of 1.0-1.4 mm each way, covering L1-S1 plus a
  margin; sampled with ``intensity_at(.., "t2")`` / ``"t1"``;
* ``Axial T2``: one stack of slices (3.5-4.5 mm apart, ~190-225 pixels of 0.8-1.0 mm)
  angled to the mean plane of 2-3 neighbouring discs, or (a quirk) two 3-slice stacks
  each angled to its own disc. Subarticular points exist at those levels only.

Levels map to the phantom's discs (numbered from the bottom): L1/L2 = 205, L2/L3 = 204,
L3/L4 = 203, L4/L5 = 202, L5/S1 = 201.

Label points follow the competition's convention (DATASETS.md section 2.3): the
spinal canal on the Sagittal T2/STIR at the canal centre of each disc level; the left
and right neural foramina on the Sagittal T1, 18-22 mm left/right of the disc centre and
8-12 mm posterior; left and right subarticular zones on the Axial T2, 7-9 mm either side
of the canal centre. Each anatomical ``target`` goes to the instance whose slice plane is
nearest, is projected onto that plane, and the projection's pixel coordinates (x =
column, y = row) are written.

What it guarantees
------------------
* World = DICOM patient LPS mm. Pixel (column x, row y) of an instance lies at
  ``IPP + x * PixelSpacing[1] * IOP[0:3] + y * PixelSpacing[0] * IOP[3:6]``; the slice
  normal is ``cross(IOP[0:3], IOP[3:6])``. The truth is computed from the values as
  written (IOP to 10 decimals, IPP to 6), so it agrees with the files to ~1e-6 mm.
* Every point's ``world`` is exactly what its CSV row means, lies on its instance's plane,
  within half a slice spacing of ``target`` along the normal, and inside the image.
* Spinal canal targets are inside the canal (label 100).
* ``train.csv`` grades are ``Normal/Mild`` (mostly), ``Moderate``, ``Severe`` or empty;
  all three values occur. A level with an empty grade has no coordinate row.
* Files are Part-10 MR Image Storage, Explicit VR Little Endian, uncompressed
  MONOCHROME2 uint16; ``pydicom.dcmread(f).pixel_array`` gives back the image.

Quirks (``quirks=True``; the truth records each): instance numbers running against the
slice normal, shuffled instance numbers, an oblique sagittal series, a series without
``SpacingBetweenSlices``, both sagittal IOP conventions ([0,1,0,0,0,-1] with normal -x and
[0,-1,0,0,0,-1] with normal +x), non-square pixels, a two-stack axial series, 12 bits
stored, a study whose train.csv row has empty cells and a level whose Spinal Canal
Stenosis point is missing (so an importer must fall back, e.g. to the midpoint of the
foraminal points). Even ``studies=1`` holds all of them.
"""
from __future__ import annotations

import csv
import math
import pathlib

import numpy as np

from .phantom import SpinePhantom, _rotation, _unit
from .phantom_dicom import (_axial_fov_points, _axial_frame, _ds, _number_instances, _offsets_covering,
                            _orientation, _place, _planes, _Series, _write_instance)

__all__ = [
    "write_rsna", "CONDITIONS", "LEVELS", "LEVEL_DISCS", "GRADES", "SERIES_OF_CONDITION",
    "TRAIN_COLUMNS", "COORDINATE_COLUMNS", "DESCRIPTION_COLUMNS", "column_name",
]

SAGITTAL_T2 = "Sagittal T2/STIR"
SAGITTAL_T1 = "Sagittal T1"
AXIAL_T2 = "Axial T2"

#: train_label_coordinates.csv spellings, in train.csv's column order.
CONDITIONS = ("Spinal Canal Stenosis", "Left Neural Foraminal Narrowing", "Right Neural Foraminal Narrowing",
              "Left Subarticular Stenosis", "Right Subarticular Stenosis")
LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
#: RSNA level -> the SpinePhantom disc label (discs are numbered from the bottom).
LEVEL_DISCS = {"L1/L2": 205, "L2/L3": 204, "L3/L4": 203, "L4/L5": 202, "L5/S1": 201}
GRADES = ("Normal/Mild", "Moderate", "Severe")
#: The series type each condition is annotated on (DATASETS.md section 2.3).
SERIES_OF_CONDITION = {
    "Spinal Canal Stenosis": SAGITTAL_T2,
    "Left Neural Foraminal Narrowing": SAGITTAL_T1, "Right Neural Foraminal Narrowing": SAGITTAL_T1,
    "Left Subarticular Stenosis": AXIAL_T2, "Right Subarticular Stenosis": AXIAL_T2,
}
COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS = ("study_id", "series_id", "series_description")


def column_name(condition: str, level: str) -> str:
    """train.csv's column for a coordinates-file (condition, level), e.g.
    ('Spinal Canal Stenosis', 'L1/L2') -> 'spinal_canal_stenosis_l1_l2'."""
    return f"{condition.lower().replace(' ', '_')}_{level.lower().replace('/', '_')}"


TRAIN_COLUMNS = ("study_id", *(column_name(c, lv) for c in CONDITIONS for lv in LEVELS))


def _disc(phantom, level):
    """The phantom's DiscTruth at an RSNA level (``discs`` is ordered by label from 201)."""
    return phantom.discs[LEVEL_DISCS[level] - 201]


_GRADE_P = (0.72, 0.18, 0.10)
#: Pfirrmann grades drawn for a disc by its level's spinal grade, so the T2 nucleus
#: darkens with severity (None: an empty cell).
_PFIRRMANN_BY_GRADE = {"Normal/Mild": (1, 2, 3), "Moderate": (3, 4), "Severe": (4, 5), None: (2,)}
_SCANNERS = (("SIEMENS", 1.5), ("GE MEDICAL SYSTEMS", 3.0), ("Philips Healthcare", 1.5))
_SEQUENCE = {SAGITTAL_T2: "t2", SAGITTAL_T1: "t1", AXIAL_T2: "t2"}
_FORAMEN_LATERAL = (18.0, 22.0)     # mm from the disc centre towards the patient's side
_FORAMEN_POSTERIOR = (8.0, 12.0)
_SUBARTICULAR_LATERAL = (7.0, 9.0)  # mm from the canal centre
_X = np.array([1.0, 0.0, 0.0])


# ---- the series (their stacks: phantom_dicom.py) --------------------------------------

def _sagittal_series(phantom, targets, series_id, description, spec, rng):
    """A sagittal stack covering L1-S1 and every target within half a slice spacing."""
    # Both conventions put the column direction inferior; the row direction is posterior
    # (normal -x) or anterior (normal +x).
    row = np.array([0.0, 1.0 if spec["convention"] == 0 else -1.0, 0.0])
    column = np.array([0.0, 0.0, -1.0])
    if spec["oblique"]:
        # Mostly about the left-right axis, so the slice normal tilts only ~2-5 degrees
        # and 15-17 slices still reach both foramina at every level.
        perpendicular = _unit(np.array([0.0, *rng.normal(size=2)]))
        axis = _unit(_X + rng.uniform(0.2, 0.35) * perpendicular)
        turn = _rotation(axis, rng.uniform(8.0, 15.0) * rng.choice([-1.0, 1.0]))
        row, column = turn @ row, turn @ column
    spacing = round(rng.uniform(1.0, 1.4), 4)
    column_spacing = round(rng.uniform(1.0, 1.4), 4) if spec["anisotropic"] else spacing
    orientation = _orientation(row, column, spacing, column_spacing)
    slice_spacing = round(rng.uniform(3.5, 4.5), 2)
    thickness = round(min(4.0, max(3.0, slice_spacing - rng.uniform(0.3, 0.8))), 1)
    offsets = _offsets_covering(targets @ orientation.normal, slice_spacing, int(rng.integers(15, 18)), rng)
    sizes = (int(rng.integers(200, 241)), int(rng.integers(200, 241)))
    planes = _planes(orientation, offsets, _lumbar_outline(phantom), sizes, 10.0, rng)
    return _Series(series_id, description, planes, [orientation], slice_spacing, thickness, oblique=spec["oblique"])


def _lumbar_outline(phantom):
    """The phantom's outline points from 45 mm below L5/S1 to 45 mm above L1/L2 along the
    spine: what a lumbar sagittal field of view must hold (the T10-T12 of an 8-vertebra
    phantom would not fit ~250 pixels)."""
    bottom, top = (_disc(phantom, level).centre for level in ("L5/S1", "L1/L2"))
    axis = _unit(top - bottom)
    points = phantom.outline_points()
    along = (points - bottom) @ axis
    return points[(along >= -45.0) & (along <= (top - bottom) @ axis + 45.0)]


def _axial_series(phantom, level_groups, targets_by_group, series_id, rng):
    """One stack per group of levels, each angled to its discs' mean plane, stacks
    ordered inferior to superior, all of one image size."""
    spacing = round(rng.uniform(0.8, 1.0), 4)
    slice_spacing = round(rng.uniform(3.5, 4.5), 2)
    thickness = round(min(4.0, max(3.0, slice_spacing - rng.uniform(0.3, 0.8))), 1)
    groups = sorted(zip(level_groups, targets_by_group), key=lambda g: LEVEL_DISCS[g[0][0]])
    sizes = [int(rng.integers(192, 225))] * 2
    # The common image size: large enough for every stack's field of view.
    stack_specs = []
    for levels, targets in groups:
        discs = [_disc(phantom, lv) for lv in levels]
        orientation = _orientation(*_axial_frame(discs), spacing, spacing)
        fov = _axial_fov_points(discs)
        for axis, direction in ((0, orientation.column), (1, orientation.row)):
            along = fov @ direction
            sizes[axis] = max(sizes[axis], int(math.ceil((np.ptp(along) + 10.0) / spacing)) + 1)
        stack_specs.append((orientation, discs, targets, fov))
    planes, orientations = [], []
    for index, (orientation, discs, targets, fov) in enumerate(stack_specs):
        along = np.concatenate([targets, [d.centre for d in discs]]) @ orientation.normal
        offsets = _offsets_covering(along, slice_spacing, 3, rng)
        planes += _planes(orientation, offsets, fov, sizes, 5.0, rng, stack=index, sizes=tuple(sizes))
        orientations.append(orientation)
    return _Series(series_id, AXIAL_T2, planes, orientations, slice_spacing, thickness)


# ---- targets and points ---------------------------------------------------------------

def _targets(phantom, rng):
    """{(condition, level): LPS target} for every condition and level."""
    targets = {}
    for level in LEVELS:
        disc = _disc(phantom, level)
        canal = phantom.canal_centre(disc.label)
        left = -disc.right
        targets[(CONDITIONS[0], level)] = canal
        for condition, side in ((CONDITIONS[1], left), (CONDITIONS[2], -left)):
            targets[(condition, level)] = (disc.centre + rng.uniform(*_FORAMEN_LATERAL) * side
                                           + rng.uniform(*_FORAMEN_POSTERIOR) * disc.posterior)
        for condition, side in ((CONDITIONS[3], left), (CONDITIONS[4], -left)):
            targets[(condition, level)] = canal + rng.uniform(*_SUBARTICULAR_LATERAL) * side
    return targets


# ---- study plan ---------------------------------------------------------------------------

def _plans(studies, quirks, rng):
    """Per study, per series type: IOP convention, oblique, instance order, missing tag,
    non-square pixels, two axial stacks. Quirks go to studies 0, 1, 2 (clamped), so any
    number of studies holds all of them."""
    last = studies - 1
    plans = []
    for index in range(studies):
        plan = {}
        for kind in (SAGITTAL_T2, SAGITTAL_T1, AXIAL_T2):
            order = str(rng.choice(["along", "against"])) if quirks else "along"
            plan[kind] = {"convention": 0, "oblique": False, "order": order, "missing_tag": None,
                          "anisotropic": False, "two_stacks": False, "bits_stored": 16}
        if quirks:
            # Both sagittal conventions within every study.
            plan[SAGITTAL_T2]["convention"], plan[SAGITTAL_T1]["convention"] = index % 2, (index + 1) % 2
            plan[AXIAL_T2]["bits_stored"] = 12 if index % 2 == 0 else 16
        plans.append(plan)
    if quirks:
        plans[0][SAGITTAL_T2]["order"] = "against"
        plans[0][SAGITTAL_T1]["anisotropic"] = True
        plans[min(1, last)][AXIAL_T2]["order"] = "shuffled"
        plans[min(1, last)][SAGITTAL_T1]["oblique"] = True
        plans[min(2, last)][SAGITTAL_T2]["missing_tag"] = "SpacingBetweenSlices"
        plans[min(2, last)][AXIAL_T2]["two_stacks"] = True
    return plans


def _force_all_grades(grades, rng):
    """Makes every grade value occur at least once, changing distinct cells."""
    cells = [(i, key) for i in range(len(grades)) for key in grades[i]]
    order = list(rng.permutation(len(cells)))
    for grade in GRADES:
        if any(grade in per.values() for per in grades):
            continue
        # Change a cell whose value occurs at least twice, so nothing else disappears.
        for pick in order:
            i, key = cells[pick]
            old = grades[i][key]
            if sum(v == old for per in grades for v in per.values()) >= 2:
                grades[i][key] = grade
                break


# ---- files --------------------------------------------------------------------------------

def _write_csv(path, header, rows):
    # pandas' to_csv style, like Kaggle's files: "\n", no index.
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _uid(seed, *parts):
    from pydicom.uid import generate_uid
    return generate_uid(entropy_srcs=["spinerank-rsna-phantom", str(seed), *map(str, parts)])


def _render(series, phantom, pfirrmann, rng, bits_stored):
    """uint16 images (planes, rows, columns) of the phantom at the pixel centres, scaled
    by a per-series gain, with mild Gaussian noise."""
    points = np.stack([plane.pixel_centres() for plane in series.planes])
    intensity = phantom.intensity_at(points.reshape(-1, 3), _SEQUENCE[series.description], pfirrmann)
    gain = rng.uniform(0.8, 1.6)
    noisy = gain * intensity + rng.normal(0.0, 10.0 * gain, intensity.shape)
    top = 2 ** bits_stored - 1
    return np.clip(np.rint(noisy), 0, top).astype(np.uint16).reshape(points.shape[:3])


def _write_series(root, study_id, study_uid, frame_uid, series, images, spec, scanner, number, seed):
    folder = root / "train_images" / str(study_id) / str(series.series_id)
    folder.mkdir(parents=True, exist_ok=True)
    manufacturer, tesla = scanner
    header = {
        "Modality": "MR", "PatientID": str(study_id), "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": _uid(seed, "series", series.series_id), "FrameOfReferenceUID": frame_uid,
        "SeriesDescription": series.description, "SeriesNumber": int(number),
        "Manufacturer": manufacturer, "MagneticFieldStrength": _ds(tesla, 1),
        "SliceThickness": _ds(series.thickness, 2), "SpacingBetweenSlices": _ds(series.slice_spacing, 2),
        "BodyPartExamined": "LSPINE", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    }
    if spec["missing_tag"] is not None:
        del header[spec["missing_tag"]]
    slices = []
    for k, (plane, instance) in enumerate(zip(series.planes, series.instances)):
        path = folder / f"{instance}.dcm"
        _write_instance(path, header, plane, series.orientations[plane.stack], instance, images[k],
                        spec["bits_stored"], _uid(seed, "instance", series.series_id, instance))
        slices.append({"instance": instance, "position": plane.position, "file": path,
                       "normal": plane.normal, "stack": plane.stack})
    first = series.orientations[0]
    return {
        "description": series.description, "folder": folder, "normal": first.normal, "slices": slices,
        "oblique": series.oblique, "instance_order": series.instance_order, "missing_tag": spec["missing_tag"],
        "stacks": [[s["instance"] for s in slices if s["stack"] == i] for i in range(len(series.orientations))],
        "iop": [np.concatenate([o.row, o.column]) for o in series.orientations],
        "pixel_spacing": first.pixel_spacing, "rows": series.planes[0].rows, "columns": series.planes[0].columns,
        "spacing_between_slices": series.slice_spacing, "slice_thickness": series.thickness,
        "bits_stored": spec["bits_stored"],
    }


def _unique_ids(rng, count, taken):
    """Integers like the real study and series ids (8-10 digits), distinct from ``taken``."""
    ids = []
    while len(ids) < count:
        value = int(rng.integers(10_000_000, 4_294_967_295))
        if value not in taken:
            taken.add(value)
            ids.append(value)
    return ids


def write_rsna(root, studies: int = 3, seed: int = 0, *, quirks: bool = True) -> dict:
    """Writes ``studies`` synthetic RSNA 2024 studies under ``root`` and returns the truth::

        {"studies": {study_id: {
            "phantom": SpinePhantom,
            "series": {series_id: {"description", "folder": Path, "normal": LPS unit normal
                        (the first stack's), "slices": [{"instance", "position" (IPP), "file",
                        "normal", "stack"}] in spatial order (stacks inferior first, each along
                        its normal), "oblique", "instance_order": "along"|"against"|"shuffled",
                        "missing_tag": str|None, "stacks": [[instance, ...] per stack], "iop":
                        [(6,) per stack], "pixel_spacing": (row, column), "rows", "columns",
                        "spacing_between_slices", "slice_thickness", "bits_stored"}},
            "points": {(condition, level): {"series_id", "instance", "x", "y", "world": LPS (3,)
                        of that pixel coordinate, "target": LPS (3,) anatomical point}},
            "grades": {(condition, level): "Normal/Mild"|"Moderate"|"Severe"|None},
            "pfirrmann": {disc label: 1..5 as rendered},
            "axial_levels": [level, ...],   # levels with subarticular points
            "axial_stacks": [[level, ...] per stack, inferior stack first],
         }},
         "incomplete": [(study_id, column), ...],      # empty cells of train.csv
         "no_canal_point": [(study_id, level), ...]}    # graded levels without a canal point

    Conditions and levels use the coordinates file's spellings (``CONDITIONS``, ``LEVELS``).
    """
    studies = int(studies)
    if studies < 1:
        raise ValueError(f"studies must be >= 1, got {studies}")
    root = pathlib.Path(root)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    taken: set[int] = set()
    study_ids = _unique_ids(rng, studies, taken)
    plans = _plans(studies, quirks, rng)
    grades = [{(c, lv): GRADES[int(rng.choice(3, p=_GRADE_P))] for c in CONDITIONS for lv in LEVELS}
              for _ in range(studies)]

    no_canal, incomplete = [], []
    if quirks:
        # Study 0 loses one level's canal point; its foraminal points stay, so the
        # importer can fall back to their midpoint.
        no_canal_level = LEVELS[int(rng.integers(len(LEVELS)))]
        no_canal.append((study_ids[0], no_canal_level))
        # Study 1 (clamped) has a few empty cells, never at the no-canal level's sagittal
        # conditions.
        index = min(1, studies - 1)
        protected = {(c, no_canal_level) for c in CONDITIONS[:3]} if index == 0 else set()
        candidates = [key for key in grades[index] if key not in protected]
        for pick in rng.choice(len(candidates), size=3, replace=False):
            grades[index][candidates[pick]] = None
    _force_all_grades(grades, rng)
    for index, study_id in enumerate(study_ids):
        incomplete += [(study_id, column_name(c, lv)) for c in CONDITIONS for lv in LEVELS
                       if grades[index][(c, lv)] is None]

    truth = {"studies": {}, "incomplete": incomplete, "no_canal_point": no_canal}
    coordinate_rows, description_rows, train_rows = [], [], []
    for index, study_id in enumerate(study_ids):
        study = _write_study(root, study_id, index, plans[index], grades[index],
                             [lv for sid, lv in no_canal if sid == study_id], rng, seed, taken)
        truth["studies"][study_id] = study
        for series_id, series in study["series"].items():
            description_rows.append([study_id, series_id, series["description"]])
        for condition in CONDITIONS:
            for level in LEVELS:
                point = study["points"].get((condition, level))
                if point is not None:
                    coordinate_rows.append([study_id, point["series_id"], point["instance"], condition, level,
                                            repr(point["x"]), repr(point["y"])])
        train_rows.append([study_id, *(study["grades"][(c, lv)] or "" for c in CONDITIONS for lv in LEVELS)])

    train_rows.sort(key=lambda row: row[0])   # the real train.csv is sorted by study_id
    _write_csv(root / "train.csv", TRAIN_COLUMNS, train_rows)
    _write_csv(root / "train_label_coordinates.csv", COORDINATE_COLUMNS, coordinate_rows)
    _write_csv(root / "train_series_descriptions.csv", DESCRIPTION_COLUMNS, description_rows)
    return truth


def _pfirrmann(phantom, grades, rng):
    """Pfirrmann grades to render, drawn from each level's spinal grade (other discs 2)."""
    pfirrmann = {disc.label: 2 for disc in phantom.discs}
    for level in LEVELS:
        pfirrmann[LEVEL_DISCS[level]] = int(rng.choice(_PFIRRMANN_BY_GRADE[grades[(CONDITIONS[0], level)]]))
    return pfirrmann


def _axial_groups(two_stacks, rng):
    """Levels per axial stack, inferior stack first (the series' order): 2-3 neighbouring
    levels in one stack, or two levels in two stacks."""
    if two_stacks:
        groups = [[LEVELS[i]] for i in rng.choice(len(LEVELS), size=2, replace=False)]
    else:
        count = int(rng.integers(2, 4))
        first = int(rng.integers(0, len(LEVELS) - count + 1))
        groups = [list(LEVELS[first:first + count])]
    return sorted(groups, key=lambda group: LEVEL_DISCS[group[0]])


def _build_series(phantom, targets, plan, axial_groups, series_ids, rng):
    """{description: _Series} of one study, instances not yet numbered."""
    sagittal_targets = {
        SAGITTAL_T2: np.array([targets[(CONDITIONS[0], lv)] for lv in LEVELS]),
        SAGITTAL_T1: np.array([targets[(c, lv)] for c in CONDITIONS[1:3] for lv in LEVELS]),
    }
    built = {}
    for kind, series_id in zip((SAGITTAL_T2, SAGITTAL_T1), series_ids[:2]):
        built[kind] = _sagittal_series(phantom, sagittal_targets[kind], series_id, kind, plan[kind], rng)
    group_targets = [np.array([targets[(c, lv)] for c in CONDITIONS[3:] for lv in group]) for group in axial_groups]
    built[AXIAL_T2] = _axial_series(phantom, axial_groups, group_targets, series_ids[2], rng)
    return built


def _points(built, targets, grades, no_canal_levels, axial_levels):
    """The annotations: every graded (condition, level) on its series type, except the
    dropped canal points and subarticular levels the axial series does not cover."""
    points = {}
    for condition in CONDITIONS:
        series = built[SERIES_OF_CONDITION[condition]]
        for level in LEVELS:
            if grades[(condition, level)] is None:
                continue     # an empty cell has no annotation either
            if condition == CONDITIONS[0] and level in no_canal_levels:
                continue
            if condition in CONDITIONS[3:] and level not in axial_levels:
                continue
            target = targets[(condition, level)]
            k, x, y, world = _place(series, target)
            points[(condition, level)] = {"series_id": series.series_id, "instance": series.instances[k],
                                          "x": x, "y": y, "world": world, "target": target}
    return points


def _write_study(root, study_id, index, plan, grades, no_canal_levels, rng, seed, taken):
    """Draws one study's phantom, writes its three series and returns its truth."""
    phantom = SpinePhantom(int(rng.integers(2**31)), int(rng.integers(6, 9)))
    targets = _targets(phantom, rng)
    pfirrmann = _pfirrmann(phantom, grades, rng)
    axial_groups = _axial_groups(plan[AXIAL_T2]["two_stacks"], rng)
    axial_levels = [lv for group in axial_groups for lv in group]
    built = _build_series(phantom, targets, plan, axial_groups, _unique_ids(rng, 3, taken), rng)

    study_uid, frame_uid = _uid(seed, "study", study_id), _uid(seed, "frame", study_id)
    scanner = _SCANNERS[index % len(_SCANNERS)]
    numbers = rng.choice(np.arange(1, 20), size=3, replace=False)
    series_truth = {}
    for number, (kind, series) in zip(numbers, built.items()):
        spec = plan[kind]
        _number_instances(series, spec["order"], rng)
        images = _render(series, phantom, pfirrmann, rng, spec["bits_stored"])
        series_truth[series.series_id] = _write_series(root, study_id, study_uid, frame_uid, series, images,
                                                       spec, scanner, number, seed)
    return {"phantom": phantom, "series": series_truth,
            "points": _points(built, targets, grades, no_canal_levels, axial_levels), "grades": dict(grades),
            "pfirrmann": pfirrmann, "axial_levels": axial_levels, "axial_stacks": axial_groups}
