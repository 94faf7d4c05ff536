"""The grading tasks (SPEC §2): names, number of grades, T1 masking, left/right pairs.

The table is configuration: ``TaskTable.from_config`` reads it from a list of
dicts (e.g. the ``tasks`` entry of a run's YAML/JSON config), ``from_file`` from
a dataset's ``tasks.json`` (written by the importers; used when the
configuration names no table); ``DEFAULT_TASKS`` is the paper's table.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    num_grades: int
    #: sequences on which this task is not gradable (its label is masked)
    masked_for: tuple[str, ...] = ()
    #: the task a left-right flip turns this one into
    swap_with: str | None = None

    def __post_init__(self):
        if not isinstance(self.num_grades, int) or self.num_grades < 2:
            raise ValueError(f"task {self.name!r}: num_grades must be an int >= 2, got {self.num_grades!r}")
        object.__setattr__(self, "masked_for", tuple(self.masked_for))


DEFAULT_TASKS: tuple[Task, ...] = (
    Task("Pfirrmann", 5, masked_for=("T1",)),
    Task("DiscNarrowing", 4, masked_for=("T1",)),
    Task("CentralCanalStenosis", 4),
    Task("Spondylolisthesis", 3),
    Task("UpperEndplateDefect", 4),
    Task("LowerEndplateDefect", 4),
    Task("ForaminalStenosisLeft", 4, swap_with="ForaminalStenosisRight"),
    Task("ForaminalStenosisRight", 4, swap_with="ForaminalStenosisLeft"),
    Task("Herniation", 4),
    Task("AnteriorBulging", 4),
    Task("PosteriorBulging", 4),
)


@dataclasses.dataclass(frozen=True)
class TaskTable:
    tasks: tuple[Task, ...] = DEFAULT_TASKS

    def __post_init__(self):
        names = [t.name for t in self.tasks]
        if not names:
            raise ValueError("the task table is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names in {names}")
        for t in self.tasks:
            if t.swap_with is not None:
                other = {u.name: u for u in self.tasks}.get(t.swap_with)
                if other is None or other.swap_with != t.name:
                    raise ValueError(f"task {t.name!r} swaps with {t.swap_with!r}, which must exist and "
                                     f"swap back with {t.name!r}")

    @classmethod
    def from_config(cls, entries: Iterable[dict] | None) -> TaskTable:
        if entries is None:
            return cls()
        return cls(tuple(Task(**dict(e)) for e in entries))

    @classmethod
    def from_file(cls, path) -> TaskTable:
        """A dataset's ``tasks.json``: {"tasks": [{name, num_grades, masked_for, swap_with}, ...]}
        (or the list alone); raises ValueError naming the file."""
        import json
        import pathlib

        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["tasks"] if isinstance(data, dict) else data
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("expected {\"tasks\": [{\"name\": ..., \"num_grades\": ...}, ...]}")
            return cls.from_config(entries)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"task table {path}: {exc}") from None

    def to_config(self) -> list[dict]:
        return [dataclasses.asdict(t) for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_grades(self) -> list[int]:
        return [t.num_grades for t in self.tasks]

    @property
    def swap_pairs(self) -> list[tuple[int, int]]:
        """(i, j), i < j: the task columns a left-right flip exchanges."""
        index = {t.name: i for i, t in enumerate(self.tasks)}
        return sorted({tuple(sorted((i, index[t.swap_with]))) for i, t in enumerate(self.tasks)
                       if t.swap_with is not None})

    def swap_permutation(self) -> list[int]:
        """Column order after a left-right flip."""
        perm = list(range(len(self.tasks)))
        for i, j in self.swap_pairs:
            perm[i], perm[j] = j, i
        return perm

    def masked(self, sequence: str) -> list[bool]:
        """Which task labels are not gradable on ``sequence`` (e.g. "T1")."""
        return [sequence in t.masked_for for t in self.tasks]

    def index(self, names: Sequence[str]) -> list[int]:
        lookup = {t.name: i for i, t in enumerate(self.tasks)}
        return [lookup[n] for n in names]
