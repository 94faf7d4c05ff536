"""``comparison.png``: per task, each method's QWK and MAE, over seeds.

One row per task, two panels (QWK, higher is better; MAE in grades, lower is
better). Each method is a mean over its seeds with a bar from the lowest to the
highest seed and one small dot per seed, so that what one seed would change is
seen beside the differences between methods.
"""
from __future__ import annotations

import numpy as np

from .report import _pyplot, _save

PANELS = (("qwk", "QWK ↑"), ("mae", "MAE (grades) ↓"))


def _finite(values) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def plot_comparison(path, summary: dict, title: str = "") -> None:
    """Draws comparison.json's ``tasks`` (method -> task -> metric -> per-seed values)."""
    plt = _pyplot()
    per_method = summary["tasks"]
    methods = list(per_method)
    tasks = list(next(iter(per_method.values())))
    seeds = summary.get("seeds") or [None]
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.6 * len(PANELS), 0.42 * len(tasks) * len(methods) ** 0.5 + 1.6),
                             squeeze=False, sharey=True)
    rows = np.arange(len(tasks))
    offsets = (np.arange(len(methods)) - (len(methods) - 1) / 2) * min(0.8 / max(len(methods), 1), 0.18)
    for ax, (key, label) in zip(axes[0], PANELS):
        for m, name in enumerate(methods):
            colour = colours(m % 10)
            for t, task in enumerate(tasks):
                values = _finite(per_method[name][task][key])
                if values.size == 0:
                    continue
                y = rows[t] + offsets[m]
                if values.size > 1:
                    ax.plot([values.min(), values.max()], [y, y], color=colour, lw=1.5, alpha=0.8)
                    ax.scatter(values, np.full(values.size, y), s=6, color=colour, alpha=0.6, zorder=3)
                ax.scatter([values.mean()], [y], s=28, color=colour, edgecolor="black", linewidth=0.4, zorder=4,
                           label=name if t == 0 else None)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(rows)
        ax.set_yticklabels(tasks, fontsize=8)
    axes[0][0].invert_yaxis()  # the first task on top (the panels share the axis)
    axes[0][0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=min(len(methods), 6), frameon=False)
    n_seeds = len(seeds)
    spread = (f"mean of {n_seeds} seeds (large dot), each seed (small dots), lowest to highest seed (bar)"
              if n_seeds > 1 else "one run per method")
    fig.suptitle(f"{title}\nper task: {spread}; test split, {summary.get('volumes', 0)} {summary.get('unit', '')}",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=90)

