import contextlib
import itertools
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Test the installed package (with its compiled library), never the source tree
# that `python -m pytest` would put first on sys.path.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]

# The suite tests the compiled ops: fail loudly instead of falling back to the reference.
os.environ.setdefault("SPINERANK_EXT_REQUIRE_COMPILED", "1")
# A cold torch.compile costs 15-20 s on 2 cores; keep its cache inside the checkout.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".torchinductor"))

import pytest  # noqa: E402
import torch  # noqa: E402

#: The default task table of SPEC §2.
TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)

# ---------------------------------------------------------------------------
# CUDA tests: each op's tests under tests/ext/ (its file, or its folder's
# test_cuda.py) have a TestCuda class carrying CUDA_TESTS. SPINERANK_TEST_CUDA_AS=cpu runs them with "cpu" in place of
# "cuda": the comparisons are then trivial, but the tests themselves are
# exercised without a GPU (CI: SPINERANK_TEST_CUDA_AS=cpu pytest tests/ext -m cuda).

CUDA = os.environ.get("SPINERANK_TEST_CUDA_AS", "cuda")
needs_cuda = pytest.mark.skipif(CUDA == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")
cuda_only = pytest.mark.skipif(CUDA != "cuda", reason="CUDA-specific behaviour")
#: The marks of a CUDA test: ``cuda`` (``pytest -m cuda`` selects them) and skipped without a GPU.
CUDA_TESTS = [pytest.mark.cuda, needs_cuda]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: a CUDA test (the CPU stands in with SPINERANK_TEST_CUDA_AS=cpu)")


@contextlib.contextmanager
def op_setting(op, value):
    """Sets one of the ops' path thresholds (an op that sets a value and returns
    the previous one, e.g. torch.ops.spinerank_ext._sorted_pairs_min_n) for the
    block, and restores it."""
    before = op(value)
    try:
        yield
    finally:
        op(before)


def make_batch(B, ks, *, seed=0, dtype=torch.float64, missing=0.2, ties=True, device="cpu"):
    """Random scores and grades with missing grades and, optionally, tied scores.

    Ties come from rounding scores to a coarse grid: equal scores, equal deltas
    and equal hardness values all occur, which exercises every tie rule.
    """
    g = torch.Generator().manual_seed(seed)
    T = len(ks)
    scores = torch.rand(B, T, generator=g, dtype=torch.float64) * 10
    if ties:
        scores = torch.round(scores * 2) / 2
    grades = torch.stack([torch.randint(0, k, (B,), generator=g) for k in ks], dim=1)
    grades[torch.rand(B, T, generator=g) < missing] = -1
    return scores.to(dtype).to(device), grades.to(device)


@pytest.fixture
def batch():
    return make_batch


def fused_loss_and_grad(scores, grades, ks, **kw):
    """The fused loss of a detached copy of scores, the gradient of its sum and the pair counts."""
    import spinerank_ext as se

    s = scores.detach().clone().requires_grad_()
    loss, counts = se.pairwise_rank_loss(s, grades, ks, return_counts=True, **kw)
    (g,) = torch.autograd.grad(loss.sum(), s)
    return loss.detach(), g, counts


def op_args(scores, grades, ks, *, max_pairs=-1, seed=None, pair_fn="squared_hinge", reduction="mean"):
    """The arguments of a direct torch.ops.spinerank_ext.pairwise_rank_loss call with
    the default loss parameters (tests/ext/pairwise_rank_loss/: registration, sorted pairs)."""
    return (scores, grades, list(ks), 10.0, 0.5, 1.5, 1.0, 0.25, True, pair_fn, 1.0, max_pairs, 0.7,
            reduction, seed)


def spread_scores(B, T, seed):
    # Distinct, well-separated scores keep finite differences away from the
    # hinge's kink and from changes of the mined set.
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(B * T, generator=g).reshape(B, T).double() * 0.37 + torch.rand(B, T, generator=g, dtype=torch.float64) * 0.05)


def published(scores, grades, ks, kind, scale=10.0, sigma=2.0, margin=2.0, c2=0.25):
    """The published RankNet ("ranknet") or DeepRankSVM ("deeprank") loss, pair by pair
    (tests/ext/pairwise_rank_loss/test_pair_normalization.py; tests/app/test_methods.py)."""
    B, T = scores.shape
    per_task = []
    for t in range(T):
        total, count = scores.new_zeros(()), 0
        for i, j in itertools.combinations(range(B), 2):
            yi, yj = int(grades[i, t]), int(grades[j, t])
            if yi < 0 or yj < 0:
                continue
            count += 1
            d, delta = yi - yj, scores[i, t] - scores[j, t]
            w = scale * abs(d) / (ks[t] - 1)
            r = (d > 0) - (d < 0)
            if kind == "ranknet":
                if d != 0:
                    total = total + w * torch.nn.functional.softplus(-sigma * r * delta)
            else:
                p = 1.0 if d != 0 else 0.0
                total = total + w * (p * torch.clamp(margin - r * delta, min=0) ** 2 + c2 * (1 - p) * delta**2)
        if count:
            per_task.append(total / count)
    return torch.stack(per_task).mean()


# ---------------------------------------------------------------------------
# tta_views and augment (tests/ext/test_tta_views.py, test_augment.py, test_tta_views_and_augment.py)

#: The default TTA grid as the op takes it: flips, shifts_h, shifts_w, shifts_d.
GRID = ([False, True], [-16, 0, 16], [-16, 0, 16], [-1, 0, 1])


def vol5(N=2, C=1, D=7, H=20, W=24, dtype=torch.float32, device="cpu"):
    """A random (N, C, D, H, W) volume, seeded by N and D."""
    return torch.randn(N, C, D, H, W, generator=torch.Generator().manual_seed(N * 131 + D), dtype=dtype).to(device)


def augment_params(N, seed=0, device="cpu"):
    """(N, 7) augment parameters from sample_augment_params, seeded."""
    import spinerank_ext as se

    return se.sample_augment_params(N, torch.Generator().manual_seed(seed)).to(device)


def write_cohort(folder, subjects=20, shape=(20, 24, 6), seed=0, tasks=None):
    """A small random dataset folder in the SPEC §10 layout: labels.csv and
    volumes/<ivd_id>_<sequence>.npy, 1-2 discs per subject, T1 and T2 each,
    2 centres, ~10% missing labels. Returns the folder."""
    import csv
    import pathlib

    import numpy as np

    from spinerank.tasks import TaskTable

    tasks = tasks or TaskTable()
    folder = pathlib.Path(folder)
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ivd_id", "subject_id", "level", "sequence", "centre", *tasks.names])
        for s in range(subjects):
            for level in ["L4/L5", "L5/S1"][: 1 + s % 2]:
                ivd = f"s{s:03d}_{level.replace('/', '')}"
                grades = [int(rng.integers(k)) if rng.random() > 0.1 else "" for k in tasks.num_grades]
                for sequence in ("T1", "T2"):
                    np.save(folder / "volumes" / f"{ivd}_{sequence}.npy",
                            rng.standard_normal(shape).astype(np.float32))
                    writer.writerow([ivd, f"s{s:03d}", level, sequence, f"c{s % 2}", *grades])
    return folder


def tiny_config(data, out, **overrides):
    """A TrainConfig small enough for tests: width 4, (4, 16, 20) crops."""
    from spinerank import config as config_lib

    settings = dict(data=str(data), out=str(out), width=4, volume_shape=(6, 20, 24), input_shape=(4, 16, 20),
                    batch_size=8, epochs_phase1=2, epochs_phase2=2, patience=5, min_epochs=1,
                    aug_shift_h=2, aug_shift_w=2, aug_slice_shift=1, progress=False)
    settings.update(overrides)
    return config_lib.resolve("paper", None, **settings)


def write_latent(folder, seed=0):
    """latent.csv beside a write_cohort folder's labels.csv: a hidden severity per
    disc and task, like a synthetic cohort's. Returns the folder."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    with open(folder / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    names = list(rows[0])[5:]
    with open(folder / "latent.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ivd_id", *names])
        for ivd in sorted({r["ivd_id"] for r in rows}):
            writer.writerow([ivd, *np.round(rng.uniform(0, 3, len(names)), 3)])
    return folder


def whole_and_resumed(cohort, tmp_path, interrupt_after, **settings):
    """Two tiny runs with the same settings: one uninterrupted, one killed after
    ``interrupt_after`` epochs and resumed from last.pt. Returns both trainers."""
    import pytest

    from spinerank.train import Trainer

    whole = Trainer(tiny_config(cohort, tmp_path / "whole", **settings))
    whole.run()
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(cohort, tmp_path / "split", **settings)).run(interrupt_after=interrupt_after)
    resumed = Trainer(tiny_config(cohort, tmp_path / "split", **settings))
    resumed.run(resume=True)
    return whole, resumed


# ---------------------------------------------------------------------------
# Importer tests (test_import_*.py): crops checked as geometry


def axis_angle_deg(u, v):
    """The angle between two axes (either sign), in degrees."""
    import numpy as np

    return float(np.degrees(np.arccos(np.clip(abs(float(np.dot(u, v))), 0, 1))))


def read_csv_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def crop_world(image):
    """(LPS world point of every voxel of a NIfTI crop, shaped (H, W, D, 3); the
    LPS directions of its row, column and slice axes), through its affine."""
    import numpy as np

    from spinerank.importers.geometry import LPS_TO_RAS

    r, c, s = np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")
    ras = np.stack([r.ravel(), c.ravel(), s.ravel(), np.ones(r.size)], 1) @ image.affine.T
    lps = (ras[:, :3] @ LPS_TO_RAS.T).reshape(*image.shape, 3)
    axes = [LPS_TO_RAS @ image.affine[:3, m] / np.linalg.norm(image.affine[:3, m]) for m in range(3)]
    return lps, axes


# ---------------------------------------------------------------------------
# Evaluation and comparison tests (tests/app/test_evaluate.py, test_compare.py)

#: A test-time grid for the tiny runs' (6, 20, 24) volumes.
TTA = dict(tta_shifts_h=(-2, 0, 2), tta_shifts_w=(-2, 0, 2), tta_shifts_d=(-1, 0, 1))


def describe_figure(fig) -> dict:
    """What a report figure shows, read from the matplotlib figure itself: its
    title, per subplot the dashed horizontal lines (y values) and the line
    labels, the figure legends' texts and the colour bars' labels."""
    import numpy as np

    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]  # not the hidden spares
    dashed = []
    for ax in axes:
        ys = []
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            if line.get_linestyle() == "--" and y.size == 2 and y[0] == y[1] \
                    and tuple(line.get_xdata()) == (0, 1):  # an axhline
                ys.append(float(y[0]))
        dashed.append(ys)
    return {"title": fig._suptitle.get_text() if fig._suptitle else "",
            "dashed": dashed,
            "lines": [[line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
                      for ax in axes],
            "legend": [t.get_text() for legend in fig.legends for t in legend.get_texts()]
            + [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()],
            "colorbars": [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"],
            "texts": [[t.get_text() for t in ax.texts] for ax in axes],
            "titles": [ax.get_title() for ax in axes]}


@pytest.fixture
def figures(monkeypatch):
    """Every report figure saved while the test runs, described (describe_figure) by file name."""
    from spinerank import report

    seen = {}
    save = report._save

    def recording(fig, path, dpi):
        seen[pathlib.Path(path).name] = describe_figure(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(report, "_save", recording)
    return seen


def key_phrase(pattern):
    """The part of an expected error message (a regex) that every layer must say.

    The public API's checks run first (spinerank_ext/_validate.py, also in the
    fake kernels) and their full message is what users see; the C++ checks of
    the op are the last line, for calls through torch.ops, and must name the
    same problem. Messages read "<what must hold>, got <what came>": the key
    phrase is the first part, since each layer prints values its own way.
    """
    return pattern.split(", got", 1)[0]
