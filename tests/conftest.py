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
