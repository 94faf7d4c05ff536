"""The hidden severity of the synthetic cohort (see the package docstring, "The hidden
severity"): per task a model of the grade proportions and the factor loadings, and the
monotone map of a standard-normal z to the latent severity s on the grade scale."""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np

from ..tasks import Task, TaskTable

#: standard deviation of the rater's reading error, in units of the Gaussian z
RATER_SIGMA = 0.2
#: probability that one (IVD, task) grade is missing
MISSING_RATE = 0.03


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """How the hidden severity of one task is drawn."""

    #: target proportion of grade 0 (after rater noise); higher grades decrease geometrically
    normal: float
    #: loadings on the (subject, disc, posterior complex, bilateral foramen) factors
    loadings: tuple[float, float, float, float]
    #: multiplier of the level shift
    level: float = 1.0
    #: ratio between the proportions of consecutive abnormal grades
    ratio: float = 0.55

    def grade_distribution(self, num_grades: int) -> np.ndarray:
        w = self.ratio ** np.arange(num_grades - 1)
        return np.concatenate([[self.normal], (1.0 - self.normal) * w / w.sum()])


TASK_MODELS: dict[str, TaskModel] = {
    "Pfirrmann": TaskModel(0.65, (0.45, 0.60, 0.00, 0.00)),
    "DiscNarrowing": TaskModel(0.70, (0.40, 0.60, 0.00, 0.00)),
    "CentralCanalStenosis": TaskModel(0.85, (0.35, 0.30, 0.50, 0.00)),
    "Spondylolisthesis": TaskModel(0.92, (0.30, 0.30, 0.00, 0.00), level=1.5),
    "UpperEndplateDefect": TaskModel(0.80, (0.30, 0.45, 0.00, 0.00)),
    "LowerEndplateDefect": TaskModel(0.82, (0.30, 0.45, 0.00, 0.00)),
    "ForaminalStenosisLeft": TaskModel(0.78, (0.35, 0.30, 0.30, 0.50)),
    "ForaminalStenosisRight": TaskModel(0.78, (0.35, 0.30, 0.30, 0.50)),
    "Herniation": TaskModel(0.86, (0.30, 0.40, 0.45, 0.00)),
    "AnteriorBulging": TaskModel(0.72, (0.45, 0.45, 0.00, 0.00)),
    "PosteriorBulging": TaskModel(0.68, (0.35, 0.40, 0.50, 0.00)),
}
_KNOWN = tuple(TASK_MODELS)


def _phi(z):
    """Standard normal CDF, elementwise."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(np.asarray(z, float) / math.sqrt(2.0)))


def _band_edges(K: int) -> list[tuple[float, float]]:
    """The range of s for each grade before the rater: [0, .5], [k-.5, k+.5], [K-1.5, K-1]."""
    return [(max(0.0, k - 0.5), min(K - 1.0, k + 0.5)) for k in range(K)]


@functools.lru_cache(maxsize=None)
def _task_bands(name: str, K: int) -> np.ndarray:
    """Grade proportions of task ``name`` with K grades (cached)."""
    q = TASK_MODELS[name].grade_distribution(K)
    q.flags.writeable = False
    return q


def _latent_from_z(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Monotone map of standard-normal z to s in [0, K-1], uniform within each grade band."""
    K = len(q)
    u = np.clip(_phi(z), 1e-12, 1 - 1e-12)
    cum = np.concatenate([[0.0], np.cumsum(q)])
    cum[-1] = 1.0
    k = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, K - 1)
    frac = np.clip((u - cum[k]) / q[k], 0.0, 1.0)
    edges = np.array(_band_edges(K))
    return edges[k, 0] + frac * (edges[k, 1] - edges[k, 0])


def _check_tasks(tasks) -> TaskTable:
    if tasks is None:
        table = TaskTable()
    elif isinstance(tasks, TaskTable):
        table = tasks
    else:
        entries = list(tasks)
        if all(isinstance(e, Task) for e in entries):
            table = TaskTable(tuple(entries))
        elif all(isinstance(e, Mapping) for e in entries):
            table = TaskTable.from_config(entries)
        else:
            raise ValueError("tasks must be a TaskTable, a sequence of Task, or a list of task dicts")
    unknown = [t.name for t in table.tasks if t.name not in TASK_MODELS]
    if unknown:
        raise ValueError(f"the synthetic cohort cannot draw task(s) {unknown}; it knows {list(_KNOWN)}")
    return table
