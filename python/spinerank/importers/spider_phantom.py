"""Whole-lumbar-spine phantoms (phantom.py) written in SPIDER's on-disk layout.

``write_spider(root, patients, seed)`` writes ``images/<patient>_<seq>.mha``,
``masks/<patient>_<seq>.mha``, ``overview.csv`` and ``radiological_gradings.csv`` as the
public SPIDER release lays them out (file names, CSV headers and spellings, CRLF, label
values, axis orders), with its quirks, and returns the truth. One phantom per patient;
each series (t1, t2, and t2_SPACE for the last patient) samples it on its own sagittal
grid, with varied axis orders (slice axis first or last), flipped in-plane axes, oblique
directions, both determinant signs, non-square pixels, uint8 and int16 masks,
compressed and uncompressed files.
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np

from .phantom import _X, _Y, _Z, DISC_LABEL_OFFSET, SpinePhantom, _rotation

__all__ = ["write_spider", "OVERVIEW_COLUMNS", "GRADING_COLUMNS"]

#: overview.csv's 39 columns, in the file's order (DATASETS.md section 1.5).
OVERVIEW_COLUMNS = (
    "new_file_name", "num_vertebrae", "num_discs", "sex", "birth_date", "subset", "AngioFlag",
    "BodyPartExamined", "DeviceSerialNumber", "EchoNumbers", "EchoTime", "EchoTrainLength",
    "FlipAngle", "ImagedNucleus", "ImagingFrequency", "InPlanePhaseEncodingDirection",
    "MRAcquisitionType", "MagneticFieldStrength", "Manufacturer", "ManufacturerModelName",
    "NumberOfPhaseEncodingSteps", "PercentPhaseFieldOfView", "PercentSampling",
    "PhotometricInterpretation", "PixelBandwidth", "PixelSpacing", "RepetitionTime", "SAR",
    "SamplesPerPixel", "ScanningSequence", "SequenceName", "SeriesDescription", "SliceThickness",
    "SoftwareVersions", "SpacingBetweenSlices", "SpecificCharacterSet", "TransmitCoilName",
    "WindowCenter", "WindowWidth",
)

#: radiological_gradings.csv's header, with SPIDER's spellings ("Pfirrman", one n).
GRADING_COLUMNS = (
    "Patient", "IVD label", "Modic", "UP endplate", "LOW endplate", "Spondylolisthesis",
    "Disc herniation", "Disc narrowing", "Disc bulging", "Pfirrman grade",
)


# ---- series grids --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How a series samples the phantom: which index axis is the sagittal (L-R) one,
    the LPS direction of each index axis before an optional oblique rotation
    ``(axis, degrees)``, and the spacing in ITK index order."""
    axis_order: str
    axes: tuple
    spacing: tuple
    oblique: tuple | None = None

    def direction(self):
        direction = np.column_stack(self.axes).astype(float)
        if self.oblique is not None:
            direction = _rotation(*self.oblique) @ direction
        return direction

    @property
    def slice_axis(self):
        return 0 if self.axis_order == "slice_first" else 2


#: t1/t2 layouts, cycled over the t1/t2 series in order (3 patients use all six). The
#: first three already hold both axis orders, an oblique grid and both determinant signs.
_LAYOUTS = (
    _Layout("slice_first", (-_X, _Y, -_Z), (3.3, 1.25, 1.25)),                        # det +1
    _Layout("slice_last", (_Y, -_Z, _X), (1.2, 1.2, 4.0), ((0.3, 0.9, 0.3), 9.0)),   # det -1, oblique
    _Layout("slice_first", (_X, -_Z, -_Y), (4.4, 1.1, 1.3)),                          # det -1, rows anterior
    _Layout("slice_last", (-_Y, _Z, -_X), (0.9765625, 0.9765625, 3.6)),              # det +1
    _Layout("slice_first", (_X, _Z, _Y), (3.3, 1.4, 1.4), ((1.0, 0.4, 0.7), 12.0)),  # det -1, oblique
    _Layout("slice_first", (-_X, -_Y, _Z), (4.0, 1.5, 1.2)),                          # det +1
)
_SPACE_LAYOUT = _Layout("slice_first", (_X, _Y, -_Z), (2.0, 1.25, 1.25))

_SLICE_HALF_WIDTH = 30.0   # mm each side of the spine's midline: ~60 mm left-right
_IN_PLANE_MARGIN = 8.0     # mm beyond the outline, superior-inferior and anterior-posterior


@dataclasses.dataclass(frozen=True)
class _Grid:
    size: tuple          # ITK order (i, j, k)
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray  # column m = LPS direction of index axis m

    def world_points(self):
        """Voxel centres in LPS, in GetArrayFromImage's (k, j, i) order, flattened."""
        k, j, i = np.meshgrid(*(np.arange(n) for n in self.size[::-1]), indexing="ij")
        index = np.stack([i, j, k], axis=-1).reshape(-1, 3) * self.spacing
        return self.origin + index @ self.direction.T

    def image(self, array):
        import SimpleITK as sitk
        image = sitk.GetImageFromArray(array.reshape(self.size[::-1]))
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction.ravel()])  # row-major
        return image


def _series_grid(phantom, layout, rng):
    """A grid of ``layout`` covering the phantom: ~60 mm about the midline along the
    slice axis, the whole outline plus a margin along the in-plane axes; the origin is
    shifted by a random fraction of a voxel so voxel centres are not tied to the phantom."""
    direction = layout.direction()
    spacing = np.asarray(layout.spacing, dtype=float)
    along = phantom.outline_points() @ direction    # coordinates along each index axis
    lo, hi = along.min(axis=0) - _IN_PLANE_MARGIN, along.max(axis=0) + _IN_PLANE_MARGIN
    m = layout.slice_axis
    middle = (along[:, m].min() + along[:, m].max()) / 2
    half = max(_SLICE_HALF_WIDTH, (along[:, m].max() - along[:, m].min()) / 2 + 2.0)
    lo[m], hi[m] = middle - half, middle + half
    lo = lo - rng.uniform(0, 1, 3) * spacing
    size = tuple(int(v) for v in np.ceil((hi - lo) / spacing) + 1)
    return _Grid(size, spacing, direction @ lo, direction)


# ---- the patients ---------------------------------------------------------------------

#: Scanner per patient (cycled): manufacturer, model, field strength, software versions.
_SCANNERS = (
    ("SIEMENS", "Avanto_fit", 1.5, "syngo MR E11"),
    ("Philips Healthcare", "Ingenia", 3.0, "['5.6.1', '5.6.1.2']"),
    ("Philips Medical Systems", "Achieva", 1.5, "['3.2.3', '3.2.3.1']"),
)
#: Per sequence: EchoTime, EchoTrainLength, FlipAngle, RepetitionTime, MRAcquisitionType,
#: SequenceName, SeriesDescription (Siemens, Philips).
_SEQUENCE_PARAMETERS = {
    "t1": (9.8, 4, 150, 600.0, "2D", "*tse2d1_3", ("t1_tse_sag", "T1W_TSE_SAG")),
    "t2": (96.0, 17, 150, 3500.0, "2D", "*tse2d1_17", ("t2_tse_sag", "T2W_TSE_SAG")),
    "t2_SPACE": (120.0, 60, 120, 1500.0, "3D", "*spc1_3ns", ("T2_space_sag_c4", "T2_space_sag_c4")),
}
_BINARY_FINDINGS = {   # probability of a positive, roughly SPIDER's rates
    "UP endplate": 0.4, "LOW endplate": 0.4, "Spondylolisthesis": 0.03,
    "Disc herniation": 0.05, "Disc narrowing": 0.36, "Disc bulging": 0.49,
}
_MODIC_P = (0.65, 0.03, 0.30, 0.02)
_PFIRRMANN_P = (0.19, 0.22, 0.28, 0.19, 0.12)


def _draw_gradings(rng, patient_numbers, vertebra_counts, quirks):
    """Grades for every disc of every patient ({patient: {disc label: row}}), with every
    Pfirrmann grade forced to occur when there are at least 5 graded discs, and the
    quirks: patient 1's top disc left ungraded, one IVD label 0 row."""
    ungraded = {(patient_numbers[0], vertebra_counts[0])} if quirks else set()
    rows = {}
    for patient, count in zip(patient_numbers, vertebra_counts):
        rows[patient] = {}
        for ivd in range(1, count + 1):
            findings = {"Modic": int(rng.choice(4, p=_MODIC_P))}
            findings.update({name: int(rng.random() < p) for name, p in _BINARY_FINDINGS.items()})
            findings["Pfirrman grade"] = int(rng.choice(5, p=_PFIRRMANN_P)) + 1
            rows[patient][ivd] = findings
    graded = [(p, ivd) for p in rows for ivd in rows[p] if (p, ivd) not in ungraded]
    if len(graded) >= 5:
        chosen = rng.choice(len(graded), size=5, replace=False)
        for grade, pick in zip(rng.permutation(5) + 1, chosen):
            patient, ivd = graded[pick]
            rows[patient][ivd]["Pfirrman grade"] = int(grade)
    return rows, ungraded


def _format_spacing(value, leading_dot):
    """Like the DICOM-derived strings: '1.25', '3.3', and optionally '.9765625'."""
    text = repr(float(value))
    return text[1:] if leading_dot and text.startswith("0.") else text


def _overview_row(stem, patient_index, patient_count, seq, layout, vertebrae, quirks, scanning_sequence):
    manufacturer, model, tesla, software = _SCANNERS[patient_index % len(_SCANNERS)]
    echo_time, train, flip, repetition, acquisition, sequence_name, descriptions = _SEQUENCE_PARAMETERS[seq]
    siemens = manufacturer == "SIEMENS"
    # PixelSpacing = [row spacing, column spacing]; the faster in-plane index axis is
    # taken as the column axis.
    in_plane = [a for a in range(3) if a != layout.slice_axis]
    row_spacing, column_spacing = layout.spacing[in_plane[1]], layout.spacing[in_plane[0]]
    leading_dot = quirks and min(row_spacing, column_spacing) < 1
    slice_spacing = layout.spacing[layout.slice_axis]
    sexes = ("F", "M")
    sex = sexes[patient_index % 2] + (" " if quirks and patient_index % 2 == 0 else "")
    age = "" if quirks and patient_index % 2 == 1 else repr(float(31 + (17 * patient_index) % 50))
    subset = "validation" if patient_count >= 2 and patient_index == patient_count - 1 else "training"
    empty_optional = quirks and manufacturer == "Philips Medical Systems"
    values = {
        "new_file_name": stem, "num_vertebrae": vertebrae, "num_discs": vertebrae, "sex": sex,
        "birth_date": age, "subset": subset, "AngioFlag": "" if empty_optional else "N",
        "BodyPartExamined": "" if empty_optional else "LSPINE",
        "DeviceSerialNumber": "" if empty_optional else str(40000 + 137 * patient_index),
        "EchoNumbers": 1, "EchoTime": echo_time, "EchoTrainLength": train, "FlipAngle": flip,
        "ImagedNucleus": "1H", "ImagingFrequency": 63.676 if tesla == 1.5 else 127.741,
        "InPlanePhaseEncodingDirection": "COL" if siemens else "ROW", "MRAcquisitionType": acquisition,
        "MagneticFieldStrength": tesla, "Manufacturer": manufacturer, "ManufacturerModelName": model,
        "NumberOfPhaseEncodingSteps": 256, "PercentPhaseFieldOfView": 100.0, "PercentSampling": 80.0,
        "PhotometricInterpretation": "MONOCHROME2", "PixelBandwidth": 200.0,
        "PixelSpacing": "[%s, %s]" % (_format_spacing(row_spacing, leading_dot),
                                      _format_spacing(column_spacing, leading_dot)),
        "RepetitionTime": repetition, "SAR": 1.2, "SamplesPerPixel": 1, "ScanningSequence": scanning_sequence,
        "SequenceName": sequence_name if siemens else "", "SeriesDescription": descriptions[0 if siemens else 1],
        "SliceThickness": slice_spacing if seq == "t2_SPACE" else round(slice_spacing - 0.3, 1),
        "SoftwareVersions": "" if empty_optional else software, "SpacingBetweenSlices": slice_spacing,
        "SpecificCharacterSet": "ISO_IR 100", "TransmitCoilName": "Body" if siemens else "",
        "WindowCenter": 800, "WindowWidth": 1600,
    }
    return [values[name] for name in OVERVIEW_COLUMNS]


def _write_csv(path, header, rows):
    # SPIDER's CSVs: CRLF line endings, no BOM.
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_spider(root, patients: int = 3, seed: int = 0, *, compress: str = "mixed", quirks: bool = True,
                 in_plane_mm: float | None = None) -> dict:
    """Writes a SPIDER-layout folder of phantoms under ``root`` and returns its truth.

    Patients are numbered 1..patients, each with 6-8 vertebrae; every patient has a t1 and
    a t2 series, the last one also t2_SPACE. ``compress``: "mixed" (every other series
    zlib-compressed), "all" or "none". ``quirks`` adds SPIDER's oddities: ``'F '`` with
    a trailing space, empty ages and optional columns, a leading-dot PixelSpacing, an
    ``IVD label`` 0 row (for the second patient, or the only one) and an ungraded top
    disc (patient 1). In overview.csv, ``SpacingBetweenSlices`` is the true slice spacing and
    ``PixelSpacing`` is ``[row, column]`` spacing with the faster in-plane index axis taken
    as the column axis. ``in_plane_mm`` replaces every series' in-plane spacing (e.g. 0.6
    for scanner-sized series of ~16 x 550 x 320 voxels, for benchmarks). Returns::

        {"series": {stem: {"patient", "seq", "discs", "phantom", "image", "mask",
                           "axis_order", "oblique", "compressed"}},
         "gradings": {(patient, ivd_label): {column: value}}   # rows that join a mask disc
         "skipped": [{"patient", "ivd_label", "reason"}]}       # the quirk rows and discs
    """
    import SimpleITK as sitk

    if compress not in ("mixed", "all", "none"):
        raise ValueError(f"compress must be 'mixed', 'all' or 'none', got {compress!r}")
    if int(patients) < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    numbers = list(range(1, int(patients) + 1))
    vertebra_counts = [int(v) for v in rng.integers(6, 9, size=len(numbers))]
    phantoms = {p: SpinePhantom(int(rng.integers(2**31)), n) for p, n in zip(numbers, vertebra_counts)}
    grading_rows, ungraded = _draw_gradings(rng, numbers, vertebra_counts, quirks)

    series, overview_rows = {}, []
    t1t2_count = 0
    for index, patient in enumerate(numbers):
        phantom = phantoms[patient]
        grades = {DISC_LABEL_OFFSET + ivd: row["Pfirrman grade"] for ivd, row in grading_rows[patient].items()}
        sequences = ("t1", "t2", "t2_SPACE") if patient == numbers[-1] else ("t1", "t2")
        for seq in sequences:
            if seq == "t2_SPACE":
                layout = _SPACE_LAYOUT
            else:
                layout = _LAYOUTS[t1t2_count % len(_LAYOUTS)]
                t1t2_count += 1
            layout = _in_plane(layout, in_plane_mm)
            stem = f"{patient}_{seq}"
            series[stem] = _write_series(sitk, root, stem, len(series), patient, phantom, seq, grades, layout,
                                         compress, rng)
            # One t2 acquired as STIR, like SPIDER's 116_t2.
            stir = seq == "t2" and index == min(1, len(numbers) - 1)
            overview_rows.append(_overview_row(stem, index, len(numbers), seq, layout, phantom.num_vertebrae,
                                               quirks, "['SE', 'IR']" if stir else "SE"))

    csv_rows, gradings, skipped = _grading_csv(numbers, grading_rows, ungraded, quirks)
    _write_csv(root / "overview.csv", OVERVIEW_COLUMNS, overview_rows)
    _write_csv(root / "radiological_gradings.csv", GRADING_COLUMNS, csv_rows)
    return {"series": series, "gradings": gradings, "skipped": skipped}


def _in_plane(layout, in_plane_mm):
    """``layout`` with every in-plane spacing ``in_plane_mm`` (None: as it is)."""
    if in_plane_mm is None:
        return layout
    spacing = [float(in_plane_mm)] * 3
    spacing[layout.slice_axis] = layout.spacing[layout.slice_axis]
    return dataclasses.replace(layout, spacing=tuple(spacing))


def _write_series(sitk, root, stem, number, patient, phantom, seq, grades, layout, compress, rng):
    """Samples the phantom on a grid of ``layout``, writes the image (with noise) and the
    mask of series ``number`` (0, 1, ...: the mask dtype and compression alternate) and
    returns its truth."""
    grid = _series_grid(phantom, layout, rng)
    labels, intensity = phantom._sample(grid.world_points(), seq, grades)
    noisy = intensity + rng.normal(0.0, 12.0, intensity.shape)
    image = grid.image(np.clip(np.rint(noisy), 0, 65535).astype(np.uint16))
    mask = grid.image(labels.astype(np.uint8 if number % 2 == 0 else np.int16))
    compressed = compress == "all" or (compress == "mixed" and number % 2 == 0)
    image_path, mask_path = root / "images" / f"{stem}.mha", root / "masks" / f"{stem}.mha"
    sitk.WriteImage(image, str(image_path), useCompression=compressed)
    sitk.WriteImage(mask, str(mask_path), useCompression=compressed)
    return {
        "patient": patient, "seq": seq, "discs": list(phantom.discs), "phantom": phantom,
        "image": image_path, "mask": mask_path, "axis_order": layout.axis_order,
        "oblique": layout.oblique is not None, "compressed": compressed,
    }


def _grading_csv(numbers, grading_rows, ungraded, quirks):
    """radiological_gradings.csv's rows, the gradings that join a mask disc, and the
    rows and discs skipped (the quirks: an IVD label 0 row, an ungraded top disc)."""
    csv_rows, gradings, skipped = [], {}, []
    zero_row_patient = numbers[min(1, len(numbers) - 1)] if quirks else None
    for patient in numbers:
        if patient == zero_row_patient:
            zero = {name: 0 for name in GRADING_COLUMNS[2:]}
            zero["Pfirrman grade"] = 1
            csv_rows.append([patient, 0, *zero.values()])
            skipped.append({"patient": patient, "ivd_label": 0,
                            "reason": "IVD label 0: a grading row with no mask disc (label 200)"})
        for ivd, findings in grading_rows[patient].items():
            if (patient, ivd) in ungraded:
                skipped.append({"patient": patient, "ivd_label": ivd,
                            "reason": f"top disc: in the masks (label {DISC_LABEL_OFFSET + ivd}) but not graded"})
                continue
            csv_rows.append([patient, ivd, *(findings[name] for name in GRADING_COLUMNS[2:])])
            gradings[(patient, ivd)] = {name: findings[name] for name in GRADING_COLUMNS[2:]}
    return csv_rows, gradings, skipped
