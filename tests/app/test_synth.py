"""The synthetic cohort (spinerank.synth, SPEC §10): format, determinism, grades, visibility."""
import csv
import json
import math

import numpy as np
import pytest

from spinerank import synth
from spinerank.tasks import DEFAULT_TASKS, Task, TaskTable

NAMES = [t.name for t in DEFAULT_TASKS]
KS = {t.name: t.num_grades for t in DEFAULT_TASKS}
HEADER = ["ivd_id", "subject_id", "level", "sequence", "centre"] + NAMES
SMALL = (16, 24, 4)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(root, row):
    return np.load(root / "volumes" / f"{row['ivd_id']}_{row['sequence']}.npy")


def rank(a):
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return (sums / counts)[inverse]


def spearman(x, y):
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def partial_spearman(x, y, z):
    """Rank correlation of x and y with the rank-linear effect of z removed."""
    r = [rank(a) for a in (x, y, z)]
    res = [a - np.polyval(np.polyfit(r[2], a, 1), r[2]) for a in r[:2]]
    return float(np.corrcoef(*res)[0, 1])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "cohort"
    summary = synth.synthesize(root, subjects=12, seed=3, shape=SMALL, workers=1, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """150 subjects at the default shape (a few seconds on 2 cores)."""
    root = tmp_path_factory.mktemp("large") / "cohort"
    summary = synth.synthesize(root, subjects=150, seed=0, workers=2, progress=False)
    return root, summary


# ----------------------------------------------------------------------------- format


def test_layout_columns_and_rows(small):
    root, summary = small
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", "cohort.json", "labels.csv",
                                                       "latent.csv", "volumes"]
    with open(root / "labels.csv", newline="") as f:
        assert next(csv.reader(f)) == HEADER
    with open(root / "latent.csv", newline="") as f:
        assert next(csv.reader(f)) == ["ivd_id"] + NAMES
    rows = read_csv(root / "labels.csv")
    latent = read_csv(root / "latent.csv")
    files = sorted(p.name for p in (root / "volumes").iterdir())
    assert files == sorted(f"{r['ivd_id']}_{r['sequence']}.npy" for r in rows)  # no strays, no temp files
    assert summary["volumes"] == len(rows) == 2 * len(latent) == 2 * summary["ivds"]
    assert summary["subjects"] == 12 == len({r["subject_id"] for r in rows})

    # Each IVD: a T1 row then a T2 row with identical ids, level, centre and grades.
    assert [r["sequence"] for r in rows] == ["T1", "T2"] * len(latent)
    for t1, t2, lat in zip(rows[::2], rows[1::2], latent):
        assert t1["ivd_id"] == t2["ivd_id"] == lat["ivd_id"]
        assert {k: v for k, v in t1.items() if k != "sequence"} == {k: v for k, v in t2.items() if k != "sequence"}
        assert t1["level"] in synth.LEVELS
        assert t1["ivd_id"] == f"{t1['subject_id']}_{t1['level'].replace('/', '-')}"
        assert t1["centre"] in {"C1", "C2", "C3"}

    # A subject: one centre, a contiguous run of 1-6 levels in order.
    by_subject = {}
    for r in rows[::2]:
        by_subject.setdefault(r["subject_id"], []).append(r)
    for sid, rs in by_subject.items():
        assert sid.startswith("S") and len(sid) == 5
        assert len({r["centre"] for r in rs}) == 1
        idx = [synth.LEVELS.index(r["level"]) for r in rs]
        assert 1 <= len(idx) <= 6 and idx == list(range(idx[0], idx[0] + len(idx)))


def test_volumes_are_normalised_float32(small):
    root, _ = small
    for row in read_csv(root / "labels.csv"):
        v = load(root, row)
        assert v.dtype == np.float32 and v.shape == SMALL and v.flags.c_contiguous
        assert np.isfinite(v).all()
        assert abs(float(v.mean(dtype=np.float64))) < 1e-4
        assert abs(float(v.std(dtype=np.float64)) - 1.0) < 1e-3


def test_cohort_json_and_readme(small):
    root, summary = small
    meta = json.loads((root / "cohort.json").read_text())
    assert meta["generator"] == synth.GENERATOR and meta["version"] == synth.VERSION
    assert meta["complete"] is True
    assert (meta["subjects"], meta["seed"], meta["shape"], meta["centres"]) == (12, 3, list(SMALL), 3)
    assert [t["name"] for t in meta["tasks"]] == NAMES
    assert len(meta["centre_parameters"]) == 3
    assert meta["summary"]["grade_counts"] == summary["grade_counts"]
    assert {"array", "left_right", "normalisation", "latent"} <= set(meta["conventions"])
    text = (root / "README.txt").read_text()
    assert "seed=3" in text and "LEFT (d=0)" in text and "z-scored" in text


def test_summary_matches_files(small):
    root, summary = small
    rows = read_csv(root / "labels.csv")[::2]
    for name in NAMES:
        cells = [r[name] for r in rows]
        counts = [sum(c == str(g) for c in cells) for g in range(KS[name])]
        assert summary["grade_counts"][name] == counts
        assert summary["missing"][name] == cells.count("")
        assert summary["normal_prevalence"][name] == pytest.approx(counts[0] / sum(counts), abs=1e-4)
    assert sum(summary["centres"].values()) == 12
    assert sum(summary["levels"].values()) == summary["ivds"]


# ----------------------------------------------------------------------------- determinism


def _snapshot(root):
    out = {name: (root / name).read_bytes() for name in ("labels.csv", "latent.csv", "cohort.json", "README.txt")}
    for p in sorted((root / "volumes").iterdir()):
        out[p.name] = p.read_bytes()
    return out


def test_deterministic_and_independent_of_workers(tmp_path):
    kw = dict(subjects=16, seed=11, shape=SMALL, progress=False)
    snaps = []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        synth.synthesize(tmp_path / name, workers=workers, **kw)
        snaps.append(_snapshot(tmp_path / name))
    a, b, c = snaps
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        assert a[name] == b[name], name
        assert a[name] == c[name], name

    synth.synthesize(tmp_path / "d", workers=1, **{**kw, "seed": 12})
    d = _snapshot(tmp_path / "d")
    assert d["labels.csv"] != a["labels.csv"]
    assert d["latent.csv"] != a["latent.csv"]
    common = sorted(set(a) & set(d) - {"labels.csv", "latent.csv", "cohort.json", "README.txt"})
    assert common and all(a[n] != d[n] for n in common)


def test_prefix_of_a_larger_cohort(tmp_path):
    """Subject i depends on (seed, i) only: 5 subjects = the first 5 of 9."""
    kw = dict(seed=5, shape=SMALL, workers=1, progress=False)
    synth.synthesize(tmp_path / "five", subjects=5, **kw)
    synth.synthesize(tmp_path / "nine", subjects=9, **kw)
    five = read_csv(tmp_path / "five" / "labels.csv")
    nine = read_csv(tmp_path / "nine" / "labels.csv")
    assert nine[:len(five)] == five
    row = five[-1]
    assert np.array_equal(load(tmp_path / "five", row), load(tmp_path / "nine", row))


# ----------------------------------------------------------------------------- grades


def test_grades_latent_and_missing(large):
    root, summary = large
    rows = read_csv(root / "labels.csv")[::2]
    latent = {r["ivd_id"]: r for r in read_csv(root / "latent.csv")}
    n = len(rows)
    assert n > 500
    total_missing = 0
    for name in NAMES:
        K = KS[name]
        s = np.array([float(latent[r["ivd_id"]][name]) for r in rows])
        assert s.min() >= 0.0 and s.max() <= K - 1
        cells = [r[name] for r in rows]
        total_missing += cells.count("")
        valid = [(int(c), si) for c, si in zip(cells, s) if c != ""]
        grades = np.array([g for g, _ in valid])
        sv = np.array([si for _, si in valid])
        assert set(grades) == set(range(K)), name  # every grade occurs
        # The rater reads s with noise near the boundaries: mostly the grade of s, never 2 off.
        true = np.clip(np.floor(sv + 0.5), 0, K - 1)
        assert np.abs(grades - true).max() <= 1, name
        assert 0.75 <= np.mean(grades == true) < 1.0, name
        means = [sv[grades == g].mean() for g in range(K)]
        assert all(a < b for a, b in zip(means, means[1:])), (name, means)
    rate = total_missing / (n * len(NAMES))
    assert 0.015 <= rate <= 0.05


def test_normal_prevalence_in_range(large):
    _, summary = large
    normal = summary["normal_prevalence"]
    assert set(normal) == set(NAMES)
    for name, p in normal.items():
        assert 0.60 <= p <= 0.96, (name, p)
        prev = summary["prevalence"][name]
        assert len(prev) == KS[name] and math.isclose(sum(prev), 1.0, abs_tol=1e-3)
        assert prev[-1] < prev[0]
    assert max(normal.values()) - min(normal.values()) > 0.15  # varies by task
    assert summary["levels"]["L4/L5"] > summary["levels"]["T12/L1"]
    assert all(v > 0 for v in summary["centres"].values())


def test_severity_correlated_within_disc_and_subject(large):
    root, _ = large
    latent = read_csv(root / "latent.csv")
    pf = np.array([float(r["Pfirrmann"]) for r in latent])
    dn = np.array([float(r["DiscNarrowing"]) for r in latent])
    assert spearman(pf, dn) > 0.3  # within a disc
    subj = [r["ivd_id"].split("_")[0] for r in latent]
    pairs = [(pf[i], pf[i + 1]) for i in range(len(latent) - 1) if subj[i] == subj[i + 1]]
    a, b = np.array(pairs).T
    assert spearman(a, b) > 0.1  # adjacent levels of one subject


# ----------------------------------------------------------------------------- visibility


@pytest.fixture(scope="module")
def image_stats(large):
    """Simple image statistics per IVD, from the stored (noisy, normalised) volumes."""
    root, _ = large
    rows = read_csv(root / "labels.csv")
    latent = {r["ivd_id"]: {k: float(v) for k, v in r.items() if k != "ivd_id"}
              for r in read_csv(root / "latent.csv")}
    stats = {}
    for r in rows:
        v = load(root, r)
        H, W, D = v.shape
        st = stats.setdefault(r["ivd_id"], {})
        middle = v[:, :, D // 2 - 1:D // 2 + 1].mean(2)
        body = slice(int(0.2 * W), int(0.5 * W))
        # The canal below the disc: CSF is bright on T2 and dark on T1.
        st["csf_" + r["sequence"]] = middle[int(0.8 * H):int(0.9 * H), int(0.57 * W):int(0.63 * W)].mean()
        if r["sequence"] == "T2":
            st["nucleus"] = middle[H // 2 - 1:H // 2 + 2, int(0.25 * W):int(0.45 * W)].mean()
            band = middle[H // 2 - 2:H // 2 + 3, int(0.45 * W):int(0.8 * W)].mean(0)
            st["canal"] = (band > (band.max() + band.min()) / 2).sum()  # bright CSF columns
        else:
            cols = v.mean(2)[:, body]
            prof = cols.mean(1)
            thr = (np.median(prof[:H // 4]) + prof[H // 2 - 2:H // 2 + 3].min()) / 2
            st["disc_rows"] = (prof[H // 4:3 * H // 4] < thr).sum()
            foramen = (slice(int(0.3 * H), int(0.6 * H)), slice(int(0.58 * W), int(0.70 * W)))
            st["left"] = v[foramen + (0,)].mean()
            st["right"] = v[foramen + (D - 1,)].mean()
            # Anterior wall of the upper vs the lower vertebra (steepest rise of intensity).
            upper = np.diff(v[int(0.1 * H):int(0.3 * H), :int(0.3 * W)].mean((0, 2)))
            lower = np.diff(v[int(0.7 * H):int(0.9 * H), :int(0.3 * W)].mean((0, 2)))
            st["slip"] = int(np.argmax(lower)) - int(np.argmax(upper))
            # Endplate notches: how far the disc's dark band reaches up/down in places.
            dark = cols < (np.median(cols[:H // 5]) + np.median(cols[H // 2 - 1:H // 2 + 2])) / 2
            top = np.argmax(dark, axis=0)
            bottom = H - 1 - np.argmax(dark[::-1], axis=0)
            st["notch_up"] = np.median(top) - top.min()
            st["notch_down"] = bottom.max() - np.median(bottom)
    ids = sorted(stats)
    S = {k: np.array([stats[i][k] for i in ids], dtype=float) for k in stats[ids[0]]}
    L = {t: np.array([latent[i][t] for i in ids]) for t in NAMES}
    return S, L


def test_t1_and_t2_contrasts_differ(image_stats):
    S, _ = image_stats
    assert np.mean(S["csf_T2"] > 1.0) > 0.95 and np.mean(S["csf_T1"] < -0.5) > 0.95


def test_visible_disc_signal_and_height(image_stats):
    S, L = image_stats
    assert spearman(S["nucleus"], L["Pfirrmann"]) < -0.5      # T2 nucleus darkens
    assert spearman(S["disc_rows"], L["DiscNarrowing"]) < -0.4  # disc gets thinner


def test_visible_canal_slip_and_endplates(image_stats):
    S, L = image_stats
    assert spearman(S["canal"], L["CentralCanalStenosis"]) < -0.4
    assert spearman(S["slip"], L["Spondylolisthesis"]) > 0.5
    assert spearman(S["notch_up"], L["UpperEndplateDefect"]) > 0.4
    assert spearman(S["notch_down"], L["LowerEndplateDefect"]) > 0.4


def test_foramina_left_and_right_slices(image_stats):
    """Left foramen in the low slices, right in the high ones, each blind to the other side."""
    S, L = image_stats
    left, right = L["ForaminalStenosisLeft"], L["ForaminalStenosisRight"]
    assert spearman(S["left"], left) < -0.45
    assert spearman(S["right"], right) < -0.45
    # The sides' severities are correlated (shared factors); given its own side, a
    # side's statistic carries nothing about the other side.
    assert abs(partial_spearman(S["left"], right, left)) < 0.15
    assert abs(partial_spearman(S["right"], left, right)) < 0.15
    assert partial_spearman(S["left"], left, right) < -0.3


# Noise-free phantoms: every task changes the image, where and in the direction expected.

H0, W0, D0 = synth.DEFAULT_SHAPE


def _clean(sev, seq="T2"):
    return synth.phantom(sev, seq, normalise=False)


def _disc_rows(v):
    prof = v[:, int(0.2 * W0):int(0.5 * W0), D0 // 2].mean(1)
    return (prof < (prof[2] + prof[H0 // 2]) / 2).sum()


STATS = {
    # task: (sequence, statistic of the noise-free volume, expected direction)
    "Pfirrmann": ("T2", lambda v: v[H0 // 2, int(0.3 * W0):int(0.4 * W0), :].mean(), -1),
    "DiscNarrowing": ("T1", _disc_rows, -1),
    "CentralCanalStenosis": ("T2", lambda v: v[H0 // 2, int(0.5 * W0):, D0 // 2].sum(), -1),
    "Spondylolisthesis": ("T1", lambda v: v[: H0 // 4, : int(0.2 * W0), D0 // 2].sum(), +1),
    "UpperEndplateDefect": ("T1", lambda v: v[: H0 // 2, int(0.2 * W0):int(0.5 * W0)].sum(), -1),
    "LowerEndplateDefect": ("T1", lambda v: v[H0 // 2:, int(0.2 * W0):int(0.5 * W0)].sum(), -1),
    "ForaminalStenosisLeft": ("T1", lambda v: v[:, int(0.55 * W0):, 0].sum(), -1),
    "ForaminalStenosisRight": ("T1", lambda v: v[:, int(0.55 * W0):, -1].sum(), -1),
    "Herniation": ("T2", lambda v: v[H0 // 2, int(0.5 * W0):, D0 // 2].sum(), -1),
    "AnteriorBulging": ("T1", lambda v: v[H0 // 2, : int(0.14 * W0)].sum(), -1),
    "PosteriorBulging": ("T2", lambda v: v[H0 // 2, int(0.5 * W0):, D0 // 2].sum(), -1),
}


@pytest.mark.parametrize("task", NAMES)
def test_each_task_visible_in_the_phantom(task):
    seq, stat, sign = STATS[task]
    values = [stat(_clean({task: x}, seq)) for x in (0.0, 0.5, 1.0)]
    assert sign * (values[1] - values[0]) > 0 and sign * (values[2] - values[1]) > 0, values
    for s in synth.SEQUENCES:
        assert np.abs(_clean({task: 1.0}, s) - _clean({}, s)).max() > 0.05, s


def test_where_the_tasks_act():
    base = _clean({})
    mid = D0 // 2
    left = _clean({"ForaminalStenosisLeft": 1.0}) - base
    right = _clean({"ForaminalStenosisRight": 1.0}) - base
    assert np.abs(left[:, :, : D0 // 2]).max() > 0.1 and not left[:, :, D0 // 2:].any()
    assert np.abs(right[:, :, D0 // 2:]).max() > 0.1 and not right[:, :, : D0 // 2].any()
    hern = _clean({"Herniation": 1.0}) - base
    assert np.abs(hern[:, :, mid]).max() > 0.1 and not hern[:, :, 0].any() and not hern[:, :, -1].any()
    up = np.abs(_clean({"UpperEndplateDefect": 1.0}) - base)
    down = np.abs(_clean({"LowerEndplateDefect": 1.0}) - base)
    assert up[: H0 // 2].max() > 0.1 and up[H0 // 2 + 2:].max() < 1e-6
    assert down[H0 // 2:].max() > 0.1 and down[: H0 // 2 - 2].max() < 1e-6


def test_left_right_flip_swaps_the_foramina():
    sev = {n: 0.1 * (i % 7) for i, n in enumerate(NAMES)}
    sev["ForaminalStenosisLeft"], sev["ForaminalStenosisRight"] = 0.9, 0.2
    swapped = {**sev, "ForaminalStenosisLeft": 0.2, "ForaminalStenosisRight": 0.9}
    for seq in synth.SEQUENCES:
        a = synth.phantom(sev, seq, (32, 48, 7))
        b = synth.phantom(swapped, seq, (32, 48, 7))
        np.testing.assert_allclose(a[:, :, ::-1], b, atol=1e-5)
        assert np.abs(a - b).max() > 0.1


def test_paper_shape(tmp_path):
    shape = (192, 320, 15)
    synth.synthesize(tmp_path / "c", subjects=1, seed=0, shape=shape, workers=1, progress=False)
    rows = read_csv(tmp_path / "c" / "labels.csv")
    v = load(tmp_path / "c", rows[-1])
    assert v.shape == shape and v.dtype == np.float32 and np.isfinite(v).all()


# ----------------------------------------------------------------------------- tasks


def test_custom_task_table(tmp_path):
    table = TaskTable((Task("Pfirrmann", 3, masked_for=("T1",)), Task("Herniation", 2)))
    summary = synth.synthesize(tmp_path / "c", subjects=10, seed=1, shape=SMALL, tasks=table,
                               workers=1, progress=False)
    rows = read_csv(tmp_path / "c" / "labels.csv")
    assert list(rows[0]) == ["ivd_id", "subject_id", "level", "sequence", "centre", "Pfirrmann", "Herniation"]
    assert {r["Pfirrmann"] for r in rows} <= {"", "0", "1", "2"}
    assert {r["Herniation"] for r in rows} <= {"", "0", "1"}
    assert len(summary["prevalence"]["Pfirrmann"]) == 3
    meta = json.loads((tmp_path / "c" / "cohort.json").read_text())
    assert meta["tasks"] == json.loads(json.dumps(table.to_config()))
    # The same table as config dicts gives the same cohort.
    synth.synthesize(tmp_path / "d", subjects=10, seed=1, shape=SMALL, tasks=table.to_config(),
                     workers=1, progress=False)
    assert (tmp_path / "d" / "labels.csv").read_bytes() == (tmp_path / "c" / "labels.csv").read_bytes()


def test_progress_bar(tmp_path, capsys, monkeypatch):
    from spinerank import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # stderr is not a terminal here: log lines
    synth.synthesize(tmp_path / "p", subjects=2, shape=SMALL, workers=1, progress=True)
    assert "synth: 2/2 subject (100%)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, message", [
    (dict(subjects=0), "subjects must be an int >= 1"),
    (dict(subjects=2.5), "subjects must be an int >= 1"),
    (dict(subjects=True), "subjects must be an int >= 1"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(seed="0"), "seed must be an int >= 0"),
    (dict(centres=0), "centres must be an int >= 1"),
    (dict(workers=0), "workers must be None or an int >= 1"),
    (dict(shape=(48, 80)), r"shape must be 3 positive ints \(H, W, D\)"),
    (dict(shape=(48, 0, 10)), r"shape must be 3 positive ints \(H, W, D\)"),
    (dict(shape=(48.0, 80, 10)), r"shape must be 3 positive ints \(H, W, D\)"),
    (dict(shape=7), r"shape must be 3 positive ints \(H, W, D\)"),
    (dict(shape=(48, 80, 2)), r"D \(sagittal slices\) must be >= 3"),
    (dict(shape=(8, 80, 10)), "H and W must be >= 16"),
    (dict(tasks=[Task("Scoliosis", 3)]), r"cannot draw task\(s\) \['Scoliosis'\]"),
    (dict(tasks=[1, 2]), "tasks must be a TaskTable"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synth.synthesize(tmp_path / "x", **{"subjects": 2, "shape": SMALL, "progress": False, **kwargs})
    assert not (tmp_path / "x").exists()  # nothing written


def test_phantom_bad_arguments():
    with pytest.raises(ValueError, match="sequence must be one of"):
        synth.phantom({}, "FLAIR")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['Scoliosis'\]"):
        synth.phantom({"Scoliosis": 1.0})


def test_out_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        synth.synthesize(tmp_path / "f", subjects=1, shape=SMALL, progress=False)


def test_overwrite(tmp_path):
    root = tmp_path / "c"
    synth.synthesize(root, subjects=3, seed=0, shape=SMALL, workers=1, progress=False)
    (root / "splits.csv").write_text("stale\n")
    with pytest.raises(FileExistsError, match="already holds a dataset.*overwrite=True"):
        synth.synthesize(root, subjects=1, shape=SMALL, progress=False)
    synth.synthesize(root, subjects=1, seed=0, shape=SMALL, workers=1, progress=False, overwrite=True)
    rows = read_csv(root / "labels.csv")
    assert len({r["subject_id"] for r in rows}) == 1
    assert len(list((root / "volumes").iterdir())) == len(rows)  # the old volumes are gone
    assert not (root / "splits.csv").exists()  # splits of the old cohort would be wrong


def test_overwrite_refuses_a_real_dataset(tmp_path):
    root = tmp_path / "real"
    (root / "volumes").mkdir(parents=True)
    (root / "labels.csv").write_text("ivd_id\n")
    (root / "volumes" / "a_T1.npy").write_bytes(b"data")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        synth.synthesize(root, subjects=1, shape=SMALL, progress=False, overwrite=True)
    assert (root / "labels.csv").read_text() == "ivd_id\n" and (root / "volumes" / "a_T1.npy").exists()


def test_interrupted_run_leaves_no_labels(tmp_path, monkeypatch):
    real = synth._make_subject
    calls = []

    def flaky(cfg, i, subjects):
        calls.append(i)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, i, subjects)

    monkeypatch.setattr(synth, "_make_subject", flaky)
    root = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize(root, subjects=5, shape=SMALL, workers=1, progress=False)
    assert not (root / "labels.csv").exists() and not (root / "latent.csv").exists()
    assert json.loads((root / "cohort.json").read_text())["complete"] is False
    monkeypatch.setattr(synth, "_make_subject", real)
    with pytest.raises(FileExistsError):
        synth.synthesize(root, subjects=5, shape=SMALL, workers=1, progress=False)
    synth.synthesize(root, subjects=5, shape=SMALL, workers=1, progress=False, overwrite=True)
    rows = read_csv(root / "labels.csv")
    assert all((root / "volumes" / f"{r['ivd_id']}_{r['sequence']}.npy").exists() for r in rows)
