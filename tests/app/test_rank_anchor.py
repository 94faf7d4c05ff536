"""``rank_anchor``: the phase-2 anchor term that pulls each labelled score toward
its grade's centre y * S / (K - 1) (methods.grade_anchor_loss), its setting, its
flags, and a tiny phase-2 run that records it."""
import json

import pytest
import torch
from conftest import tiny_config, write_cohort

from spinerank import cli
from spinerank import config as config_lib
from spinerank.cli import main
from spinerank.methods import grade_anchor_loss
from spinerank.train import Trainer

S = 10.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)


def test_the_term_against_a_hand_computed_case():
    # Task 0: K = 3 (centres 0, 5, 10; step 5). Task 1: K = 5 (centres 0, 2.5, 5, 7.5, 10; step 2.5).
    # Task 2: K = 4, no label in the batch: it does not count.
    scores = torch.tensor([[1.0, 5.0, 3.0],
                           [4.0, 9.0, 7.0],
                           [9.0, 0.0, 1.0],
                           [2.0, 6.0, 5.0]], dtype=torch.float64)
    grades = torch.tensor([[0, 1, -1],
                           [1, -1, -1],
                           [-1, 0, -1],
                           [2, 3, -1]])
    task0 = ((1 / 5 - 0) ** 2 + (4 / 5 - 1) ** 2 + (2 / 5 - 2) ** 2) / 3  # 0.04 + 0.04 + 2.56
    task1 = ((5 / 2.5 - 1) ** 2 + (0 / 2.5 - 0) ** 2 + (6 / 2.5 - 3) ** 2) / 3  # 1 + 0 + 0.36
    expected = (task0 + task1) / 2
    assert expected == pytest.approx((2.64 / 3 + 1.36 / 3) / 2)
    value = grade_anchor_loss(scores, grades, [3, 5, 4], S)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # The same for the num_grades as a tensor, and in float32.
    as_tensor = grade_anchor_loss(scores.float(), grades, torch.tensor([3.0, 5.0, 4.0]), S)
    assert as_tensor.dtype == torch.float32 and as_tensor.item() == pytest.approx(expected, rel=1e-6)
    # A score at its grade's centre adds nothing; unit-free: the same at another scale.
    centred = torch.tensor([[0.0, 2.5], [5.0, 7.5], [10.0, 10.0]])
    assert grade_anchor_loss(centred, torch.tensor([[0, 1], [1, 3], [2, 4]]), [3, 5], S).item() == 0.0
    assert grade_anchor_loss(scores * 3, grades, [3, 5, 4], 3 * S).item() == pytest.approx(expected, rel=1e-12)


def test_low_precision_scores_are_computed_in_float32():
    scores = torch.tensor([[1.0, 5.0], [4.0, 9.0]], dtype=torch.bfloat16)
    grades = torch.tensor([[0, 1], [1, 4]])
    value = grade_anchor_loss(scores, grades, [3, 5], S)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(grade_anchor_loss(scores.float(), grades, [3, 5], S).item())


def test_no_label_gives_zero_with_a_zero_gradient():
    scores = torch.rand(4, 2, requires_grad=True)
    value = grade_anchor_loss(scores, torch.full((4, 2), -1), [3, 5], S)
    value.backward()
    assert value.item() == 0.0 and torch.equal(scores.grad, torch.zeros(4, 2))
    empty = torch.zeros(0, 2, requires_grad=True)
    assert grade_anchor_loss(empty, torch.zeros(0, 2, dtype=torch.long), [3, 5], S).item() == 0.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"must both be \(B, T\)"):
        grade_anchor_loss(torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.long), [3, 5], S)
    with pytest.raises(ValueError, match="num_grades for 2 tasks"):
        grade_anchor_loss(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), [3, 5, 4], S)


def test_its_gradient_pulls_each_score_toward_its_grade_centre():
    g = torch.Generator().manual_seed(0)
    ks = [3, 5, 4]
    scores = (torch.rand(16, 3, generator=g, dtype=torch.float64) * S).requires_grad_()
    grades = torch.stack([torch.randint(0, k, (16,), generator=g) for k in ks], 1)
    grades[torch.rand(16, 3, generator=g) < 0.3] = -1
    grades[:, 2] = -1  # a task without labels
    grade_anchor_loss(scores, grades, ks, S).backward()
    spacing = torch.tensor([S / (k - 1) for k in ks], dtype=torch.float64)
    centre = grades.clamp(min=0) * spacing
    labelled = grades >= 0
    # d/ds of mean_t mean_i ((s - c) / step)^2 = 2 (s - c) / step^2 / (n_t * tasks with labels)
    expected = 2 * (scores.detach() - centre) / spacing ** 2 / labelled.sum(0).clamp(min=1) / 2 * labelled
    torch.testing.assert_close(scores.grad, expected)
    # A small descent step moves every labelled score closer to its centre and leaves the others.
    stepped = scores.detach() - 0.5 * scores.grad
    moved = labelled & (scores.detach() != centre)
    assert moved.sum() > 10
    assert ((stepped - centre).abs() < (scores.detach() - centre).abs())[moved].all()
    assert torch.equal(stepped[~labelled], scores.detach()[~labelled])


def test_the_setting_is_validated():
    assert config_lib.TrainConfig().rank_anchor == 0.0
    for preset in config_lib.PRESETS:
        assert config_lib.resolve(preset).rank_anchor == 0.0
    assert config_lib.resolve("tiny", rank_anchor=0.5, method="deeprank").rank_anchor == 0.5
    for bad in (-0.1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="rank_anchor must be a finite number >= 0"):
            config_lib.resolve("tiny", rank_anchor=bad)
    for method in ("ce", "corn", "mae"):
        with pytest.raises(ValueError, match=f"rank_anchor .* method '{method}' does not have"):
            config_lib.resolve("tiny", method=method, rank_anchor=0.5)
        assert config_lib.resolve("tiny", method=method, rank_anchor=0.0).rank_anchor == 0.0


def test_config_round_trip(tmp_path):
    config = config_lib.resolve("tiny", rank_anchor=0.25)
    config_lib.save(config, tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["rank_anchor"] == 0.25
    assert config_lib.TrainConfig(**config_lib.load_file(tmp_path / "config.json")) == config
    # As a --config file.
    (tmp_path / "c.yaml").write_text("rank_anchor: 0.75\n")
    assert config_lib.resolve("tiny", str(tmp_path / "c.yaml")).rank_anchor == 0.75
    assert config_lib.resolve("tiny", str(tmp_path / "c.yaml"), rank_anchor=0.1).rank_anchor == 0.1


def test_cli_flags_parse():
    parser = cli.parser()
    assert parser.parse_args(["train", "--out", "r"]).rank_anchor is None
    assert parser.parse_args(["train", "--out", "r", "--rank-anchor", "0.5"]).rank_anchor == 0.5
    for command in (["compare", "--data", "d", "--out", "o"], ["ablate", "--what", "heads"]):
        assert parser.parse_args(command).rank_anchor is None
        assert parser.parse_args([*command, "--rank-anchor", "2"]).rank_anchor == 2.0
    helps = {name: " ".join(sub.format_help().split()) for name, sub in
             next(a for a in parser._actions if a.choices and "train" in a.choices).choices.items()}
    for name in ("train", "compare", "ablate"):
        assert "--rank-anchor LAMBDA" in helps[name] and "(default: 0, off)" in helps[name]


class _Stop(RuntimeError):
    pass


def test_compare_and_ablate_pass_it_to_the_ranking_runs_only(tmp_path, monkeypatch):
    import spinerank.ablate
    import spinerank.compare
    import spinerank.evaluate

    trained = {}

    def record(run, config, progress):
        trained[run.name] = config

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(spinerank.compare, "_train", record)
    monkeypatch.setattr(spinerank.ablate, "_train", record)
    monkeypatch.setattr(spinerank.evaluate, "evaluate", stop)
    data = str(tmp_path / "data")
    with pytest.raises(_Stop):
        main(["compare", "--data", data, "--out", str(tmp_path / "c"), "--methods", "ce", "deeprank", "spinerank",
              "--preset", "tiny", "--rank-anchor", "0.5", "--quiet"])
    assert {name: c.rank_anchor for name, c in trained.items()} == {"ce": 0.0, "deeprank": 0.5, "spinerank": 0.5}
    trained.clear()
    (tmp_path / "c.json").write_text(json.dumps({"rank_anchor": 0.3}))  # also from a --config file
    with pytest.raises(_Stop):
        main(["ablate", "--what", "heads", "--data", data, "--out", str(tmp_path / "a"), "--heads", "mlp", "linear",
              "--preset", "tiny", "--config", str(tmp_path / "c.json"), "--quiet"])
    assert {name: c.rank_anchor for name, c in trained.items()} == {"ce": 0.0, "mlp": 0.3, "linear": 0.3}


def test_ablate_thresholds_refuses_the_flag(tmp_path, capsys):
    assert main(["ablate", "--what", "thresholds", "--run", str(tmp_path), "--rank-anchor", "1", "--quiet"]) == 2
    assert "--rank-anchor apply to --what heads" in capsys.readouterr().err


def test_zero_is_exactly_the_pairwise_loss_and_lambda_adds_the_term(cohort, tmp_path):
    trainer = Trainer(tiny_config(cohort, tmp_path / "run", dropout=0.0))
    assert trainer.config.rank_anchor == 0.0
    volumes, grades = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=12)))
    volumes = volumes[:, :, :4, :16, :20]
    trainer.model.train()

    def loss_and_grads(anchor):
        trainer.config.rank_anchor = anchor
        trainer.model.zero_grad()
        out = trainer.model(volumes)
        loss = trainer._loss(2, out, grades)
        loss.backward()
        return out, loss, [p.grad.clone() for p in trainer.model.rank_parameters()]

    _, loss, grads = loss_and_grads(0.0)
    trainer.model.zero_grad()
    plain = trainer.rank_loss(trainer.model(volumes)["scores"].float(), grades)  # phase 2 before the setting
    plain.backward()
    assert torch.equal(loss, plain)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, trainer.model.rank_parameters()))

    out, loss, grads_anchor = loss_and_grads(0.5)
    scores = out["scores"].float()
    expected = trainer.rank_loss(scores, grades) + 0.5 * grade_anchor_loss(scores, grades, trainer.tasks.num_grades,
                                                                           S)
    torch.testing.assert_close(loss, expected)
    assert not all(torch.equal(a, b) for a, b in zip(grads, grads_anchor))


def test_a_tiny_phase2_run_records_the_setting_and_resumes_with_it(cohort, tmp_path, capsys):
    # Through the CLI: phase 1 and phase 2 with the anchor term; config.json has it, --resume keeps it.
    (tmp_path / "c.json").write_text(json.dumps(dict(width=4, volume_shape=[6, 20, 24], input_shape=[4, 16, 20],
                                                     batch_size=8, epochs_phase1=1, epochs_phase2=2, min_epochs=1)))
    run = tmp_path / "run"
    args = ["train", "--data", str(cohort), "--out", str(run), "--config", str(tmp_path / "c.json"), "--quiet"]
    assert main([*args, "--rank-anchor", "0.5"]) == 0
    assert json.loads((run / "config.json").read_text())["rank_anchor"] == 0.5
    assert torch.load(run / "best.pt", weights_only=False)["config"]["rank_anchor"] == 0.5
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(m["phase"], m["epoch"]) for m in lines] == [(1, 1), (2, 1), (2, 2)]
    assert all(m["train_loss"] > 0 for m in lines)
    capsys.readouterr()
    assert main([*args, "--resume", "--rank-anchor", "0.7"]) == 2
    assert "rank_anchor (0.5 -> 0.7)" in capsys.readouterr().err
    assert main([*args, "--resume", "--rank-anchor", "0"]) == 2  # 0 given is a change too
    assert "rank_anchor (0.5 -> 0.0)" in capsys.readouterr().err
    assert main([*args, "--resume", "--rank-anchor", "0.5"]) == 0  # finished: nothing left to do
    assert main([*args, "--resume"]) == 0
