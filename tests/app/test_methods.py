"""The training methods (SPEC §7): each loss and read-out against values written
out by hand from the published definitions or a plain computation, the ranking
options against the reference loss, and a tiny training run per method."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, whole_and_resumed, write_cohort

import spinerank_ext
from spinerank import methods
from spinerank.cli import main
from spinerank.train import Trainer

LN3 = math.log(3.0)


def test_names_and_unknown_method():
    assert methods.METHOD_NAMES == ("ce", "corn", "mae", "ranknet", "deeprank", "spinerank")
    assert [methods.get(n).name for n in methods.METHOD_NAMES] == list(methods.METHOD_NAMES)
    assert [n for n in methods.METHOD_NAMES if methods.get(n).ranking] == ["ranknet", "deeprank", "spinerank"]
    assert [methods.get(n).head_size(5) for n in methods.METHOD_NAMES] == [5, 4, 5, 5, 5, 5]
    with pytest.raises(ValueError, match=r"unknown method 'svm'; choose one of ce, corn, mae, ranknet, "
                                         r"deeprank, spinerank"):
        methods.get("svm")
    with pytest.raises(ValueError, match=r"method 'ce' has no option\(s\) class_weighted"):
        methods.get("ce", class_weighted=True)



# -- the registry: the one list of methods ----------------------------------------


@pytest.fixture
def throwaway():
    """A ranking method of this test's own, registered for the test only."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Throwaway(methods.Method):
        scale: float = 1.0

        def phase1_loss(self, logits, grades, weights):
            return self.scale * methods.weighted_cross_entropy(logits, grades, weights)

    method = methods.register(Throwaway("throwaway", ranking=True), "a test's own method: scaled CE, then pairs")
    yield method
    methods.unregister("throwaway")
    assert "throwaway" not in methods.names() and "throwaway" not in methods.METHOD_NAMES


def help_of(command, monkeypatch):
    """``spinerank COMMAND --help``, wide enough that no help line wraps."""
    import argparse

    from spinerank import cli

    monkeypatch.setenv("COLUMNS", "1000")
    subparsers = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command].format_help()


def test_a_registered_method_is_everywhere_a_method_name_is(throwaway, monkeypatch):
    from spinerank import cli
    from spinerank import config as config_lib

    assert methods.names() == methods.METHOD_NAMES == ("ce", "corn", "mae", "ranknet", "deeprank", "spinerank",
                                                       "throwaway")
    assert methods.ranking_names() == ("ranknet", "deeprank", "spinerank", "throwaway")
    assert methods.get("throwaway") == throwaway and methods.get("throwaway", scale=2.0).scale == 2.0
    # the CLI: compare's choices and train's help
    args = cli.parser().parse_args(["compare", "--data", "d", "--out", "o", "--methods", "ce", "throwaway"])
    assert args.methods == ["ce", "throwaway"]
    assert "throwaway (both phases): a test's own method: scaled CE, then pairs" in help_of("train", monkeypatch)
    assert "{ce,corn,mae,ranknet,deeprank,spinerank,throwaway}" in help_of("compare", monkeypatch)
    # config validation, with the method's own options, and the ranking methods it names
    config = config_lib.resolve("tiny", None, method="throwaway", method_options={"scale": 0.5}, rank_anchor=0.1)
    assert methods.for_config(config).scale == 0.5 and methods.for_config(config).ranking
    with pytest.raises(ValueError, match=r"config: method 'throwaway' has no option\(s\) normalize"):
        config_lib.resolve("tiny", None, method="throwaway", method_options={"normalize": "discs"})
    with pytest.raises(ValueError, match=r"use it with ranknet, deeprank, spinerank or throwaway, or set it to 0"):
        config_lib.resolve("tiny", None, method="mae", rank_anchor=0.1)
    with pytest.raises(ValueError, match=r"config: method must be one of ce, corn, mae, ranknet, deeprank, "
                                         r"spinerank, throwaway, got 'svm'"):
        config_lib.resolve("tiny", None, method="svm")


def test_register_refuses_what_the_cli_and_run_folders_cannot_take(throwaway):
    with pytest.raises(ValueError, match=r"method 'throwaway' is registered already"):
        methods.register(methods.Method("throwaway"), "again")
    with pytest.raises(ValueError, match=r"lowercase letters, digits, '-' and '_'"):
        methods.register(methods.Method("My Method"), "a name with a space")
    with pytest.raises(ValueError, match=r"needs a one-line description"):
        methods.register(methods.Method("nodesc"), "")
    with pytest.raises(TypeError, match=r"a Method instance"):
        methods.register("ce", "a name, not a method")
    with pytest.raises(ValueError, match=r"no method 'svm' is registered"):
        methods.unregister("svm")
    assert "nodesc" not in methods.names()


def test_train_help_lists_every_registered_method(monkeypatch):
    text = help_of("train", monkeypatch)
    for name in methods.names():
        marks = ("both phases" if methods.get(name).ranking else "phase 1 only") + (
            ", default" if name == "spinerank" else "")
        assert f"{name} ({marks}): {methods.description(name)}\n" in text, name
    assert "spinerank (both phases, default): SpineRankNet" in text and "ce (phase 1 only): inverse-frequency" in text

def test_ce_is_class_weighted_cross_entropy_averaged_over_tasks():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(7, 3, generator=g), torch.randn(7, 4, generator=g)]
    grades = torch.tensor([[0, -1], [1, 3], [2, 0], [-1, 1], [1, 1], [0, 2], [2, -1]])
    weights = [torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 3.0, 0.2])]
    expected = torch.stack([F.cross_entropy(logits[t][grades[:, t] >= 0], grades[grades[:, t] >= 0, t],
                                            weight=weights[t]) for t in range(2)]).mean()
    torch.testing.assert_close(methods.get("ce").phase1_loss(logits, grades, weights), expected)
    probs = methods.get("ce").class_probs(logits[1])
    torch.testing.assert_close(probs, torch.softmax(logits[1], 1))
    assert torch.equal(methods.get("ce").grade_from_probs(probs), logits[1].argmax(1))


# CORN by hand, task 0 (K = 3, two logits a, b per sample), grades y = (0, 1, 2, missing):
#   k = 0, all labelled samples, target 1[y > 0] = (0, 1, 1): softplus(a0), softplus(-a1), softplus(-a2)
#   k = 1, samples with y >= 1, target 1[y > 1] = (0, 1):     softplus(b1), softplus(-b2)
# BCE with logits is softplus(-x) for target 1 and softplus(x) for target 0. With
# a = (0, ln 3, -ln 3), b = (5, 0, ln 3) the terms are ln 2, ln 4/3, ln 4, ln 2, ln 4/3
# (b0 = 5 is outside every subset; the missing sample's logits are ignored).
CORN_TASK0 = torch.tensor([[0.0, 5.0], [LN3, 0.0], [-LN3, LN3], [9.0, -9.0]])
CORN_Y0 = [0, 1, 2, -1]
# Task 1 (K = 2, one logit x), y = (1, 0, missing, 0), x = (ln 3, 0, 7, -ln 3): only k = 0,
# targets (1, 0, 0): softplus(-ln 3) = ln 4/3, softplus(0) = ln 2, softplus(-ln 3) = ln 4/3.
CORN_TASK1 = torch.tensor([[LN3], [0.0], [7.0], [-LN3]])
CORN_Y1 = [1, 0, -1, 0]


def _corn_batch():
    return [CORN_TASK0, CORN_TASK1], torch.tensor([CORN_Y0, CORN_Y1]).T


def test_corn_loss_by_hand():
    logits, grades = _corn_batch()
    ones = [torch.ones(3), torch.ones(2)]
    task0 = math.log(2 * (4 / 3) * 4 * 2 * (4 / 3)) / 5  # five terms over the summed subset size 3 + 2
    task1 = (math.log(4 / 3) + math.log(2) + math.log(4 / 3)) / 3
    loss = methods.get("corn").phase1_loss(logits, grades, ones)
    assert loss.item() == pytest.approx((task0 + task1) / 2, rel=1e-6)
    # Unweighted means the weights passed in are not used.
    assert methods.get("corn").phase1_loss(logits, grades, [torch.tensor([1.0, 2.0, 4.0]), torch.ones(2)]) \
        .item() == pytest.approx(loss.item(), rel=1e-6)


def test_corn_class_weighted_loss_by_hand():
    logits, grades = _corn_batch()
    # Task 0, w = (1, 2, 4) by true class: sample 0 (w 1) ln 2; sample 1 (w 2) ln 4/3 and ln 2;
    # sample 2 (w 4) ln 4 and ln 4/3; divided by the weights of the five terms, 1 + 2 + 2 + 4 + 4.
    task0 = (math.log(2) + 2 * math.log(4 / 3) + 2 * math.log(2) + 4 * math.log(4) + 4 * math.log(4 / 3)) / 13
    # Task 1, w = (0.5, 3): y = 1 (w 3) ln 4/3; y = 0 (w 0.5) ln 2 and ln 4/3.
    task1 = (3 * math.log(4 / 3) + 0.5 * math.log(2) + 0.5 * math.log(4 / 3)) / 4
    loss = methods.get("corn", class_weighted=True).phase1_loss(
        logits, grades, [torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 3.0])])
    assert loss.item() == pytest.approx((task0 + task1) / 2, rel=1e-6)


def test_corn_probabilities_and_grades_by_hand():
    corn = methods.get("corn")
    # P(y > 0) = sigmoid(a), P(y > 1) = sigmoid(a) sigmoid(b); sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
    logits = torch.tensor([[LN3, 0.0], [LN3, LN3], [-LN3, 5.0]], dtype=torch.float64)
    s5 = 1 / (1 + math.exp(-5))
    expected = torch.tensor([[1 / 4, 3 / 4 - 3 / 8, 3 / 8],  # cumulative (3/4, 3/8): grade 1
                             [1 / 4, 3 / 4 - 9 / 16, 9 / 16],  # (3/4, 9/16): grade 2
                             [3 / 4, 1 / 4 - s5 / 4, s5 / 4]], dtype=torch.float64)  # (1/4, s5/4): grade 0
    probs = corn.class_probs(logits).double()
    torch.testing.assert_close(probs, expected, rtol=1e-6, atol=1e-7)
    assert corn.grade_from_probs(probs).tolist() == [1, 2, 0]
    # Averaged over views, the grade still follows the averaged cumulative probabilities:
    # views 0 and 2 average to P(y > 0) = 1/2 (not above 0.5): grade 0.
    assert corn.grade_from_probs((probs[[0]] + probs[[2]]) / 2).tolist() == [0]
    # ... views 0 and 1 to (3/4, 15/32): grade 1.
    assert corn.grade_from_probs((probs[[0]] + probs[[1]]) / 2).tolist() == [1]


@pytest.mark.parametrize("normalize", ["discs", "weights"])
def test_mae_loss_matches_a_plain_computation(normalize):
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g)]
    grades = torch.tensor([[0, 2], [3, -1], [1, 0], [-1, 1], [2, 2], [3, 0]])
    weights = [torch.tensor([0.5, 1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 0.25])]
    expected = []
    for t in range(2):
        num = den = 0.0
        for i in range(6):
            y = int(grades[i, t])
            if y < 0:
                continue
            p = torch.softmax(logits[t][i], 0).tolist()
            mean = sum(k * p[k] for k in range(len(p)))
            num += weights[t][y].item() * abs(mean - y)
            den += weights[t][y].item() if normalize == "weights" else 1.0  # published: the number of discs
        expected.append(num / den)
    mae = methods.get("mae") if normalize == "discs" else methods.get("mae", normalize="weights")
    loss = mae.phase1_loss(logits, grades, weights)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_method_options_reach_the_method_and_are_checked(tmp_path):
    from spinerank import config as config_lib

    config = config_lib.resolve("tiny", None, method="mae", method_options={"normalize": "weights"})
    assert methods.for_config(config).normalize == "weights"
    assert methods.for_config(config_lib.resolve("tiny", None, method="mae")).normalize == "discs"
    with pytest.raises(ValueError, match=r"config: method 'mae': normalize must be 'discs' or 'weights'"):
        config_lib.resolve("tiny", None, method="mae", method_options={"normalize": "kind"})
    with pytest.raises(ValueError, match=r"config: method 'ce' has no option\(s\) normalize"):
        config_lib.resolve("tiny", None, method="ce", method_options={"normalize": "discs"})


def test_mae_grade_rounds_the_expected_grade_half_up():
    mae = methods.get("mae")
    probs = torch.tensor([[0.5, 0.0, 0.5, 0.0],  # E = 1: 1
                          [0.5, 0.0, 0.0, 0.5],  # E = 1.5: 2
                          [0.0, 0.75, 0.25, 0.0],  # E = 1.25: 1
                          [0.0, 0.0, 0.0, 1.0],  # E = 3: 3
                          [1.0, 0.0, 0.0, 0.0]])
    assert mae.grade_from_probs(probs).tolist() == [1, 2, 1, 3, 0]


def test_loss_of_a_batch_without_labels_is_zero_with_a_gradient():
    logits = [torch.randn(3, 4, requires_grad=True), torch.randn(3, 3, requires_grad=True)]
    grades = torch.full((3, 2), -1)
    for name in ("ce", "corn", "mae"):
        method = methods.get(name)
        loss = method.phase1_loss([lt[:, :method.head_size(lt.shape[1])] for lt in logits], grades,
                                  [torch.ones(4), torch.ones(3)])
        loss.backward()
        assert loss.item() == 0.0 and logits[0].grad.abs().sum() == 0


@pytest.mark.parametrize("name,reference_options", [
    ("ranknet", dict(pair_fn="logistic", sigma=2.0, lambda_sim=0.0, pair_normalization="all")),
    ("deeprank", dict(pair_fn="squared_hinge", margin_base=2.0, margin_scale=0.0, lambda_sim=0.0,
                      pair_normalization="all")),
    ("spinerank", dict()),
])
def test_ranking_options_give_the_spec_baselines(batch, name, reference_options):
    ks = [5, 4, 3]
    scores, grades = batch(24, ks, seed=3)
    fused = spinerank_ext.PairwiseRankLoss(ks, **methods.get(name).loss_options())(scores, grades)
    expected = spinerank_ext.reference.pairwise_rank_loss(scores, grades, ks, **reference_options)
    torch.testing.assert_close(fused, expected)
    # ... and the options matter: the defaults give another value.
    if reference_options:
        assert not torch.isclose(fused, spinerank_ext.reference.pairwise_rank_loss(scores, grades, ks))
    assert methods.get("ce").loss_options() == {}


@pytest.mark.parametrize("name", ["ranknet", "deeprank"])
def test_ranking_baselines_are_the_published_losses(batch, name):
    from conftest import published

    ks = [5, 4, 3]
    scores, grades = batch(20, ks, seed=4)
    fused = spinerank_ext.PairwiseRankLoss(ks, **methods.get(name).loss_options())(scores, grades)
    torch.testing.assert_close(fused, published(scores, grades, ks, name), rtol=1e-12, atol=1e-12)


def test_ranknet_by_hand():
    # Three discs of one task (K = 3), grades 2, 0, 0 and scores 1, 3, 2: two ordinal
    # pairs of g = 1 (weight S g = 10) with r delta = -2 and -1, one same-grade pair
    # that adds 0 but counts: (10 softplus(2 * 2) + 10 softplus(2 * 1)) / 3, sigma = 2.
    loss = spinerank_ext.PairwiseRankLoss([3], **methods.get("ranknet").loss_options())(
        torch.tensor([[1.0], [3.0], [2.0]], dtype=torch.float64), torch.tensor([[2], [0], [0]]))
    assert loss.item() == pytest.approx(10 * (math.log1p(math.exp(4)) + math.log1p(math.exp(2))) / 3)


def test_paper_text_variants_through_method_options(batch):
    from spinerank import config as config_lib

    config = config_lib.resolve("tiny", None, method="deeprank",
                                method_options={"lambda_sim": 0.25, "pair_normalization": "per_kind"})
    options = methods.for_config(config).loss_options()
    assert options == dict(pair_fn="squared_hinge", margin_base=2.0, margin_scale=0.0, lambda_sim=0.25,
                           pair_normalization="per_kind")
    with pytest.raises(ValueError, match=r"config: pair_normalization must be one of"):
        config_lib.resolve("tiny", None, method="ranknet", method_options={"pair_normalization": "mean"})
    with pytest.raises(ValueError, match=r"config: method 'deeprank': options \{'lambda_sim': 'abc'\}: could not "
                                         r"convert string to float"):
        config_lib.resolve("tiny", None, method="deeprank", method_options={"lambda_sim": "abc"})
    with pytest.raises(ValueError, match=r"method 'ranknet' has no option\(s\) normalize"):
        methods.get("ranknet", normalize="discs")


# -- training ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=10)


@pytest.mark.parametrize("name", methods.METHOD_NAMES)
def test_one_epoch_per_phase_for_each_method(cohort, tmp_path, name):
    trainer = Trainer(tiny_config(cohort, tmp_path, method=name, epochs_phase1=1, epochs_phase2=1,
                                  corn_class_weights=name == "corn"))
    trainer.run()
    ranking = methods.get(name).ranking
    assert [h["phase"] for h in trainer.history] == ([1, 2] if ranking else [1])
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["method"] == best["config"]["method"] == name and best["phase"] == (2 if ranking else 1)
    heads = [lt.shape[1] for lt in trainer.model(torch.zeros(2, 1, 4, 16, 20))["logits"]]
    assert heads == [methods.get(name).head_size(k) for k in trainer.tasks.num_grades]
    logged = trainer.history[0]
    assert {"mean_balanced_accuracy", "mean_class_qwk"} <= set(logged)
    assert ("mean_qwk" in logged) == ranking
    assert logged["selection_metric"] == logged["mean_balanced_accuracy"]


@pytest.fixture(scope="module")
def ce_source(cohort, tmp_path_factory):
    """The phase-1 model of a one-epoch ce run."""
    folder = tmp_path_factory.mktemp("ce")
    Trainer(tiny_config(cohort, folder, method="ce", epochs_phase1=1)).run()
    return folder / "best_phase1.pt"


def test_init_phase1_trains_phase2_from_the_given_model(cohort, tmp_path, ce_source):
    source = ce_source
    # Learning rate 0: phase 2 leaves the weights where it started, the given ones.
    trainer = Trainer(tiny_config(cohort, tmp_path / "rank", method="ranknet", init_phase1=str(source),
                                  epochs_phase2=1, lr_encoder_phase2=0.0, lr_heads_phase2=0.0))
    trainer.run()
    assert [(h["phase"], h["epoch"]) for h in trainer.history] == [(2, 1)]
    assert (tmp_path / "rank" / "best_phase1.pt").read_bytes() == source.read_bytes()
    given = torch.load(source, weights_only=False)["model"]
    trained = dict(trainer.model.named_parameters())
    for key in [k for k in trained if not k.startswith("rank_heads")]:
        assert torch.equal(trained[key], given[key]), key
    assert torch.load(tmp_path / "rank" / "best.pt", weights_only=False)["phase"] == 2


def test_init_phase1_refuses_a_model_that_does_not_fit(cohort, tmp_path, ce_source):
    source = ce_source
    with pytest.raises(ValueError, match=r"init_phase1: .* has width 4, this run 8; they must match"):
        Trainer(tiny_config(cohort, tmp_path / "a", method="spinerank", init_phase1=str(source), width=8)).run()
    Trainer(tiny_config(cohort, tmp_path / "corn", method="corn", epochs_phase1=1)).run()
    with pytest.raises(ValueError, match=r"trained with method 'corn', whose classification heads"):
        Trainer(tiny_config(cohort, tmp_path / "b", method="deeprank",
                            init_phase1=str(tmp_path / "corn" / "best.pt"))).run()
    with pytest.raises(ValueError, match=r"init_phase1 starts phase 2, which method 'mae' does not have"):
        tiny_config(cohort, tmp_path / "c", method="mae", init_phase1=str(source))


def test_cli_method_flags_and_errors(cohort, tmp_path, capsys, ce_source):
    common = ["train", "--data", str(cohort), "--config", str(tmp_path / "c.json"), "--quiet"]
    (tmp_path / "c.json").write_text(json.dumps(dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20],
                                                     batch_size=8, epochs_phase1=1, epochs_phase2=1)))
    assert main([*common, "--out", str(tmp_path / "bad"), "--method", "svm"]) == 2
    assert "config: method must be one of ce, corn, mae, ranknet, deeprank, spinerank, got 'svm'" \
        in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "rank"), "--method", "deeprank",
                 "--init-phase1", str(ce_source)]) == 0
    saved = json.loads((tmp_path / "rank" / "config.json").read_text())
    assert saved["method"] == "deeprank" and saved["init_phase1"] == str(ce_source)
    lines = (tmp_path / "rank" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["phase"] for line in lines] == [2]
    assert main([*common, "--out", str(tmp_path / "missing"), "--method", "ranknet",
                 "--init-phase1", str(tmp_path / "nowhere.pt")]) == 2
    assert "nowhere.pt does not exist" in capsys.readouterr().err


def test_init_phase1_run_resumes_to_the_same_end(cohort, tmp_path, ce_source):
    whole, resumed = whole_and_resumed(cohort, tmp_path, 1, method="spinerank", init_phase1=str(ce_source),
                                       epochs_phase2=2, max_pairs=20)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [(h["phase"], h["epoch"]) for h in resumed.history] == [(2, 1), (2, 2)]
