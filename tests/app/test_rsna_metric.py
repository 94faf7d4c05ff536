"""The RSNA 2024 competition metric (spinerank.rsna_metric) and its place in `spinerank evaluate`.

Checked against a plain implementation with loops and math.log written here from
the metric's description, against scikit-learn's log_loss per term, on hand-computed
cases, and end to end on a tiny trained run with the RSNA task table."""
import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from conftest import tiny_config, write_cohort
from spinerank import rsna_metric
from spinerank.rsna_metric import (CONDITION_GROUPS, LEFT_FORAMINAL, RIGHT_FORAMINAL, SAMPLE_WEIGHTS, SPINAL,
                                   TASK_NAMES, applies, competition_score)

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
LN2, LN3 = math.log(2), math.log(3)


# ---------------------------------------------------------------------------
# Data and an independent reference


def random_rows(seed, studies=40, repeats=False, missing=0.15, dtype=np.float64):
    """Rows of random studies (3-5 levels each), labels with ~15% missing and every
    class present, random probabilities (some far from normalised); with ``repeats``
    some discs appear twice, with the same label or one of the copies unlabelled."""
    rng = np.random.default_rng(seed)
    subjects, levels = [], []
    for s in range(studies):
        for level in LEVELS[: rng.integers(3, 6)]:
            copies = 1 + int(repeats and rng.random() < 0.4)
            subjects += [f"{1000 + s}"] * copies
            levels += [level] * copies
    n = len(subjects)
    labels, probs = {}, {}
    for name in TASK_NAMES:
        y = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
        y[:3] = [0, 1, 2]
        # Copies of a disc share its label (or lack it: masked on that copy's sequence).
        for i in range(1, n):
            if (subjects[i], levels[i]) == (subjects[i - 1], levels[i - 1]):
                y[i] = y[i - 1]
        y[rng.random(n) < missing] = -1
        labels[name] = y
        probs[name] = (rng.dirichlet([1, 1, 1], size=n) * rng.uniform(0.5, 2, (n, 1))).astype(dtype)
    return subjects, levels, labels, probs


def plain_score(subjects, levels, labels, probs, eps=np.finfo(np.float64).eps, severe_weight=4):
    """The metric with dicts, loops and math.log: merge repeated discs, clip and
    renormalise, three weighted log losses, the any-severe loss, their mean."""
    weight = {0: 1, 1: 2, 2: severe_weight}
    merged = {}  # (task, subject, level) -> (label, summed probabilities, rows)
    for name in TASK_NAMES:
        for i in range(len(subjects)):
            key = (name, subjects[i], levels[i])
            label, total, count = merged.get(key, (-1, [0.0, 0.0, 0.0], 0))
            row_label = int(labels[name][i])
            if row_label < 0 and label >= 0:
                continue  # an unlabelled copy of a labelled disc does not count
            if row_label >= 0 and label < 0:
                total, count = [0.0, 0.0, 0.0], 0  # the first labelled copy replaces unlabelled ones
            merged[key] = (max(label, row_label), [total[k] + float(probs[name][i][k]) for k in range(3)], count + 1)
    normal = {}
    for key, (label, total, count) in merged.items():
        clipped = [min(max(v / count, eps), 1 - eps) for v in total]
        normal[key] = (label, [v / sum(clipped) for v in clipped])
    out = {}
    for group, names in CONDITION_GROUPS.items():
        num = den = 0.0
        for (name, _, _), (label, p) in normal.items():
            if name in names and label >= 0:
                num += weight[label] * -math.log(p[label])
                den += weight[label]
        out[group] = num / den if den else float("nan")
    worst, top = {}, {}
    for (name, subject, _), (label, p) in normal.items():
        if name == SPINAL and label >= 0:
            worst[subject] = max(worst.get(subject, 0), label)
            top[subject] = max(top.get(subject, 0.0), p[2])
    num = den = 0.0
    for subject in worst:
        y = 1 if worst[subject] == 2 else 0
        p = min(max(top[subject], eps), 1 - eps)
        num += weight[worst[subject]] * -(y * math.log(p) + (1 - y) * math.log(1 - p))
        den += weight[worst[subject]]
    out["any_severe_spinal"] = num / den if den else float("nan")
    terms = [v for v in out.values() if not math.isnan(v)]
    out["score"] = sum(terms) / len(terms) if terms else float("nan")
    return out


TERMS = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")


def uniform(n):
    return np.full((n, 3), 1 / 3)


def case(spinal_labels, spinal_probs, subjects=None, levels=None, other_label=-1):
    """Rows with the given spinal labels and probabilities; the other conditions
    carry ``other_label`` and uniform probabilities."""
    n = len(spinal_labels)
    subjects = subjects or ["1"] * n
    levels = levels or list(LEVELS[:n])
    labels = {name: np.full(n, other_label) for name in TASK_NAMES}
    probs = {name: uniform(n) for name in TASK_NAMES}
    labels[SPINAL] = np.array(spinal_labels)
    probs[SPINAL] = np.array(spinal_probs, dtype=float)
    return subjects, levels, labels, probs


# ---------------------------------------------------------------------------
# Against the references


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("repeats", [False, True])
def test_matches_a_plain_loop_implementation(seed, repeats):
    data = random_rows(seed, repeats=repeats)
    for y in data[2].values():
        assert set(y.tolist()) == {-1, 0, 1, 2}  # every class present, and missing labels
    got = competition_score(*data)
    want = plain_score(*data)
    for term in TERMS:
        assert got[term] == pytest.approx(want[term], rel=1e-12, abs=1e-14), term
    assert got["left_out"] == []
    if repeats:
        assert got["merged_rows"] == len(data[0]) - len(set(zip(data[0], data[1]))) > 0


@pytest.mark.parametrize("seed", [3, 4])
def test_each_term_matches_sklearn_log_loss_with_sample_weights(seed):
    subjects, levels, labels, probs = random_rows(seed, studies=60)
    probs = {n: p / p.sum(1, keepdims=True) for n, p in probs.items()}  # sklearn wants rows summing to 1
    got = competition_score(subjects, levels, labels, probs)
    weights = np.array(SAMPLE_WEIGHTS, dtype=float)
    for group, names in CONDITION_GROUPS.items():
        y = np.concatenate([labels[n] for n in names])
        p = np.concatenate([probs[n] for n in names])
        keep = y >= 0
        want = log_loss(y[keep], p[keep], sample_weight=weights[y[keep]], labels=[0, 1, 2])
        assert got[group] == pytest.approx(want, rel=1e-10), group
        assert got["rows"][group] == keep.sum()
    # any_severe_spinal: one binary row per study with a labelled spinal disc
    studies = sorted({s for s, y in zip(subjects, labels[SPINAL]) if y >= 0})
    y_any, p_any, w_any = [], [], []
    for study in studies:
        mine = np.array([s == study for s in subjects]) & (labels[SPINAL] >= 0)
        worst = labels[SPINAL][mine].max()
        y_any.append(int(worst == 2))
        p_any.append(probs[SPINAL][mine, 2].max())
        w_any.append(weights[worst])
    want = log_loss(y_any, p_any, sample_weight=w_any, labels=[0, 1])
    assert got["any_severe_spinal"] == pytest.approx(want, rel=1e-10)
    assert got["studies"] == len(studies)
    assert got["score"] == pytest.approx(np.mean([got[t] for t in TERMS[1:]]), rel=1e-14)


def test_float32_probabilities_give_the_float64_result():
    data = random_rows(5)
    as32 = {n: p.astype(np.float32) for n, p in data[3].items()}
    got = competition_score(*data[:3], as32)
    want = plain_score(*data[:3], {n: p.astype(np.float64) for n, p in as32.items()})
    assert got["score"] == pytest.approx(want["score"], rel=1e-12)


# ---------------------------------------------------------------------------
# Hand-computed cases


def test_a_perfect_prediction_scores_about_zero():
    subjects, levels, labels, _ = random_rows(6)
    one_hot = {n: np.eye(3)[np.maximum(y, 0)] for n, y in labels.items()}
    got = competition_score(subjects, levels, labels, one_hot)
    for term in TERMS:
        assert 0 <= got[term] < 1e-12, term


def test_uniform_probabilities_give_ln3_per_group():
    subjects, levels, labels, probs = random_rows(7)
    got = competition_score(subjects, levels, labels, {n: uniform(len(subjects)) for n in probs})
    for group in CONDITION_GROUPS:
        assert got[group] == pytest.approx(LN3, rel=1e-12)
    # any severe: -ln(1/3) for a study with a severe disc, -ln(2/3) otherwise, weighted by the worst grade
    studies = {}
    for s, y in zip(subjects, labels[SPINAL]):
        if y >= 0:
            studies[s] = max(studies.get(s, 0), int(y))
    w = np.array([SAMPLE_WEIGHTS[g] for g in studies.values()], dtype=float)
    loss = np.array([LN3 if g == 2 else math.log(1.5) for g in studies.values()])
    assert got["any_severe_spinal"] == pytest.approx(float(w @ loss / w.sum()), rel=1e-12)


def test_one_severe_level_at_half_gives_ln2_with_weight_4():
    # Study 1: L3/L4 severe; the largest P(severe) of its levels, 0.5 (at L4/L5) -> ln 2, weight 4.
    # Study 2: worst grade moderate, largest P(severe) 0.2 -> -ln 0.8, weight 2.
    # Study 3: all normal, largest P(severe) 0.1 -> -ln 0.9, weight 1.
    labels = [0, 2, 1, 1, 0, 0, 0]
    probs = [[0.6, 0.2, 0.2], [0.4, 0.3, 0.3], [0.1, 0.4, 0.5],
             [0.5, 0.3, 0.2], [0.8, 0.1, 0.1],
             [0.9, 0.05, 0.05], [0.8, 0.1, 0.1]]
    subjects = ["1", "1", "1", "2", "2", "3", "3"]
    levels = ["L1/L2", "L3/L4", "L4/L5", "L4/L5", "L5/S1", "L4/L5", "L5/S1"]
    got = competition_score(*case(labels, probs, subjects, levels))
    want = (4 * LN2 + 2 * -math.log(0.8) + 1 * -math.log(0.9)) / 7
    assert got["any_severe_spinal"] == pytest.approx(want, rel=1e-12)
    assert got["studies"] == 3
    alone = competition_score(*case([0, 2], [[0.6, 0.2, 0.2], [0.3, 0.2, 0.5]]))
    assert alone["any_severe_spinal"] == pytest.approx(LN2, rel=1e-12)


def test_severe_weighs_4_not_3():
    # Spinal: one normal disc with P(normal) 0.5 and one severe disc with P(severe) 0.25.
    got = competition_score(*case([0, 2], [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]], subjects=["1", "2"]))
    with4 = (1 * LN2 + 4 * math.log(4)) / 5
    with3 = (1 * LN2 + 3 * math.log(4)) / 4
    assert got["spinal"] == pytest.approx(with4, rel=1e-12)
    assert abs(got["spinal"] - with3) > 0.02
    # any severe: study 1 normal (w 1, -ln 0.75), study 2 severe (w 4, ln 4)
    assert got["any_severe_spinal"] == pytest.approx((-math.log(0.75) + 4 * math.log(4)) / 5, rel=1e-12)
    data = random_rows(8)
    assert competition_score(*data)["score"] == pytest.approx(plain_score(*data)["score"], rel=1e-12)
    assert abs(competition_score(*data)["score"] - plain_score(*data, severe_weight=3)["score"]) > 1e-3


def test_probabilities_are_clipped_and_renormalised():
    got = competition_score(*case([0, 2], [[0.4, 0.2, 0.2], [0, 0, 0]]))  # -> [.5, .25, .25] and uniform
    assert got["spinal"] == pytest.approx((LN2 + 4 * LN3) / 5, rel=1e-12)
    # Clipping comes first: a value above 1 counts as 1 - eps, so [2, 1, 1] becomes uniform.
    assert competition_score(*case([0], [[2, 1, 1]]))["spinal"] == pytest.approx(LN3, rel=1e-12)
    zero = competition_score(*case([2], [[1, 0, 0]]))  # P(severe) = 0 is clipped to eps, not -ln 0
    eps = np.finfo(np.float64).eps
    assert zero["eps"] == eps
    assert zero["spinal"] == pytest.approx(-math.log(eps / (1 + eps)), rel=1e-9)
    assert math.isfinite(zero["score"])


def test_missing_labels_are_not_scored_and_empty_terms_are_left_out():
    subjects, levels, labels, probs = case([0, -1, 2], [[0.5, 0.25, 0.25], [0.01, 0.01, 0.98], [0.25, 0.25, 0.5]])
    got = competition_score(subjects, levels, labels, probs)
    assert got["rows"] == {"spinal": 2, "foraminal": 0, "subarticular": 0}
    assert got["spinal"] == pytest.approx((LN2 + 4 * LN2) / 5, rel=1e-12)
    # the unlabelled disc's P(severe) 0.98 does not enter the any-severe maximum
    assert got["any_severe_spinal"] == pytest.approx(LN2, rel=1e-12)
    assert math.isnan(got["foraminal"]) and math.isnan(got["subarticular"])
    assert got["left_out"] == ["foraminal", "subarticular"]
    assert got["score"] == pytest.approx(LN2, rel=1e-12)
    labels[SPINAL][:] = -1
    nothing = competition_score(subjects, levels, labels, probs)
    assert math.isnan(nothing["score"]) and nothing["studies"] == 0
    assert nothing["left_out"] == ["spinal", "foraminal", "subarticular", "any_severe_spinal"]


def test_foraminal_pools_left_and_right():
    subjects, levels, labels, probs = case([-1], [[1, 0, 0]])
    labels[LEFT_FORAMINAL], probs[LEFT_FORAMINAL] = np.array([1]), np.array([[0.25, 0.5, 0.25]])
    labels[RIGHT_FORAMINAL], probs[RIGHT_FORAMINAL] = np.array([2]), np.array([[0.25, 0.25, 0.5]])
    got = competition_score(subjects, levels, labels, probs)
    assert got["foraminal"] == pytest.approx((2 * LN2 + 4 * LN2) / 6, rel=1e-12)
    assert got["rows"]["foraminal"] == 2


def test_repeated_discs_are_averaged_first():
    # Two rows of one disc (T1 and T2 volumes): the mean [.3, .3, .4] is scored once.
    got = competition_score(*case([2, 2], [[0.2, 0.3, 0.5], [0.4, 0.3, 0.3]], levels=["L4/L5", "L4/L5"]))
    assert got["spinal"] == pytest.approx(-math.log(0.4), rel=1e-12)
    assert got["rows"]["spinal"] == 1 and got["merged_rows"] == 1
    assert got["any_severe_spinal"] == pytest.approx(-math.log(0.4), rel=1e-12)
    # A copy without the label (masked on its sequence) is not averaged in.
    masked = competition_score(*case([-1, 2], [[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]], levels=["L4/L5", "L4/L5"]))
    assert masked["spinal"] == pytest.approx(-math.log(0.3), rel=1e-12)
    with pytest.raises(ValueError, match="study 1 level L4/L5 disagree"):
        competition_score(*case([1, 2], uniform(2), levels=["L4/L5", "L4/L5"]))


def test_row_order_does_not_matter():
    data = random_rows(9, repeats=True)
    order = np.random.default_rng(0).permutation(len(data[0]))
    shuffled = ([data[0][i] for i in order], [data[1][i] for i in order],
                {n: y[order] for n, y in data[2].items()}, {n: p[order] for n, p in data[3].items()})
    a, b = competition_score(*data), competition_score(*shuffled)
    for term in TERMS:
        assert a[term] == pytest.approx(b[term], rel=1e-12)


def test_applies_to_tables_holding_the_five_conditions():
    from spinerank.tasks import TaskTable

    assert applies(list(TASK_NAMES))
    assert applies(["Extra", *reversed(TASK_NAMES)], [4, 3, 3, 3, 3, 3])
    assert not applies(list(TASK_NAMES[:4]))
    assert not applies(TaskTable().names, TaskTable().num_grades)
    assert not applies(list(TASK_NAMES), [3, 3, 4, 3, 3])  # K must be 3
    assert SAMPLE_WEIGHTS == (1, 2, 4)
    assert CONDITION_GROUPS == {"spinal": ["SpinalCanalStenosis"],
                                "foraminal": ["LeftNeuralForaminalNarrowing", "RightNeuralForaminalNarrowing"],
                                "subarticular": ["LeftSubarticularStenosis", "RightSubarticularStenosis"]}


# ---------------------------------------------------------------------------
# Bad input


def bad(change):
    subjects, levels, labels, probs = random_rows(10, studies=3)
    subjects, levels = list(subjects), list(levels)
    change(subjects, levels, labels, probs)
    return subjects, levels, labels, probs


@pytest.mark.parametrize("change, message", [
    (lambda s, l, y, p: l.pop(), "subject_ids and levels differ in length"),
    (lambda s, l, y, p: y.pop(SPINAL), r"labels: missing the task\(s\) SpinalCanalStenosis"),
    (lambda s, l, y, p: p.pop(RIGHT_FORAMINAL), r"probs: missing the task\(s\) RightNeuralForaminalNarrowing"),
    (lambda s, l, y, p: p.update({SPINAL: np.ones((len(s), 4)) / 4}), r"expected shape \(\d+, 3\).*K = 3"),
    (lambda s, l, y, p: p.update({SPINAL: p[SPINAL][:-1]}), r"probs\['SpinalCanalStenosis'\]: expected shape"),
    (lambda s, l, y, p: y.update({SPINAL: y[SPINAL][:-1]}), r"labels\['SpinalCanalStenosis'\]: expected shape"),
    (lambda s, l, y, p: p[SPINAL].__setitem__((0, 1), np.nan), "must be finite"),
    (lambda s, l, y, p: p[SPINAL].__setitem__((0, 1), np.inf), "must be finite"),
    (lambda s, l, y, p: p[SPINAL].__setitem__((0, 1), -0.1), "must be non-negative"),
    (lambda s, l, y, p: y[SPINAL].__setitem__(0, 3), r"grades must be 0, 1, 2 or -1 \(missing\); found \[3\]"),
    (lambda s, l, y, p: y.update({SPINAL: y[SPINAL] + 0.5}), "expected integer grades"),
])
def test_bad_input_raises_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        competition_score(*bad(change))


def test_integral_float_labels_and_lists_are_accepted():
    subjects, levels, labels, probs = random_rows(11, studies=5)
    want = competition_score(subjects, levels, labels, probs)
    got = competition_score(tuple(subjects), levels, {n: y.astype(float) for n, y in labels.items()},
                            {n: p.tolist() for n, p in probs.items()})
    assert got["score"] == want["score"]
    with pytest.raises(ValueError, match="expected a dict"):
        competition_score(subjects, levels, list(labels.values()), probs)


# ---------------------------------------------------------------------------
# In `spinerank evaluate`


def rsna_table():
    """The RSNA importer's task table: five conditions, K = 3, left/right swapped by a flip;
    spinal and subarticular masked on T1 here, so repeated T1/T2 rows are exercised."""
    from spinerank.tasks import Task, TaskTable

    return TaskTable((Task(SPINAL, 3, masked_for=("T1",)),
                      Task(LEFT_FORAMINAL, 3, swap_with=RIGHT_FORAMINAL),
                      Task(RIGHT_FORAMINAL, 3, swap_with=LEFT_FORAMINAL),
                      Task(rsna_metric.LEFT_SUBARTICULAR, 3, masked_for=("T1",),
                           swap_with=rsna_metric.RIGHT_SUBARTICULAR),
                      Task(rsna_metric.RIGHT_SUBARTICULAR, 3, masked_for=("T1",),
                           swap_with=rsna_metric.LEFT_SUBARTICULAR)))


@pytest.fixture(scope="module")
def rsna_run(tmp_path_factory):
    from spinerank.train import Trainer

    table = rsna_table()
    cohort = write_cohort(tmp_path_factory.mktemp("rsna"), subjects=20, seed=1, tasks=table)
    (cohort / "tasks.json").write_text(json.dumps({"tasks": table.to_config()}))
    out = tmp_path_factory.mktemp("rsna_run")
    Trainer(tiny_config(cohort, out, method="ce", epochs_phase1=1)).run()
    return out


def recomputed(run, sequences):
    from spinerank.calibrate import split_dataset
    from spinerank.inference import Predictor

    predictor = Predictor(run / "best.pt")
    test = split_dataset(predictor, "test", sequences)
    predictions, grades = predictor.predict_dataset(test, tta=False, progress=False)
    rows = [item[0] for item in test.items]
    names = predictor.tasks.names
    return competition_score([r.subject_id for r in rows], [r.level for r in rows],
                             {n: grades[:, names.index(n)] for n in TASK_NAMES},
                             {n: predictions.probs[names.index(n)] for n in TASK_NAMES})


def assert_same(saved, want):
    for term in TERMS:
        if want[term] is None or math.isnan(want[term]):
            assert saved[term] is None, term
        else:
            assert saved[term] == pytest.approx(want[term], rel=1e-9), term
    for key in ("rows", "studies", "left_out", "merged_rows"):
        assert saved[key] == want[key], key


def test_evaluate_adds_the_competition_score(rsna_run, capsys):
    from spinerank.evaluate import evaluate

    result = evaluate(rsna_run, tta=False, progress=False)
    assert capsys.readouterr().out == ""
    saved = json.loads((rsna_run / "eval-no-tta" / "metrics.json").read_text())["rsna_2024"]
    assert math.isfinite(saved["score"]) and saved["score"] > 0
    want = recomputed(rsna_run, ("T2",))
    assert_same(saved, want)
    assert result["rsna_2024"]["score"] == pytest.approx(want["score"], rel=1e-9)
    assert saved["merged_rows"] == 0 and saved["studies"] >= 1
    report = (rsna_run / "eval-no-tta" / "report.md").read_text()
    assert "## RSNA 2024 competition metric" in report
    assert f"| {saved['score']:.4f} |" in report


def test_evaluate_on_t1_and_t2_merges_each_disc(rsna_run, tmp_path):
    from spinerank.evaluate import evaluate

    result = evaluate(rsna_run, tta=False, progress=False, out=tmp_path / "both", sequences=("T1", "T2"),
                      report=False)
    saved = json.loads((tmp_path / "both" / "metrics.json").read_text())["rsna_2024"]
    want = recomputed(rsna_run, ("T1", "T2"))
    assert_same(saved, want)
    assert saved["merged_rows"] == result["volumes"] // 2 > 0  # every test disc has a T1 and a T2 volume
    t2 = recomputed(rsna_run, ("T2",))
    # Spinal and subarticular are masked on T1: scored from the T2 rows alone, as with T2 only.
    for term in ("spinal", "subarticular"):
        assert saved[term] == pytest.approx(t2[term], rel=1e-9)
        assert saved["rows"][term] == t2["rows"][term]


def test_evaluate_without_the_rsna_table_has_no_key(tmp_path):
    from spinerank.evaluate import evaluate
    from spinerank.train import Trainer

    cohort = write_cohort(tmp_path / "cohort", subjects=20, seed=2)
    Trainer(tiny_config(cohort, tmp_path / "run", method="ce", epochs_phase1=1)).run()
    result = evaluate(tmp_path / "run", tta=False, progress=False)
    assert "rsna_2024" not in result
    assert "rsna_2024" not in json.loads((tmp_path / "run" / "eval-no-tta" / "metrics.json").read_text())
    assert "RSNA" not in (tmp_path / "run" / "eval-no-tta" / "report.md").read_text()
