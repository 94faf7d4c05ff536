"""What each ``spinerank`` command does with its parsed arguments (cli.py parses
them): one function per command, calling one function of an app module and printing
its one-line summary."""
from __future__ import annotations

import pathlib
import sys

from .config import RANK_HEADS


def run_synth(args) -> None:
    from .synth import synthesize

    summary = synthesize(args.out, subjects=args.subjects, seed=args.seed, shape=tuple(args.shape),
                         workers=args.workers, progress=not args.quiet, overwrite=args.overwrite)
    normal = ", ".join(f"{name} {p:.0%}" for name, p in summary["normal_prevalence"].items())
    print(f"wrote {summary['volumes']} volumes of {summary['ivds']} discs ({summary['subjects']} subjects) "
          f"to {args.out} in {summary['seconds']:.1f} s; grade 0 prevalence: {normal}")


#: train flags that a resumed run cannot change: it continues as its config.json says.
RESUME_FIXED = ("epochs_phase1", "epochs_phase2", "batch_size", "amp", "max_pairs", "seed", "method",
                "corn_class_weights", "init_phase1", "rank_head", "rank_anchor")


def _resumed_config(args):
    """The saved configuration of the run in --out. Only where it runs (--device,
    --quiet) and where its dataset now is (--data) may change; other settings given
    again (flags, --preset, --config) must equal the saved ones."""
    import dataclasses

    from . import config as config_lib
    from . import provenance

    out = pathlib.Path(args.out)
    if not (out / "last.pt").exists():
        raise FileNotFoundError(f"{out / 'last.pt'} does not exist: there is no run to resume in {out}")
    # config.json is written before the first checkpoint; last.pt (large) is read once, by the trainer.
    saved = config_lib.load_file(out / "config.json")
    given: dict = {}
    if args.preset:
        given.update(config_lib.PRESETS[args.preset], preset=args.preset)
    if args.config:
        given.update(config_lib.load_file(args.config))
    # Flags not given are None (store_true ones False); a number 0 given (--rank-anchor 0) counts.
    given.update({name: getattr(args, name) for name in RESUME_FIXED
                  if getattr(args, name) is not None and getattr(args, name) is not False})
    if given.get("init_phase1"):
        given["init_phase1"] = str(pathlib.Path(given["init_phase1"]).resolve())
    free = {"data", "out", "device", "progress"}
    try:
        before = config_lib.TrainConfig(**saved)
        after = config_lib.TrainConfig(**{**saved, **{k: v for k, v in given.items() if k not in free}})
    except TypeError as exc:  # a setting config.json or --config does not know
        raise ValueError(f"--resume: {exc}") from exc
    changed = [f.name for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(after, f.name)]
    if changed:
        shown = ", ".join(f"{name} ({getattr(before, name)!r} -> {getattr(after, name)!r})" for name in changed)
        raise ValueError(f"--resume continues the run in {out} as its config.json says; it cannot change "
                         f"{shown}. Leave them out, or train a new run into another --out")
    saved.update(out=str(out.resolve()), device=args.device or saved["device"], progress=not args.quiet,
                 data=provenance.data_folder(saved.get("data", ""), args.data))
    return config_lib.TrainConfig(**saved)


def _preset(args) -> str | None:
    """The preset to train with: the one given (--preset, or the --config file's),
    else the device's: tiny on the CPU, paper on CUDA, announced with what it trains."""
    from . import config as config_lib

    if args.preset or (args.config and config_lib.load_file(args.config).get("preset")):
        return args.preset
    device = getattr(args, "device", None) or "cpu"
    preset = "paper" if device == "cuda" else "tiny"
    c = config_lib.resolve(preset, None)
    other = ("; --preset paper trains the paper's full model (for a GPU: days on a CPU)" if preset == "tiny" else
             "; --preset tiny trains a small model in minutes")
    print(f"spinerank: no --preset given: {preset} for --device {device} (width {c.width}, at most "
          f"{c.epochs_phase1} + {c.epochs_phase2} epochs, volumes (D, H, W) {tuple(c.volume_shape)}){other}",
          file=sys.stderr)
    return preset


def run_train(args) -> None:
    from . import config as config_lib
    from . import distributed
    from .train import Trainer

    if args.resume:
        config = _resumed_config(args)
    else:
        config = config_lib.resolve(
            _preset(args), args.config, data=args.data, out=args.out, epochs_phase1=args.epochs_phase1,
            epochs_phase2=args.epochs_phase2, batch_size=args.batch_size, device=args.device,
            amp=args.amp or None, max_pairs=args.max_pairs, seed=args.seed, progress=not args.quiet,
            method=args.method, corn_class_weights=args.corn_class_weights or None, init_phase1=args.init_phase1,
            rank_head=args.rank_head, rank_anchor=args.rank_anchor)
    if not config.data:
        raise ValueError("--data DIR is required")
    # Under torchrun this process is one rank of a data-parallel run (see distributed.py).
    with distributed.session(config.device, config.dist_timeout_s) as dist:
        result = Trainer(config).run(resume=args.resume)
    if not dist.is_main:
        return
    shown = {k: "-" if v is None else f"{v:.3f}" for k, v in result.items()}
    print(f"done: best mean validation balanced accuracy (phase 1) {shown['phase1']}, "
          f"QWK (phase 2) {shown['phase2']}; model in {config.out}/best.pt")


def run_calibrate(args) -> None:
    from .calibrate import calibrate

    result = calibrate(args.run, tta=args.tta, method=args.method, objective=args.objective, device=args.device,
                       progress=not args.quiet, data=args.data, sequences=args.sequences)
    rows = result["validation_rows"]
    print(f"wrote {args.run}/thresholds.json ({args.method}, {args.objective}, "
          f"{'with' if args.tta else 'without'} TTA, fitted on {rows['rows']} validation {rows['unit']}) "
          f"in {result['seconds']:.1f} s")


def run_evaluate(args) -> None:
    from .evaluate import evaluate

    result = evaluate(args.run, tta=args.tta, out=args.out, device=args.device, progress=not args.quiet,
                      data=args.data, sequences=args.sequences)
    agg = result["aggregate"]
    shown = ", ".join(f"{k} {agg[k]['mean']:.3f}" for k in ("balanced_accuracy", "qwk", "mae", "roc_auc")
                      if agg[k]["mean"] == agg[k]["mean"])
    from .evaluate import default_out

    where = args.out or default_out(args.run, args.tta)
    skipped = f", {result['skipped_discs']} discs skipped" if result["skipped_discs"] else ""
    print(f"{result['method']} on {result['volumes']} test {result['unit']}{skipped}: mean over tasks {shown}; "
          f"report in {where}/report.md")


def run_compare(args) -> None:
    from .compare import compare

    if args.seeds is not None and args.seed is not None:
        raise ValueError("give --seed (one run per method) or --seeds (one run per method and seed), not both")
    summary = compare(args.data, args.out, methods=args.methods, preset=_preset(args), config_file=args.config,
                      tta=args.tta, device=args.device, progress=not args.quiet, seed=args.seed,
                      epochs_phase1=args.epochs_phase1, epochs_phase2=args.epochs_phase2, sequences=args.sequences,
                      seeds=args.seeds, rank_anchor=args.rank_anchor)
    print((pathlib.Path(args.out) / "comparison.md").read_text())
    runs = f"{args.out}/<method>" if args.seeds is None else f"{args.out}/seed-<s>/<method>"
    print(f"compared {len(summary['methods'])} methods in {summary['seconds']:.0f} s; "
          f"reports in {runs}/eval/report.md")


def run_ablate(args) -> None:
    from .ablate import ablate

    if args.what == "thresholds":
        given = [flag for flag, value in (("--preset", args.preset), ("--config", args.config),
                                          ("--epochs-phase1", args.epochs_phase1),
                                          ("--epochs-phase2", args.epochs_phase2), ("--seed", args.seed),
                                          ("--rank-anchor", args.rank_anchor), ("--heads", args.heads))
                 if value is not None]
        if given:
            raise ValueError(f"--what thresholds works on the trained --run; {', '.join(given)} "
                             "apply to --what heads (training)")
        result = ablate("thresholds", run=args.run, out=args.out, data=args.data, tta=args.tta,
                        sequences=args.sequences, device=args.device, progress=not args.quiet)
        where = pathlib.Path(args.out) if args.out else \
            pathlib.Path(args.run) / ("ablation-thresholds" if args.tta else "ablation-thresholds-no-tta")
    else:
        if args.run is not None:
            raise ValueError("--what heads trains its own runs from --data into --out; --run is for --what thresholds")
        result = ablate("heads", data=args.data, out=args.out, heads=args.heads or RANK_HEADS, preset=_preset(args),
                        config_file=args.config, tta=args.tta, sequences=args.sequences, device=args.device,
                        progress=not args.quiet, seed=args.seed, epochs_phase1=args.epochs_phase1,
                        epochs_phase2=args.epochs_phase2, rank_anchor=args.rank_anchor)
        where = pathlib.Path(args.out)
    print((where / "ablation.md").read_text())
    print(f"ablation of {len(result['variants'])} {args.what} variants in {result['seconds']:.0f} s: "
          f"{where}/ablation.md, {where}/ablation.json")


def run_predict(args) -> int:
    from .predict import EXIT_SKIPPED, predict

    if not args.inputs and args.dicom is None:
        raise ValueError("give the volumes to predict (files or folders), or a whole series with --dicom")
    result = predict(args.checkpoint, args.inputs, args.out, tta=args.tta, device=args.device,
                     progress=not args.quiet, mask=args.mask, disc_points=args.disc_points, dicom=args.dicom)
    skipped = (f"; skipped {len(result['skipped'])} input(s) (missing, unreadable or too small; see above)"
               if result["skipped"] else "")
    small = f"; {len(result['small'])} flagged small_input" if result["small"] else ""
    if not result["predicted"]:
        raise ValueError(f"no volume could be read or predicted{skipped}")
    print(f"wrote {result['predicted']} prediction(s) to {args.out}{small}{skipped}")
    return EXIT_SKIPPED if result["skipped"] else 0


def run_import(args) -> None:
    from .importers import geometry

    grid = geometry.CropGrid(tuple(args.shape), tuple(args.spacing))
    if args.source == "spider":
        from .importers.spider import import_spider

        summary = import_spider(args.src, args.out, grid=grid, workers=args.workers, split=args.split,
                                progress=not args.quiet)
        what = f"{summary['counts']['subjects']} patients, {summary['counts']['series_imported']} series"
    else:
        from .importers.rsna import import_rsna

        summary = import_rsna(args.src, args.out, grid=grid, workers=args.workers, progress=not args.quiet)
        what = f"{summary['counts']['subjects']} studies; {summary['counts']['axial_series_not_read']} axial series " \
               "not read"
    counts = summary["counts"]
    skipped = ", ".join(f"{n} {kind}" for kind, n in counts["skipped"].items()) or "nothing"
    print(f"imported {counts['volumes']} volumes of {counts['discs']} discs ({what}) into {args.out} in "
          f"{summary['seconds']['total']:.1f} s; skipped: {skipped} (see {args.out}/import_report.csv)")


def run_cache(args) -> None:
    import time

    from . import config as config_lib
    from . import volume_cache as cache_lib
    from .data import read_labels, volume_cache
    from .tasks import TaskTable

    if not cache_lib.enabled():
        raise ValueError(f"the cache is turned off ({cache_lib.ENABLE_ENV}=0)")
    shape = tuple(args.shape) if args.shape else tuple(config_lib.resolve(args.preset, None).volume_shape)
    if any(v < 1 for v in shape):
        raise ValueError(f"--shape must be three sizes >= 1 (D, H, W), got {shape}")
    tasks_file = pathlib.Path(args.data) / config_lib.DATASET_TASKS
    tasks = TaskTable.from_file(tasks_file) if tasks_file.is_file() else TaskTable()
    rows = read_labels(args.data, tasks)
    started = time.perf_counter()
    cache = volume_cache(args.data, rows, shape, progress=not args.quiet)
    left_out = len(rows) - len(cache.rows)
    print(f"{len(cache.rows)} volumes of {args.data} decoded at (D, H, W) {shape} in {cache.file} "
          f"({cache.nbytes / 2**30:.2f} GiB) in {time.perf_counter() - started:.1f} s"
          + (f"; {left_out} missing or unreadable (train and evaluate name them)" if left_out else ""))


def run_demo(args) -> None:
    from .demo import demo

    demo(args.out, all_methods=args.all_methods, subjects=args.subjects, seed=args.seed, seeds=args.seeds,
         progress=not args.quiet)
