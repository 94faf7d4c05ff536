"""Calibration, evaluation and prediction (issue 6) on a tiny trained run.

The metrics are checked against scikit-learn/scipy recomputed from the written
predictions.csv, TTA against a plain loop over the reference views, thresholds
against fitting them again on the validation scores. Comparison and the demo:
test_compare.py."""
import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, matthews_corrcoef, recall_score,
                             roc_auc_score)

from conftest import TTA, tiny_config, write_cohort, write_latent
from spinerank import cli, metrics
from spinerank import severity as severity_lib
from spinerank import thresholds as thresholds_lib
from spinerank.calibrate import calibrate, split_dataset
from spinerank.evaluate import evaluate
from spinerank.inference import Predictor
from spinerank.train import Trainer
from spinerank_ext import reference


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_latent(write_cohort(tmp_path_factory.mktemp("cohort"), subjects=30, seed=3))


@pytest.fixture(scope="module")
def run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(cohort, out, epochs_phase1=1, epochs_phase2=1, **TTA)).run()
    return out


def read_predictions(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def check_severity_columns(rows, name, saved_thresholds, K, scale=10.0):
    """``<name>_severity`` sits after ``<name>_score``, is the run's severity map
    of the score, and grades like the grade column (up to the CSV's rounding)."""
    columns = list(rows[0])
    assert columns[columns.index(f"{name}_score") + 1] == f"{name}_severity"
    score = np.array([float(r[f"{name}_score"]) for r in rows])
    severity = np.array([float(r[f"{name}_severity"]) for r in rows])
    grade = np.array([int(r[f"{name}_grade"]) for r in rows])
    severity_map = severity_lib.SeverityMap.from_thresholds(saved_thresholds, K, scale)
    slopes = np.diff(severity_map.y) / np.maximum(np.diff(severity_map.x), 1e-12)
    np.testing.assert_allclose(severity, severity_map(score), rtol=0, atol=2e-6 * (1 + slopes.max()))
    b = severity_lib.boundaries(K, scale)
    near = np.abs(severity[:, None] - b[None]).min(1) < 1e-5  # the CSV rounds to 6 decimals
    np.testing.assert_array_equal(metrics.grades_from_scores(severity, b)[~near], grade[~near])
    assert severity.min() >= 0 and severity.max() <= scale
    return score, severity


def test_tta_predictions_match_a_plain_loop_over_the_views(run):
    predictor = Predictor(run / "best.pt")
    volumes, _ = next(iter(torch.utils.data.DataLoader(split_dataset(predictor, "test"), batch_size=3)))
    got = predictor(volumes, tta=True)
    grid = (predictor.tta_grid["shifts_h"], predictor.tta_grid["shifts_w"], predictor.tta_grid["shifts_d"])
    views = reference.tta_views(volumes, predictor.config.input_shape, (False, True), *grid)
    with torch.no_grad():
        per_view = torch.stack([predictor.model(views[:, v])["scores"] for v in range(views.shape[1])], 1).double()
    half = views.shape[1] // 2
    flipped = per_view[:, half:].clone()
    flipped[..., [6, 7]] = flipped[..., [7, 6]]  # a flipped view's left foramen is the right one
    aligned = torch.cat([per_view[:, :half], flipped], 1)
    np.testing.assert_allclose(got.scores, aligned.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.std, aligned.std(1, correction=0).numpy(), rtol=1e-4, atol=1e-6)
    plain = predictor(volumes, tta=False)
    with torch.no_grad():
        centre = predictor.model(views[:, 13])["scores"].double().numpy()  # view 13: the centre crop
    np.testing.assert_allclose(plain.scores, centre, rtol=1e-5, atol=1e-6)
    assert (plain.std == 0).all()


def test_calibrate_fits_the_validation_scores(run):
    result = calibrate(run, tta=False, progress=False)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["thresholds"] == result["thresholds"] and saved["tta"] is False
    predictor = Predictor(run / "best.pt")
    predictions, grades = predictor.predict_dataset(split_dataset(predictor, "val"), tta=False, progress=False)
    for t, (name, K) in enumerate(zip(predictor.tasks.names, predictor.tasks.num_grades)):
        keep = grades[:, t] >= 0
        if keep.any():
            expected = thresholds_lib.fit_thresholds(predictions.scores[keep, t], grades[keep, t], K)
            np.testing.assert_allclose(saved["thresholds"][name], expected, rtol=0, atol=1e-12)


def check_task_against_scikit_learn(name, m, rows, saved, latent):
    """One task's metrics (``m``, of evaluate's result) against scikit-learn and scipy
    recomputed from the written predictions, and its severity and borderline columns."""
    K = len(saved["thresholds"][name]) + 1
    labelled = [r for r in rows if r[f"{name}_true"] != ""]
    y = np.array([int(r[f"{name}_true"]) for r in labelled])
    p = np.array([int(r[f"{name}_grade"]) for r in labelled])
    s = np.array([float(r[f"{name}_score"]) for r in labelled])
    assert m["n"] == len(y)
    np.testing.assert_array_equal(p, thresholds_lib.grades_from_scores(s, saved["thresholds"][name]))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    qwk = cohen_kappa_score(y, p, weights="quadratic", labels=list(range(K)))
    assert m["qwk"] == pytest.approx(qwk, nan_ok=True) or (np.isnan(qwk) and m["qwk"] is None)
    assert m["mae"] == pytest.approx(np.abs(y - p).mean())
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, p))
    if len(set(y)) > 1:  # a ranking model's class probabilities come from its score (SPEC §9)
        probs = metrics.score_probabilities(s, K)
        auc = np.mean([roc_auc_score(y == c, probs[:, c]) for c in sorted(set(y))])
        assert m["roc_auc"] == pytest.approx(auc, abs=1e-3)
    assert m["spearman"] == pytest.approx(spearmanr(s, y).statistic, abs=1e-3, nan_ok=True) \
        or m["spearman"] is None
    # The severity: the column is the map of the thresholds applied to the score.
    assert saved["score_scale"] == 10.0
    score_all, severity_all = check_severity_columns(rows, name, saved["thresholds"][name], K)
    assert spearmanr(severity_all, score_all).statistic == pytest.approx(1.0)  # one order
    flags = np.array([int(r[f"{name}_borderline"]) for r in rows], dtype=bool)
    std = np.array([float(r[f"{name}_std"]) for r in rows])
    score = np.array([float(r[f"{name}_score"]) for r in rows])
    gap = np.abs(score[:, None] - np.array(saved["thresholds"][name])[None]).min(1)
    assert ((gap <= std) == flags).mean() > 0.95  # the CSV rounds to 6 decimals
    hidden = np.array([float(latent[r["ivd_id"]][name]) for r in labelled])
    expected = spearmanr(s, hidden).statistic if len(s) >= 3 else np.nan  # nan below 3 discs
    assert m["latent_spearman"]["overall"] == pytest.approx(expected, abs=1e-3, nan_ok=True) \
        or (np.isnan(expected) and m["latent_spearman"]["overall"] is None)
    # Normal (grade 0) vs abnormal: AUC of the score, sensitivity/specificity of the grades.
    abnormal = y >= 1
    auc = roc_auc_score(abnormal, s) if 0 < abnormal.sum() < len(y) else np.nan
    assert m["normal_auc"] == pytest.approx(auc, abs=1e-4, nan_ok=True)
    sens = recall_score(abnormal, p >= 1) if abnormal.any() else np.nan
    spec = recall_score(~abnormal, p == 0) if (~abnormal).any() else np.nan
    assert m["sensitivity"] == pytest.approx(sens, nan_ok=True)
    assert m["specificity"] == pytest.approx(spec, nan_ok=True)
    assert len(m["boundary_auc"]) == K - 1
    for k, got in enumerate(m["boundary_auc"]):
        positive = y > k
        want = roc_auc_score(positive, s) if 0 < positive.sum() < len(y) else np.nan
        assert got == pytest.approx(want, abs=1e-4, nan_ok=True), (name, k)


def check_report_figures(figures, result, saved, run):
    """The report's figures: the fixed boundaries where the thresholds landed, the
    method and the run in every title, the colour bar, the strip's labels, the counts."""
    K = [len(saved["thresholds"][n]) + 1 for n in result["tasks"]]
    scores_plot = figures["scores_by_grade.png"]
    for t, name in enumerate(result["tasks"]):  # the fixed boundaries where the thresholds landed
        assert scores_plot["dashed"][t] == pytest.approx(list(severity_lib.boundaries(K[t], 10.0)))
    assert "grade boundaries (calibrated thresholds)" in scores_plot["legend"]
    for name in ("scores_by_grade.png", "severity_strip.png", "confusion.png", "training_curves.png"):
        assert figures[name]["title"].startswith(f"spinerank — run {run.parent.name}/{run.name}"), name
    assert figures["confusion.png"]["colorbars"] == ["fraction of the true grade's discs"]
    assert "evenly spaced quantiles of severity" in figures["severity_strip.png"]["title"]
    strip_labels = [t for t in figures["severity_strip.png"]["titles"] if t]
    assert strip_labels and all(re.fullmatch(r"\d+\.\d \(g\d\)", label) for label in strip_labels)
    assert "every image a T2 volume" in figures["severity_strip.png"]["title"]
    for t, (name, m) in enumerate(result["tasks"].items()):  # counts in the cells
        cells = figures["confusion.png"]["texts"][t]
        assert len(cells) == K[t] ** 2 and sum(int(c) for c in cells) == m["n"]


@pytest.mark.parametrize("tta", [False, True])
def test_evaluate_metrics_agree_with_scikit_learn_on_the_written_predictions(run, cohort, tta, figures):
    result = evaluate(run, tta=tta, progress=False)
    out = run / ("eval" if tta else "eval-no-tta")
    assert json.loads((out / "metrics.json").read_text())["method"] == "spinerank"
    for name in ("report.md", "scores_by_grade.png", "severity_strip.png", "confusion.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["tta"] is tta  # calibrated the way the test scores are computed
    rows = read_predictions(out / "predictions.csv")
    assert len(rows) == result["volumes"] > 0
    latent = {r["ivd_id"]: r for r in csv.DictReader(open(cohort / "latent.csv"))}
    for name, m in result["tasks"].items():
        check_task_against_scikit_learn(name, m, rows, saved, latent)
    assert set(result["aggregate"]) >= {"balanced_accuracy", "roc_auc", "qwk", "mae", "mcc", "latent_spearman",
                                        "normal_auc", "sensitivity", "specificity", "boundary_auc_mean"}
    # Per disc on its T2 volume (as published): one row per disc of the test split, each a T2 volume.
    assert {r["sequence"] for r in rows} == {"T2"} and len({r["ivd_id"] for r in rows}) == len(rows)
    labels = list(csv.DictReader(open(cohort / "labels.csv")))
    splits = {r["subject_id"]: r["split"] for r in csv.DictReader(open(cohort / "splits.csv"))}
    assert len(rows) == len({r["ivd_id"] for r in labels if splits[r["subject_id"]] == "test"})
    saved_metrics = json.loads((out / "metrics.json").read_text())
    assert saved_metrics["unit"] == "discs (T2 volume)" and saved_metrics["sequences"] == ["T2"]
    assert saved_metrics["skipped_discs"] == 0 and saved["sequences"] == ["T2"]
    report = (out / "report.md").read_text()
    assert f"{len(rows)} discs (T2 volume)" in report and "`n` counts discs (T2 volume)" in report
    assert "Normal (grade 0) vs abnormal" in report
    # Captions under the figures, and figures that name the method and the run.
    for caption in ("*Severity by true grade.*", "Dashed red lines: the grade boundaries", "*Severity strip.*",
                    "evenly spaced quantiles of severity", "*Confusion matrices.*", "*Training curves.*",
                    "calibrated thresholds land on the fixed boundaries (k − ½)·10/(K − 1)"):
        assert caption in report, caption
    check_report_figures(figures, result, saved, run)


def test_sequences_choose_the_volumes_and_the_thresholds_follow(run, cohort, tmp_path, capsys, figures):
    both = evaluate(run, tta=False, progress=False, sequences=("T2", "T1"), out=tmp_path / "both")
    # The severity strip says which sequence each image is, and the plots count volumes.
    strip_labels = [t for t in figures["severity_strip.png"]["titles"] if t]
    assert all(re.fullmatch(r"\d+\.\d \(g\d\) T[12]", label) for label in strip_labels)
    assert {label[-2:] for label in strip_labels} == {"T1", "T2"}
    assert figures["confusion.png"]["colorbars"] == ["fraction of the true grade's volumes"]
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["sequences"] == ["T1", "T2"] and both["unit"] == "volumes (T1, T2)"  # recalibrated on both
    rows = read_predictions(tmp_path / "both" / "predictions.csv")
    labels = list(csv.DictReader(open(cohort / "labels.csv")))
    splits = {r["subject_id"]: r["split"] for r in csv.DictReader(open(cohort / "splits.csv"))}
    assert len(rows) == both["volumes"] == sum(splits[r["subject_id"]] == "test" for r in labels)
    assert {r["sequence"] for r in rows} == {"T1", "T2"}
    assert "`n` counts volumes (T1, T2)" in (tmp_path / "both" / "report.md").read_text()
    predictor = Predictor(run / "best.pt")
    val = split_dataset(predictor, "val", ("T1", "T2"))
    predictions, grades = predictor.predict_dataset(val, tta=False, progress=False)
    for t, (name, K) in enumerate(zip(predictor.tasks.names, predictor.tasks.num_grades)):
        keep = grades[:, t] >= 0
        if keep.any():
            expected = thresholds_lib.fit_thresholds(predictions.scores[keep, t], grades[keep, t], K)
            np.testing.assert_allclose(saved["thresholds"][name], expected, rtol=0, atol=1e-12)
    # The default again: each disc's T2 volume, thresholds refitted on T2 validation volumes.
    again = evaluate(run, tta=False, progress=False, out=tmp_path / "t2")
    assert json.loads((run / "thresholds.json").read_text())["sequences"] == ["T2"]
    assert again["unit"] == "discs (T2 volume)" and again["volumes"] < both["volumes"]
    assert cli.main(["evaluate", "--run", str(run), "--no-tta", "--sequences", "T3", "--quiet"]) == 2
    assert "the test split has no T3 volume" in capsys.readouterr().err  # checked before calibrating
    assert cli.main(["calibrate", "--run", str(run), "--no-tta", "--sequences", "T1", "T2", "--quiet"]) == 0
    assert "validation volumes (T1, T2)" in capsys.readouterr().out
    calibrate(run, tta=False, progress=False)  # leave the default thresholds for the tests that follow


def test_normal_vs_abnormal_and_boundaries_by_hand():
    grades = np.array([0, 0, 0, 1, 2, 2])
    scores = np.array([0.5, 2.0, 4.0, 3.0, 6.0, 9.0])
    predicted = np.array([0, 1, 0, 0, 2, 2])
    m = metrics.normal_vs_abnormal(grades, predicted, scores)
    # Abnormal scores 3, 6, 9 against normal 0.5, 2, 4: 8 of 9 pairs ordered (3 < 4).
    assert m["normal_auc"] == pytest.approx(8 / 9)
    assert m["sensitivity"] == pytest.approx(2 / 3)  # grade 1 graded 0
    assert m["specificity"] == pytest.approx(2 / 3)  # one normal graded 1
    # grade > 1: scores 6, 9 above all four others.
    assert metrics.boundary_aucs(grades, scores, 3) == pytest.approx([8 / 9, 1.0])
    assert np.isnan(metrics.boundary_aucs(grades, scores, 4)[2])  # no grade 3: undefined
    only_normal = metrics.normal_vs_abnormal([0, 0], [0, 1], [1.0, 2.0])
    assert np.isnan(only_normal["normal_auc"]) and np.isnan(only_normal["sensitivity"])
    assert only_normal["specificity"] == 0.5


def test_task_metrics_against_scikit_learn_and_by_hand():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    scores = y * 10 / 3 + rng.normal(0, 2.5, y.size)
    p = thresholds_lib.grades_from_scores(scores, metrics.fixed_thresholds(4))
    probs = metrics.score_probabilities(scores, 4)
    np.testing.assert_allclose(probs.sum(1), 1)
    m = metrics.task_metrics(y, p, scores, probs, 4)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    pairs = [(scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j])
             for i in range(y.size) for j in range(y.size) if y[i] > y[j]]
    assert m["c_index"] == pytest.approx(np.mean(pairs))
    assert metrics.concordance_index([1.0, 1.0, 2.0], [0, 1, 1]) == pytest.approx(0.75)
    # p_k ∝ exp(-|s - c_k|), c_k = 0, 5, 10 for K = 3
    np.testing.assert_allclose(metrics.score_probabilities([5.0], 3), [[np.exp(-5), 1, np.exp(-5)] / (1 + 2 * np.exp(-5))])


def test_predict_skips_unreadable_files_and_matches_evaluate(run, cohort, tmp_path, capsys):
    calibrate(run, tta=False, progress=False)
    volumes = sorted((cohort / "volumes").glob("*.npy"))[:5]
    folder = tmp_path / "in"
    folder.mkdir()
    for v in volumes:
        shutil.copy(v, folder / v.name)
    (folder / "broken.npy").write_bytes(b"not a volume")
    import nibabel  # the same first volume as NIfTI: the same scores

    nibabel.save(nibabel.Nifti1Image(np.load(volumes[0]), np.eye(4)), folder / "zz_first.nii.gz")
    out = tmp_path / "preds.csv"
    code = cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--no-tta", "--quiet",
                     str(folder)])
    assert code == 3  # broken.npy was skipped (issue 13: a distinct exit status)
    assert "broken.npy" in capsys.readouterr().err
    rows = read_predictions(out)
    assert [r["file"].split("/")[-1] for r in rows] == [v.name for v in volumes] + ["zz_first.nii.gz"]
    predictor = Predictor(run / "best.pt")
    from spinerank.data import fit_to_shape, load_volume

    batch = torch.stack([fit_to_shape(torch.from_numpy(load_volume(v).transpose(2, 0, 1).copy()),
                                      predictor.config.volume_shape)[None] for v in volumes])
    expected = predictor(batch, tta=False).scores
    got = np.array([[float(r[f"{n}_score"]) for n in predictor.tasks.names] for r in rows])
    np.testing.assert_allclose(got[:-1], expected, atol=1e-5)
    np.testing.assert_allclose(got[-1], expected[0], atol=1e-5)
    # The severity beside the score: the run's calibrated map of it, as in predictions.csv.
    saved = json.loads((run / "thresholds.json").read_text())
    for name, K in zip(predictor.tasks.names, predictor.tasks.num_grades):
        check_severity_columns(rows, name, saved["thresholds"][name], K)
    # A thresholds.json written before the severity scale (no score_scale): the same map, from its thresholds.
    del saved["score_scale"]
    (run / "thresholds.json").write_text(json.dumps(saved))
    again = tmp_path / "again.csv"
    assert cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--out", str(again), "--no-tta", "--quiet",
                     str(folder)]) == 3
    assert again.read_text() == out.read_text()
    calibrate(run, tta=False, progress=False)


def test_predict_with_no_readable_file_fails(run, tmp_path, capsys):
    (tmp_path / "a.npy").write_bytes(b"junk")
    code = cli.main(["predict", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "p.csv"), "--quiet",
                     str(tmp_path / "a.npy")])
    assert code == 2 and "no volume could be read" in capsys.readouterr().err


def test_calibrating_a_classifier_is_refused(cohort, tmp_path, figures):
    out = tmp_path / "ce"
    Trainer(tiny_config(cohort, out, method="ce", epochs_phase1=1, **TTA)).run()
    with pytest.raises(ValueError, match="grades with its classifier"):
        calibrate(out, progress=False)
    result = evaluate(out, tta=False, progress=False)
    assert result["grading"] == "classifier" and result["aggregate"]["balanced_accuracy"]["mean"] >= 0
    # Its severity is its score (the identity map of the fixed thresholds) ...
    assert result["severity_map"] == "identity"
    rows = read_predictions(out / "eval-no-tta" / "predictions.csv")
    for name in result["tasks"]:
        assert [r[f"{name}_severity"] for r in rows] == [r[f"{name}_score"] for r in rows]
    # ... and its plots draw no thresholds: it grades by its own rule.
    scores_plot = figures["scores_by_grade.png"]
    assert len(scores_plot["dashed"]) == len(result["tasks"]) and not any(scores_plot["dashed"])
    assert "grade boundaries (calibrated thresholds)" not in scores_plot["legend"]
    assert "median of the grade" in scores_plot["legend"]
    assert scores_plot["title"].startswith(f"ce — run {out.parent.name}/ce") and "classifier" in scores_plot["title"]
    report = (out / "eval-no-tta" / "report.md").read_text()
    assert "No boundary lines: a classifier grades by its own rule" in report and "Dashed red" not in report
    assert "phase 1 only" in report and "Severity equals the score here" in report
    assert figures["training_curves.png"]["lines"][0] == ["phase 1 (this run)"] * 1


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert cli.main(["evaluate", "--run", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "best.pt does not exist" in capsys.readouterr().err


def run_on_copy(run, cohort, tmp_path):
    """A copy of ``run`` (best.pt) whose data is a copy of ``cohort`` (same splits); returns both."""
    from spinerank.checkpoint import load_checkpoint, save_checkpoint

    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    state = load_checkpoint(run / "best.pt")
    state["config"]["data"] = str(data)
    save_checkpoint(tmp_path / "run" / "best.pt", state)
    return tmp_path / "run", data


def volumes_of(data, split, sequence="T2"):
    """The volumes of one split that calibrate and evaluate read (by default each disc's T2 volume)."""
    splits = {r["subject_id"]: r["split"] for r in csv.DictReader(open(data / "splits.csv"))}
    return [data / "volumes" / f"{r['ivd_id']}_{r['sequence']}.npy" for r in csv.DictReader(open(data / "labels.csv"))
            if splits[r["subject_id"]] == split and r["sequence"] == sequence]


def test_calibrate_and_evaluate_check_every_volume_before_scoring(run, cohort, tmp_path, monkeypatch, capsys):
    copy, data = run_on_copy(run, cohort, tmp_path)
    val, test = volumes_of(data, "val"), volumes_of(data, "test")
    val[0].write_bytes(val[0].read_bytes()[:-40])  # truncated
    np.save(val[1], np.zeros((20, 24), np.float32))
    test[0].unlink()
    np.save(test[1], np.full((20, 24, 6), np.nan, np.float32))

    def never(*args, **kwargs):
        raise AssertionError("scored before every volume was checked")
    monkeypatch.setattr(Predictor, "predict_dataset", never)
    with pytest.raises(ValueError, match=r"^2 of \d+ volume\(s\) .* cannot be used") as info:
        evaluate(copy, tta=False, progress=False)  # test volumes first, before calibrating on val
    message = str(info.value)
    assert f"{test[0].name} (or .nii.gz) of labels.csv line" in message and "does not exist" in message
    assert f"{test[1].name} (labels.csv line" in message and "NaN" in message
    assert val[0].name not in message
    assert not (copy / "eval-no-tta").exists() and not (copy / "thresholds.json").exists()
    with pytest.raises(ValueError, match=r"^2 of \d+ volume\(s\)") as info:
        calibrate(copy, tta=False, progress=False)
    assert re.search(rf"{val[0].name} .*truncated", str(info.value))
    assert re.search(rf"{val[1].name} .*expected 3 dimensions", str(info.value))
    assert cli.main(["calibrate", "--run", str(copy), "--no-tta", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spinerank: error: 2 of") and val[0].name in err and val[1].name in err
