"""SpineRankNet shapes for both presets, metrics against scikit-learn, configuration."""
import json

import numpy as np
import pytest
import torch

from spinerank import config as config_lib
from spinerank.augmentation import swap_flipped
from spinerank.metrics import balanced_accuracy, fixed_thresholds, grades_from_scores, quadratic_weighted_kappa
from spinerank.model import build_model
from spinerank.tasks import TaskTable

KS = TaskTable().num_grades


@pytest.mark.parametrize("preset,batch", [("tiny", 2), ("paper", 1)])
def test_model_output_shapes(preset, batch):
    config = config_lib.resolve(preset)
    model = build_model(config, KS).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, *config.input_shape))
    assert [tuple(lt.shape) for lt in out["logits"]] == [(batch, k) for k in KS]
    assert out["scores"].shape == (batch, 11)
    assert out["embedding"].shape == (batch, 8 * config.width)
    assert ((out["scores"] >= 0) & (out["scores"] <= 10)).all()


def test_ranking_heads_on_the_embedding():
    config = config_lib.resolve("tiny", rank_on="embedding")
    out = build_model(config, KS)(torch.randn(2, 1, *config.input_shape))
    assert out["scores"].shape == (2, 11)


def test_model_rejects_wrong_input():
    model = build_model(config_lib.resolve("tiny"), KS)
    with pytest.raises(ValueError, match=r"takes \(B, 1, D, H, W\) volumes, got shape \(2, 8, 40, 64\)"):
        model(torch.randn(2, 8, 40, 64))


def test_metrics_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for K in (2, 3, 4, 5):
        y = rng.integers(0, K, 200)
        p = np.clip(y + rng.integers(-1, 2, 200), 0, K - 1)
        assert balanced_accuracy(y, p) == pytest.approx(sklearn.balanced_accuracy_score(y, p))
        assert quadratic_weighted_kappa(y, p, K) == pytest.approx(
            sklearn.cohen_kappa_score(y, p, weights="quadratic", labels=list(range(K))))


def test_fixed_thresholds_and_grades():
    np.testing.assert_allclose(fixed_thresholds(5, 10.0), [1.25, 3.75, 6.25, 8.75])
    # A score on a threshold stays below it: a grade counts the thresholds strictly below.
    assert grades_from_scores([0.0, 1.25, 1.3, 4.0, 10.0], fixed_thresholds(5)).tolist() == [0, 0, 1, 2, 4]


def test_flip_swaps_left_and_right_labels():
    perm = TaskTable().swap_permutation()
    assert perm[6] == 7 and perm[7] == 6
    grades = torch.arange(22).reshape(2, 11)
    out = swap_flipped(grades, torch.tensor([True, False]), perm)
    assert out[0, 6] == 7 and out[0, 7] == 6 and torch.equal(out[1], grades[1])
    assert torch.equal(out[0, :6], grades[0, :6]) and torch.equal(out[0, 8:], grades[0, 8:])


def test_config_precedence_and_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "tiny", "batch_size": 4, "epochs_phase1": 9}))
    config = config_lib.resolve(None, str(path), epochs_phase1=3)
    assert (config.width, config.batch_size, config.epochs_phase1) == (16, 4, 3)  # preset < file < flags
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("widht: 3\n")
    with pytest.raises(ValueError, match=r"unknown config setting\(s\) in .*c.yaml: widht"):
        config_lib.resolve(None, str(yaml_path))
    with pytest.raises(ValueError, match="input_shape .* must fit in volume_shape"):
        config_lib.resolve("tiny", input_shape=(8, 64, 64))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config_lib.resolve("huge")
    tasks = [{"name": "A", "num_grades": 3}, {"name": "B", "num_grades": 1}]
    with pytest.raises(ValueError, match="task 'B': num_grades must be an int >= 2"):
        config_lib.resolve("tiny", tasks=tasks)
