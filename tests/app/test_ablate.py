"""``spinerank ablate`` (issue 14): ranking heads from one shared phase-1 model and
threshold methods on one run, checked against the runs' own evaluations and
against fitting the thresholds again and scoring them with scikit-learn."""
import csv
import json

import numpy as np
import pytest
import torch
from conftest import write_cohort
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

from spinerank import thresholds as thresholds_lib
from spinerank.ablate import ablate
from spinerank.calibrate import split_dataset
from spinerank.cli import main
from spinerank.config import RANK_HEADS
from spinerank.inference import Predictor

TINY = dict(width=4, volume_shape=(6, 20, 24), input_shape=(4, 16, 20), batch_size=8, epochs_phase1=1,
            epochs_phase2=1, patience=5, min_epochs=1, aug_shift_h=2, aug_shift_w=2, aug_slice_shift=1,
            tta_shifts_h=(-2, 0, 2), tta_shifts_w=(-2, 0, 2))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20, seed=7)


@pytest.fixture(scope="module")
def heads(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads")
    result = ablate("heads", data=str(cohort), out=str(out), tta=False, progress=False, **TINY)
    return out, result


def test_heads_ablation_trains_each_head_from_one_phase1_model(heads):
    out, result = heads
    assert list(result["variants"]) == list(RANK_HEADS)
    ce = torch.load(out / "ce" / "best_phase1.pt", weights_only=True)["model"]
    for head in RANK_HEADS:
        config = json.loads((out / head / "config.json").read_text())
        assert config["rank_head"] == head and config["init_phase1"] == str(out / "ce" / "best_phase1.pt")
        assert (out / head / "best_phase1.pt").read_bytes() == (out / "ce" / "best_phase1.pt").read_bytes()
        best = torch.load(out / head / "best.pt", weights_only=True)
        assert best["phase"] == 2 and best["config"]["rank_head"] == head
        assert any(k.startswith("rank_heads.") for k in best["model"]) and "encoder.stem.0.weight" in ce
        # The table is the run's own evaluation: per task and mean ± std over tasks.
        metrics = json.loads((out / head / "eval-no-tta" / "metrics.json").read_text())
        variant = result["variants"][head]
        for name, m in metrics["tasks"].items():
            assert variant["tasks"][name]["balanced_accuracy"] == pytest.approx(m["balanced_accuracy"])
        ba = [m["balanced_accuracy"] for m in metrics["tasks"].values() if m["balanced_accuracy"] is not None]
        assert variant["balanced_accuracy"]["mean"] == pytest.approx(np.mean(ba))
        assert variant["balanced_accuracy"]["std"] == pytest.approx(np.std(ba))
        qwk = [m["qwk"] for m in metrics["tasks"].values() if m["qwk"] is not None]
        assert variant["qwk"]["mean"] == pytest.approx(np.mean(qwk))
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["what"] == "heads" and saved["unit"] == "discs (T2 volume)"
    assert saved["paper"]["transformer"] == {"balanced_accuracy": 0.418, "qwk": 0.303}
    md = (out / "ablation.md").read_text()
    for head, paper in (("mlp", "63.3 | 0.762"), ("linear", "58.3 | 0.733"), ("kan", "61.0 | 0.698"),
                        ("transformer", "41.8 | 0.303")):
        assert f"| {head} | " in md and paper in md
    ba = result["variants"]["kan"]["balanced_accuracy"]
    assert f"{100 * ba['mean']:.1f} ± {100 * ba['std']:.1f}" in md


def test_heads_ablation_reuses_finished_runs_and_resumes_interrupted_ones(cohort, heads, capsys):
    out, result = heads
    (out / "kan" / "trained.json").unlink()  # as if killed after its last checkpoint
    again = ablate("heads", data=str(cohort), out=str(out), tta=False, progress=True, **TINY)
    printed = capsys.readouterr().out
    assert printed.count("trained before") == 4 and "training spinerank in" in printed and "(resuming)" in printed
    assert again["variants"] == result["variants"]
    # Through the CLI (JSON config), a subset of heads, everything reused.
    config = out / "tiny.json"
    config.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}))
    assert main(["ablate", "--what", "heads", "--data", str(cohort), "--out", str(out), "--config", str(config),
                 "--heads", "mlp", "linear", "--no-tta", "--quiet"]) == 0
    assert list(json.loads((out / "ablation.json").read_text())["variants"]) == ["mlp", "linear"]


def test_thresholds_ablation_against_refitting_and_scikit_learn(heads):
    out, _ = heads
    run = out / "mlp"
    result = ablate("thresholds", run=str(run), tta=False, progress=False)
    assert list(result["variants"]) == list(thresholds_lib.METHODS)
    assert (run / "ablation-thresholds-no-tta" / "ablation.md").exists()
    # Independent: validation scores of the same selection, test scores from evaluate's predictions.csv.
    predictor = Predictor(run / "best.pt")
    val_pred, val_grades = predictor.predict_dataset(split_dataset(predictor, "val"), tta=False, progress=False)
    rows = list(csv.DictReader(open(run / "eval-no-tta" / "predictions.csv")))
    metrics = json.loads((run / "eval-no-tta" / "metrics.json").read_text())
    for t, (name, K) in enumerate(zip(predictor.tasks.names, predictor.tasks.num_grades)):
        fit = val_grades[:, t] >= 0
        labelled = [r for r in rows if r[f"{name}_true"] != ""]
        y = np.array([int(r[f"{name}_true"]) for r in labelled])
        s = np.array([float(r[f"{name}_score"]) for r in labelled])
        for method in thresholds_lib.METHODS:
            got = result["variants"][method]["tasks"][name]
            if not fit.any() or not len(y):
                continue
            try:
                tau = thresholds_lib.fit_thresholds(val_pred.scores[fit, t], val_grades[fit, t], K, method=method)
            except ValueError:  # too few validation scores for this method: the fixed thresholds, said so
                tau = (np.arange(K - 1) + 0.5) * 10 / (K - 1)
                assert not got["fitted"] and got["not_fitted"].startswith(f"{method} cannot be fitted on")
                assert f"{method}: not fitted on" in (run / "ablation-thresholds-no-tta" / "ablation.md").read_text()
            np.testing.assert_allclose(got["thresholds"], tau, rtol=0, atol=1e-9)
            p = np.searchsorted(tau, s, side="left")
            assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
            qwk = cohen_kappa_score(y, p, weights="quadratic", labels=list(range(K)))
            assert got["qwk"] == pytest.approx(qwk, nan_ok=True)
        # The grid row is the run's evaluation with its calibrated thresholds.
        grid = result["variants"]["grid"]["tasks"][name]
        assert grid["balanced_accuracy"] == pytest.approx(metrics["tasks"][name]["balanced_accuracy"], nan_ok=True)
    md = (run / "ablation-thresholds-no-tta" / "ablation.md").read_text()
    for method, paper in (("grid", "63.3 | 0.762"), ("isotonic", "55.7 | 0.744"), ("youden", "58.8 | 0.685"),
                          ("gmm", "54.3 | 0.448")):
        assert f"| {method} | " in md and paper in md


def test_ablate_cli(heads, tmp_path, capsys):
    out, _ = heads
    assert main(["ablate", "--what", "thresholds", "--run", str(out / "mlp"), "--no-tta", "--sequences", "T1", "T2",
                 "--out", str(tmp_path / "t"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "t" / "ablation.json").read_text())
    assert saved["what"] == "thresholds" and saved["unit"] == "volumes (T1, T2)"
    assert "| gmm |" in capsys.readouterr().out
    assert main(["ablate", "--what", "thresholds", "--quiet"]) == 2
    assert "needs --run RUN" in capsys.readouterr().err
    assert main(["ablate", "--what", "thresholds", "--run", str(out / "mlp"), "--epochs-phase2", "3", "--quiet"]) == 2
    assert "--epochs-phase2 apply to --what heads" in capsys.readouterr().err
    assert main(["ablate", "--what", "heads", "--run", str(out / "mlp"), "--quiet"]) == 2
    assert "--run is for --what thresholds" in capsys.readouterr().err
    assert main(["ablate", "--what", "heads", "--out", str(tmp_path / "h"), "--quiet"]) == 2
    assert "needs --data DIR and --out DIR" in capsys.readouterr().err
    assert main(["ablate", "--what", "thresholds", "--run", str(out / "ce"), "--quiet"]) == 2
    assert "needs a ranking run" in capsys.readouterr().err
