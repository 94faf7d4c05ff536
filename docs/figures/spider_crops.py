"""The picture of docs/real-data.md: a SPIDER-layout phantom series, the crop of
every disc outlined on its mid-sagittal slice, and the crops themselves as the
importer writes them (default grid).

    python docs/figures/spider_crops.py [--out docs/figures/spider-crops.png]
"""
from __future__ import annotations

import argparse
import csv
import pathlib
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel  # noqa: E402
import numpy as np  # noqa: E402

from spinerank.importers import common, geometry, spider, spider_phantom  # noqa: E402


def sagittal_view(scan: geometry.Scan, centre_lps, extent_mm=(330.0, 190.0), spacing=0.5):
    """The scan resampled on a true sagittal plane through ``centre_lps``: rows
    superior -> inferior, columns anterior -> posterior (the radiological display)."""
    frame = geometry.DiscFrame(np.asarray(centre_lps, dtype=float), -geometry.SUPERIOR, geometry.POSTERIOR,
                               geometry.RIGHT)
    grid = geometry.CropGrid((int(extent_mm[0] / spacing), int(extent_mm[1] / spacing), 1), (spacing, spacing, 1.0))
    return geometry.resample(scan, frame, grid)[:, :, 0], frame, grid


def main(out: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "SPIDER"
        truth = spider_phantom.write_spider(root, patients=1, seed=3)
        data = pathlib.Path(tmp) / "data"
        spider.import_spider(root, data, workers=1, progress=False)
        stem, series = next((s, v) for s, v in truth["series"].items() if v["seq"] == "t2")
        scan = common.read_image(series["image"])
        discs = series["discs"]
        centre = np.mean([d.centre for d in discs], axis=0)
        view, view_frame, view_grid = sagittal_view(scan, centre)
        to_view = np.linalg.inv(view_frame.crop_to_world(view_grid))
        with open(data / "labels.csv", newline="") as f:
            rows = {(r["ivd_id"], r["sequence"]): r for r in csv.DictReader(f)}
        crops = []
        for disc in discs:
            key = (spider.ivd_id(series["patient"], disc.label - 200), "T2")
            if key in rows:
                image = nibabel.load(str(data / "volumes" / f"{key[0]}_T2.nii.gz"))
                crops.append((disc, rows[key], (image.affine, image.get_fdata())))
        grid = geometry.CropGrid()

    shown = crops[:4]
    fig = plt.figure(figsize=(12, 7.6))
    spec = fig.add_gridspec(2, 3, width_ratios=[1.25, 1, 1], hspace=0.45)
    ax = fig.add_subplot(spec[:, 0])
    h, w = view.shape
    ax.imshow(np.nan_to_num(view, nan=0.0), cmap="gray", extent=(0, w * 0.5, h * 0.5, 0))
    colours = plt.get_cmap("tab10").colors
    for n, (disc, row, (affine, _)) in enumerate(crops):
        colour = colours[n % len(colours)]
        s = grid.shape[2] // 2
        corners = np.array([[0, 0, s, 1], [0, grid.shape[1] - 1, s, 1], [grid.shape[0] - 1, grid.shape[1] - 1, s, 1],
                            [grid.shape[0] - 1, 0, s, 1], [0, 0, s, 1]], dtype=float)
        world = (geometry.LPS_TO_RAS @ (affine @ corners.T)[:3]).T  # RAS -> LPS
        pixels = (to_view @ np.c_[world, np.ones(len(world))].T)[:2].T * 0.5  # (row, column) in mm
        ax.plot(pixels[:, 1], pixels[:, 0], color=colour, lw=1.1, ls="-" if n % 2 else "--")
        c = (to_view @ np.r_[disc.centre, 1])[:2] * 0.5
        ax.plot(c[1], c[0], "+", color=colour, ms=9, mew=1.8)
        ax.text((pixels[1, 1] + pixels[2, 1]) / 2 + 4, (pixels[1, 0] + pixels[2, 0]) / 2 + 3, row["level"],
                color=colour, fontsize=8)
    ax.set_xlim(0, w * 0.5 + 25)
    ax.set_facecolor("black")
    ax.set_ylim(h * 0.5, 0)
    ax.set_title(f"phantom series {stem}.mha, mid-sagittal plane\nboxes: the crops' central slices "
                 "(they overlap)\n+: each disc's true centre", fontsize=9)
    ax.set_xlabel("anterior → posterior (mm)")
    ax.set_ylabel("superior → inferior (mm)")
    for k, (disc, row, (_, crop)) in enumerate(shown):
        a = fig.add_subplot(spec[k // 2, 1 + k % 2])
        a.imshow(crop[:, :, crop.shape[2] // 2], cmap="gray", vmin=-2.5, vmax=2.5,
                 extent=(0, grid.extent_mm[1], grid.extent_mm[0], 0))
        a.set_title(f"{row['level']} ({row['ivd_id']}_T2.nii.gz)\nPfirrmann {int(row['Pfirrmann']) + 1} "
                    f"(grade {row['Pfirrmann']}), central slice", fontsize=9)
        a.set_xlabel("anterior → posterior (mm)", fontsize=8)
        a.set_ylabel("along the disc normal (mm)", fontsize=8)
        a.tick_params(labelsize=7)
    fig.suptitle("spinerank import spider: every disc cut out centred on it and aligned with it "
                 f"({' × '.join(map(str, grid.shape))} voxels, {' × '.join(f'{v:g}' for v in grid.spacing)} mm)",
                 fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.86, bottom=0.08, wspace=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).with_name("spider-crops.png"))
    main(parser.parse_args().out)
