"""Fidelity to the published system (issue 14): ranking-head variants, the
protocol settings of the published code and the ``official`` preset, and
evaluation per disc when a disc has no T2 volume."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config, write_cohort

import spinerank_ext
from spinerank import config as config_lib
from spinerank.cli import main, parser
from spinerank.model import GaussianBasisLayer, SpineRankNet
from spinerank.train import Trainer, _seed

HEADS = config_lib.RANK_HEADS
KS = [5, 4, 3, 4]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)


@pytest.fixture(scope="module")
def ce_source(cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ce")
    Trainer(tiny_config(cohort, folder, method="ce", epochs_phase1=1)).run()
    return folder / "best_phase1.pt"


# -- ranking heads ---------------------------------------------------------------------


@pytest.mark.parametrize("rank_on", ["logits", "embedding"])
@pytest.mark.parametrize("head", HEADS)
def test_heads_shapes_range_and_gradients(head, rank_on):
    torch.manual_seed(0)
    model = SpineRankNet(KS, width=4, rank_head=head, rank_on=rank_on, scale=10.0)
    out = model(torch.randn(6, 1, 4, 16, 20))
    assert out["scores"].shape == (6, len(KS))
    assert ((out["scores"] >= 0) & (out["scores"] <= 10)).all()
    out["scores"].sum().backward()
    grads = [p.grad for p in model.rank_heads.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # ... and through the heads to the encoder.
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_heads_stay_in_range_for_extreme_inputs(head):
    torch.manual_seed(0)
    model = SpineRankNet(KS, width=4, rank_head=head, scale=7.0).eval()
    # Large logits: the raw head outputs are far outside [0, S]; soft_clamp keeps the scores inside.
    big = [torch.randn(5, k) * 1e3 for k in KS]
    with torch.no_grad():
        if isinstance(model.rank_heads, torch.nn.ModuleList):
            scores = torch.stack([h(x) for h, x in zip(model.rank_heads, big)], 1)
        else:
            scores = model.rank_heads(big)
    assert torch.isfinite(scores).all() and ((scores >= 0) & (scores <= 7)).all()


@pytest.mark.parametrize("head", HEADS)
def test_a_ranking_step_lowers_the_loss_for_each_head(head):
    torch.manual_seed(1)
    model = SpineRankNet(KS, width=4, rank_head=head).eval()  # no dropout: a deterministic objective
    x = torch.randn(16, 1, 4, 16, 20)
    grades = torch.stack([torch.randint(0, k, (16,)) for k in KS], 1)
    loss_fn = spinerank_ext.PairwiseRankLoss(KS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = loss_fn(model(x)["scores"], grades)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def _scores_after_changing_task0(head):
    torch.manual_seed(0)
    model = SpineRankNet(KS, width=4, rank_head=head).eval()
    logits = [torch.randn(3, k) for k in KS]
    changed = [logits[0] + 5.0] + logits[1:]
    with torch.no_grad():
        run = (lambda inputs: torch.stack([h(i) for h, i in zip(model.rank_heads, inputs)], 1)) \
            if isinstance(model.rank_heads, torch.nn.ModuleList) else model.rank_heads
        return run(logits), run(changed)


def test_the_transformer_head_attends_across_tasks_the_others_do_not():
    before, after = _scores_after_changing_task0("transformer")
    assert not torch.allclose(before[:, 1:], after[:, 1:])  # task 0's input moved the other tasks' scores
    for head in ("mlp", "linear", "kan"):
        before, after = _scores_after_changing_task0(head)
        torch.testing.assert_close(before[:, 1:], after[:, 1:])  # one head per task


def test_gaussian_basis_layer_by_hand():
    torch.manual_seed(0)
    layer = GaussianBasisLayer(3, 2, grid=5, grid_min=-2.0, grid_max=2.0)
    x = torch.randn(4, 3)
    normed = torch.nn.functional.layer_norm(x, (3,), layer.norm.weight, layer.norm.bias).detach()
    centres = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # spacing h = 1
    expected = []
    for n in range(4):
        basis = [math.exp(-(float(normed[n, i]) - float(c)) ** 2) for i in range(3) for c in centres]
        expected.append(layer.linear.weight.detach().double() @ torch.tensor(basis, dtype=torch.float64))
    torch.testing.assert_close(layer(x).double(), torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_rank_head_is_validated_recorded_and_reloaded(cohort, tmp_path):
    with pytest.raises(ValueError, match=r"config: rank_head must be one of mlp, linear, kan, transformer, got 'svm'"):
        tiny_config(cohort, tmp_path / "x", rank_head="svm")
    trainer = Trainer(tiny_config(cohort, tmp_path / "kan", rank_head="kan", epochs_phase1=1, epochs_phase2=1))
    trainer.run()
    saved = torch.load(tmp_path / "kan" / "best.pt", weights_only=True)
    assert saved["config"]["rank_head"] == "kan"
    assert any(k.startswith("rank_heads.0.kan.") for k in saved["model"])
    from spinerank.inference import Predictor

    predictor = Predictor(tmp_path / "kan" / "best.pt")  # builds the kan heads from the checkpoint's config
    assert predictor.model.rank_head == "kan"


@pytest.mark.parametrize("head", ["transformer", "mlp"])
def test_init_phase1_loads_the_encoder_and_classification_heads_of_any_head(cohort, tmp_path, ce_source, head):
    # The ce source has mlp ranking heads (never trained); phase 2 with lr 0 keeps what it started from.
    trainer = Trainer(tiny_config(cohort, tmp_path / head, rank_head=head, init_phase1=str(ce_source),
                                  epochs_phase2=1, lr_encoder_phase2=0.0, lr_heads_phase2=0.0))
    trainer.run()
    given = torch.load(ce_source, weights_only=True)["model"]
    mine = {k: v.detach() for k, v in trainer.model.named_parameters()}  # (BatchNorm statistics still move)
    for key in [k for k in mine if not k.startswith("rank_heads.")]:
        assert torch.equal(mine[key], given[key]), key
    # The ranking heads are this run's own initial ones: those of a model built with the run's seed.
    torch.manual_seed(_seed(0, 0))
    fresh = SpineRankNet(trainer.tasks.num_grades, width=4, rank_head=head).state_dict()
    for key in [k for k in mine if k.startswith("rank_heads.")]:
        assert torch.equal(mine[key], fresh[key]), key
    if head == "mlp":  # the same ones the source holds: loading them too would change nothing
        assert all(torch.equal(mine[k], given[k]) for k in mine if k.startswith("rank_heads."))


def test_init_phase1_refuses_another_encoder_layout(cohort, tmp_path, ce_source):
    with pytest.raises(ValueError, match=r"has downsample_stage2 True, this run False; they must match"):
        Trainer(tiny_config(cohort, tmp_path / "a", init_phase1=str(ce_source), downsample_stage2=False)).run()


# -- protocol settings and the official preset ------------------------------------------


def test_official_preset_sets_the_published_protocol():
    official = config_lib.resolve("official")
    assert official.preset == "official"
    expected = dict(weight_decay=1e-5, lr_encoder_phase1=1e-4, lr_phase1=1e-3, eta_min=1e-6, min_epochs=0,
                    lr_cls_heads_phase2=1e-3, phase2_selection="balanced_accuracy", downsample_stage2=False,
                    drop_last=True, max_pairs=500)
    assert {k: getattr(official, k) for k in expected} == expected
    paper = config_lib.resolve("paper")  # the paper's text
    assert (paper.weight_decay, paper.lr_encoder_phase1, paper.lr_phase1, paper.eta_min, paper.min_epochs,
            paper.lr_cls_heads_phase2, paper.phase2_selection, paper.downsample_stage2, paper.drop_last,
            paper.max_pairs) == (1e-4, None, 1e-3, 0.0, 50, None, "qwk", True, False, None)
    # Everything else is the paper's model and protocol.
    differs = {f for f in config_lib.TrainConfig.__dataclass_fields__ if getattr(official, f) != getattr(paper, f)}
    assert differs == set(expected) - {"lr_phase1"} | {"preset"}  # lr_phase1: 1e-3 in both
    for command in (["train", "--out", "x"], ["compare", "--data", "d", "--out", "o"],
                    ["ablate", "--what", "heads", "--data", "d", "--out", "o"]):
        assert parser().parse_args([*command, "--preset", "official"]).preset == "official"


@pytest.mark.parametrize("name, value, message", [
    ("phase2_selection", "mcc", "phase2_selection must be one of qwk, balanced_accuracy"),
    ("eta_min", -1.0, "eta_min must be a number >= 0"),
    ("lr_encoder_phase1", "fast", "lr_encoder_phase1 must be a number >= 0"),
    ("downsample_stage2", "no", "downsample_stage2 must be true or false"),
])
def test_protocol_settings_are_validated(cohort, tmp_path, name, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(cohort, tmp_path, **{name: value})


def _groups(optimizer):
    return [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]


def test_parameter_groups_learning_rates_and_schedule(cohort, tmp_path):
    paper = Trainer(tiny_config(cohort, tmp_path / "p"))
    model = paper.model
    encoder = {id(p) for p in model.encoder.parameters()}
    cls = {id(p) for p in model.cls_heads.parameters()}
    rank = {id(p) for p in model.rank_heads.parameters()}
    # The paper's text (and this project's default): one group in phase 1, two in phase 2.
    assert _groups(paper._optimizer(1)[0]) == [(1e-3, 1e-4, encoder | cls)]
    assert _groups(paper._optimizer(2)[0]) == [(1e-4, 1e-4, encoder | cls), (1e-3, 1e-4, rank)]
    official = Trainer(tiny_config(cohort, tmp_path / "o", **config_lib.OFFICIAL))
    model = official.model
    encoder = {id(p) for p in model.encoder.parameters()}
    cls = {id(p) for p in model.cls_heads.parameters()}
    rank = {id(p) for p in model.rank_heads.parameters()}
    assert _groups(official._optimizer(1)[0]) == [(1e-4, 1e-5, encoder), (1e-3, 1e-5, cls)]
    assert _groups(official._optimizer(2)[0]) == [(1e-4, 1e-5, encoder), (1e-3, 1e-5, cls), (1e-3, 1e-5, rank)]
    # Cosine to eta_min over the phase's epochs (tiny_config: 2).
    optimizer, scheduler = official._optimizer(1)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-6, 1e-6])
    optimizer, scheduler = paper._optimizer(1)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.0]


def test_encoder_stage2_without_downsampling():
    x = torch.randn(1, 1, 4, 16, 20)
    for downsample, size in ((True, (2, 3)), (False, (4, 5))):
        encoder = SpineRankNet(KS, width=4, downsample_stage2=downsample).encoder
        h = encoder.stages[1](encoder.stages[0](encoder.stem(x)))  # stem: 16 x 20 -> 4 x 5
        assert tuple(h.shape[2:]) == (4, *size)
        assert encoder.stages[1][0].conv1.stride == ((1, 2, 2) if downsample else (1, 1, 1))
        assert tuple(encoder.stages[2](h).shape[3:]) == tuple((s + 1) // 2 for s in size)


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_drops_the_incomplete_batch(cohort, tmp_path, drop_last):
    trainer = Trainer(tiny_config(cohort, tmp_path, drop_last=drop_last, batch_size=7))
    sizes = []
    model = trainer.train_model
    trainer.train_model = lambda v: (sizes.append(v.shape[0]), model(v))[1]
    optimizer, _ = trainer._optimizer(1)
    trainer._train_epoch(1, 0, optimizer)
    n = len(trainer.train_set)
    assert n % 7  # the cohort leaves an incomplete batch
    assert sizes == [7] * (n // 7) + ([] if drop_last else [n % 7])
    # A training split smaller than one batch still trains.
    trainer = Trainer(tiny_config(cohort, tmp_path / "big", drop_last=True, batch_size=4 * n))
    sizes.clear()
    model = trainer.train_model
    trainer.train_model = lambda v: (sizes.append(v.shape[0]), model(v))[1]
    trainer._train_epoch(1, 0, trainer._optimizer(1)[0])
    assert sizes == [n]


def test_phase2_selection_by_balanced_accuracy_at_fixed_thresholds(cohort, tmp_path, ce_source):
    from sklearn.metrics import balanced_accuracy_score

    from spinerank.augmentation import centre_crop
    from spinerank.metrics import fixed_thresholds

    trainer = Trainer(tiny_config(cohort, tmp_path, init_phase1=str(ce_source), epochs_phase2=2,
                                  phase2_selection="balanced_accuracy"))
    trainer.run()
    val = trainer.evaluate(trainer.val_set)
    # Independently: the model's validation scores graded with (c + 0.5) S / (K - 1), scikit-learn's BA.
    loader = torch.utils.data.DataLoader(trainer.val_set, batch_size=64)
    volumes, grades = next(iter(loader))
    with torch.no_grad():
        scores = trainer.model.eval()(centre_crop(volumes, (4, 16, 20)))["scores"].numpy()
    expected = []
    for t, k in enumerate(trainer.tasks.num_grades):
        keep = grades[:, t].numpy() >= 0
        predicted = np.searchsorted(fixed_thresholds(k), scores[keep, t], side="left")
        expected.append(balanced_accuracy_score(grades[keep, t].numpy(), predicted))
    assert val["score_balanced_accuracy"] == pytest.approx(expected)
    assert trainer.selection_metric(2, val) == pytest.approx(np.mean(expected))
    history = trainer.history
    assert [h["selection_metric"] for h in history] == [h["mean_score_balanced_accuracy"] for h in history]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["metric"] == max(h["selection_metric"]
                                                                             for h in history)


@pytest.mark.parametrize("min_epochs, epochs", [(0, [1, 2]), (4, [1, 2, 3, 4])])
def test_minimum_epochs_before_early_stopping(cohort, tmp_path, min_epochs, epochs):
    trainer = Trainer(tiny_config(cohort, tmp_path, epochs_phase1=8, epochs_phase2=0, patience=1,
                                  min_epochs=min_epochs))
    trainer.evaluate = lambda dataset: {"mean_balanced_accuracy": 0.5}  # never improves after epoch 1
    trainer.run()
    assert [h["epoch"] for h in trainer.history] == epochs


def test_train_cli_takes_the_official_preset_and_a_rank_head(cohort, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20], batch_size=8,
                                      epochs_phase1=1, epochs_phase2=1)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(cohort), "--out", str(out), "--preset", "official", "--config", str(config),
                 "--rank-head", "linear", "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "official" and saved["rank_head"] == "linear"
    assert saved["weight_decay"] == 1e-5 and saved["downsample_stage2"] is False
    assert main(["train", "--data", str(cohort), "--out", str(out), "--resume", "--rank-head", "kan", "--quiet"]) == 2
    assert "cannot change rank_head ('linear' -> 'kan')" in capsys.readouterr().err


# -- evaluation per disc: a disc without a T2 volume ------------------------------------


@pytest.fixture(scope="module")
def cohort_missing_t2(tmp_path_factory):
    """A cohort in which one test disc has no T2 volume (its T1 one only)."""
    from spinerank.data import load_or_make_splits, read_labels
    from spinerank.tasks import TaskTable

    folder = write_cohort(tmp_path_factory.mktemp("missing"), subjects=20, seed=5)
    splits = load_or_make_splits(folder, read_labels(folder, TaskTable()), 0)
    with open(folder / "labels.csv") as f:
        rows = list(csv.reader(f))
    victim = next(r[0] for r in rows[1:] if splits[r[1]] == "test")
    kept = [r for r in rows if not (r[0] == victim and r[3] == "T2")]
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    (folder / "volumes" / f"{victim}_T2.npy").unlink()
    return folder, victim


def test_a_disc_without_t2_is_skipped_and_counted(cohort_missing_t2, tmp_path, capsys):
    from spinerank.evaluate import evaluate

    folder, victim = cohort_missing_t2
    run = tmp_path / "run"
    Trainer(tiny_config(folder, run, epochs_phase1=1, epochs_phase2=1)).run()
    result = evaluate(run, tta=False, progress=False)
    rows = list(csv.DictReader(open(run / "eval-no-tta" / "predictions.csv")))
    assert victim not in {r["ivd_id"] for r in rows} and result["skipped_discs"] == 1
    assert result["rows"]["discs"] == len(rows) + 1
    report = (run / "eval-no-tta" / "report.md").read_text()
    assert "(1 discs without a T2 volume skipped)" in report
    # Every volume: the disc counts with its T1 volume, nothing is skipped.
    both = evaluate(run, tta=False, progress=False, sequences=["T1", "T2"], out=tmp_path / "both")
    assert both["skipped_discs"] == 0 and both["unit"] == "volumes (T1, T2)"
    assert both["volumes"] == 2 * len(rows) + 1
    assert main(["evaluate", "--run", str(run), "--no-tta", "--sequences", "T2", "--quiet"]) == 0
    assert "1 discs skipped" in capsys.readouterr().out
