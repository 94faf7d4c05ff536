"""Comparison of methods (issue 6): the shared phase 1, the tables of every metric,
seeds and their paired differences, the training curves of a reused phase 1, and
the demo (synthesise, then compare)."""
import json
import pathlib

import numpy as np
import pytest
import torch

from conftest import TTA, write_cohort, write_latent
from spinerank import cli
from spinerank.compare import compare


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_latent(write_cohort(tmp_path_factory.mktemp("cohort"), subjects=30, seed=3))


def test_compare_reuses_phase1_and_tabulates_every_metric(cohort, tmp_path, capsys, figures):
    overrides = dict(width=4, volume_shape=(6, 20, 24), input_shape=(4, 16, 20), batch_size=8, epochs_phase1=1,
                     epochs_phase2=1, patience=5, min_epochs=1, aug_shift_h=2, aug_shift_w=2, aug_slice_shift=1,
                     **TTA)
    summary = compare(str(cohort), str(tmp_path / "cmp"), methods=("ce", "spinerank"), progress=False, tta=False,
                      **overrides)
    assert set(summary["methods"]) == {"ce", "spinerank"}
    for method, table in summary["methods"].items():
        assert set(table) == {"balanced_accuracy", "roc_auc", "qwk", "mae", "mcc", "latent_spearman",
                              "latent_spearman_within_grade"}, method
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["methods"].keys() == summary["methods"].keys()
    assert "| spinerank |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert summary["unit"] == "discs (T2 volume)" and summary["sequences"] == ["T2"]
    assert f"Test split: {summary['volumes']} discs (T2 volume) (`n` counts discs (T2 volume))" \
        in (tmp_path / "cmp" / "comparison.md").read_text()
    ce = torch.load(tmp_path / "cmp" / "ce" / "best_phase1.pt", weights_only=False)["model"]
    sr = torch.load(tmp_path / "cmp" / "spinerank" / "best_phase1.pt", weights_only=False)["model"]
    assert all(torch.equal(ce[k], sr[k]) for k in ce)  # phase 2 started from the CE run's phase 1
    # The ranking run's training curves draw the CE run's phase 1 (dashed, named) before its own phase 2.
    report = (tmp_path / "cmp" / "spinerank" / "eval-no-tta" / "report.md").read_text()
    assert "phase 2 started from the phase-1 model of ../ce" in report
    assert (tmp_path / "cmp" / "spinerank" / "eval-no-tta" / "training_curves.png").stat().st_size > 0
    curves = figures["training_curves.png"]  # the last one saved: spinerank's
    assert curves["title"].startswith("spinerank — run cmp/spinerank")
    assert curves["lines"][1] == ["phase 1 (from ../ce)", "phase 2"]
    assert curves["legend"][0].startswith("phase 1 (from ../ce)")
    # Run again: nothing is retrained.
    compare(str(cohort), str(tmp_path / "cmp"), methods=("ce", "spinerank"), progress=True, tta=False, **overrides)
    assert capsys.readouterr().out.count("trained before") == 2


def test_compare_over_seeds_pools_paired_differences(cohort, tmp_path, capsys):
    from spinerank.bootstrap import load_outcome

    overrides = dict(width=4, volume_shape=(6, 20, 24), input_shape=(4, 16, 20), batch_size=8, epochs_phase1=1,
                     epochs_phase2=2, patience=5, min_epochs=1, aug_shift_h=2, aug_shift_w=2, aug_slice_shift=1,
                     **TTA)
    out = tmp_path / "cmp"
    summary = compare(str(cohort), str(out), methods=("ce", "spinerank"), progress=False, tta=False, seeds=[0, 1],
                      **overrides)
    evaluations = {(s, m): json.loads((out / f"seed-{s}" / m / "eval-no-tta" / "metrics.json").read_text())
                   for s in (0, 1) for m in ("ce", "spinerank")}
    assert json.loads((out / "seed-1" / "spinerank" / "config.json").read_text())["seed"] == 1
    # One shared phase 1 per seed: each seed's SpineRankNet starts from that seed's CE phase 1.
    for s in (0, 1):
        ce = torch.load(out / f"seed-{s}" / "ce" / "best_phase1.pt", weights_only=False)["model"]
        sr = torch.load(out / f"seed-{s}" / "spinerank" / "best_phase1.pt", weights_only=False)["model"]
        assert all(torch.equal(ce[k], sr[k]) for k in ce)
    # The table: mean and std over seeds of each run's task-mean.
    for m in ("ce", "spinerank"):
        per_seed = [evaluations[(s, m)]["aggregate"]["qwk"]["mean"] for s in (0, 1)]
        assert summary["methods"][m]["qwk"]["mean"] == pytest.approx(np.mean(per_seed))
        assert summary["methods"][m]["qwk"]["std"] == pytest.approx(np.std(per_seed))
        assert summary["tasks"][m]["Pfirrmann"]["mae"] == [evaluations[(s, m)]["tasks"]["Pfirrmann"]["mae"]
                                                           for s in (0, 1)]
    # The paired point estimates are the differences of the evaluations' own values, averaged over seeds.
    paired = summary["paired"]["methods"]["spinerank"]["mean"]
    for key in ("qwk", "mae", "balanced_accuracy", "roc_auc", "latent_spearman_within_grade"):
        expected = np.mean([evaluations[(s, "spinerank")]["aggregate"][key]["mean"]
                            - evaluations[(s, "ce")]["aggregate"][key]["mean"] for s in (0, 1)])
        assert paired[key]["diff"] == pytest.approx(expected, abs=1e-9), key
        low, high = paired[key]["ci"]
        assert low <= high
    outcome = load_outcome(out / "seed-0" / "ce" / "eval-no-tta" / "outcome.npz")
    assert outcome.grades.shape == (summary["volumes"], len(summary["tasks"]["ce"]))
    text = (out / "comparison.md").read_text()
    assert text.index("## Against ce: paired differences") < text.index("## Each method: mean ± std over seeds")
    assert "95 % paired-bootstrap interval" in text and "(seed-1/comparison.md)" in text
    assert (out / "comparison.png").stat().st_size > 10_000
    assert "## Against ce" in (out / "seed-0" / "comparison.md").read_text()
    # Run again: nothing is retrained, the same tables come out.
    first = json.loads((out / "comparison.json").read_text())
    compare(str(cohort), str(out), methods=("ce", "spinerank"), progress=True, tta=False, seeds=[0, 1], **overrides)
    assert capsys.readouterr().out.count("trained before") == 4
    again = json.loads((out / "comparison.json").read_text())
    assert again["paired"] == first["paired"] and again["methods"] == first["methods"]


def test_compare_cli_refuses_seed_with_seeds(tmp_path, capsys):
    code = cli.main(["compare", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--seed", "1", "--seeds", "0",
                     "1", "-qq"])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_training_curves_name_a_reused_phase1_even_when_its_run_is_gone(tmp_path, figures):
    from spinerank import report

    run = tmp_path / "cmp" / "spinerank"
    run.mkdir(parents=True)
    phase2 = [{"phase": 2, "epoch": e, "train_loss": 1 / e, "selection_metric": 0.1 * e} for e in (1, 2, 3)]
    source = tmp_path / "cmp" / "ce"
    reused = report.reused_phase1(run, str(source / "best_phase1.pt"))
    assert reused == ("../ce", []) and report.reused_phase1(run, None) is None
    drawn = report.plot_training_curves(run / "gone.png", phase2, method="spinerank", run=run, reused=reused)
    assert drawn["lines"] == ["phase 2, selected by mean QWK of the scores at the fixed thresholds",
                              "selected epoch (best validation metric) of each phase"]
    assert figures["gone.png"]["title"] == ("spinerank — run cmp/spinerank: training curves; phase 1 reused from "
                                            "../ce, whose metrics.jsonl was not found")
    source.mkdir()
    phase1 = [{"phase": 1, "epoch": e, "train_loss": 2 / e, "selection_metric": 0.2 * e} for e in (1, 2)]
    (source / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in phase1))
    reused = report.reused_phase1(run, str(source / "best_phase1.pt"))
    assert reused == ("../ce", phase1)
    report.plot_training_curves(run / "found.png", phase2, method="spinerank", run=run, reused=reused)
    assert figures["found.png"]["lines"][1] == ["phase 1 (from ../ce)", "phase 2"]  # the metric panel
    assert figures["found.png"]["lines"][0] == ["phase 1 (from ../ce)"]  # phase 2's loss: its own axis
    assert figures["found.png"]["lines"][2] == ["phase 2"]
    assert figures["found.png"]["title"] == "spinerank — run cmp/spinerank: training curves"


def test_demo_synthesises_then_compares_ce_and_spinerank(tmp_path, monkeypatch):
    import spinerank.compare
    import spinerank.synth
    from spinerank.demo import demo

    calls = []

    def fake_synth(out, **kw):
        calls.append(("synth", kw["subjects"]))
        out.mkdir(parents=True)
        (out / "labels.csv").write_text("")

    def fake_compare(data, out, **kw):
        calls.append(("compare", tuple(kw["methods"]), kw["preset"], kw["tta"], kw.get("seed"), kw.get("seeds")))
        pathlib.Path(out).mkdir(parents=True)
        (pathlib.Path(out) / "comparison.md").write_text("table")
        return {}

    monkeypatch.setattr(spinerank.synth, "synthesize", fake_synth)
    monkeypatch.setattr(spinerank.compare, "compare", fake_compare)
    demo(tmp_path / "d", subjects=7, progress=False)
    demo(tmp_path / "d2", all_methods=True, progress=False, seeds=[3, 4])
    assert calls == [("synth", 7), ("compare", ("ce", "spinerank"), "tiny", True, 0, None),
                     ("synth", 200), ("compare", ("ce", "corn", "mae", "ranknet", "deeprank", "spinerank"), "tiny", True,
                                      None, [3, 4])]
