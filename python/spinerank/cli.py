"""The ``spinerank`` command (also ``python -m spinerank``).

    spinerank synth --out DIR [--subjects N] [--seed S] [--shape H W D] [--overwrite]
    spinerank train --data DIR --out RUN [--preset paper|official|tiny] [--config FILE]
                    [--epochs-phase1 N] [--epochs-phase2 N] [--batch-size N]
                    [--device cpu|cuda] [--amp] [--max-pairs N] [--seed S] [--resume]
                    [--method M] [--corn-class-weights]
                    [--init-phase1 RUN/best_phase1.pt] [--rank-head mlp|linear|kan|transformer]
                    [--rank-anchor LAMBDA]
    torchrun --nproc_per_node N -m spinerank train ...   (data parallel: distributed.py)
    spinerank calibrate --run RUN [--no-tta] [--method grid|isotonic|youden|gmm] [--objective ...] [--sequences T2]
    spinerank evaluate --run RUN [--no-tta] [--out DIR] [--sequences T2]
    spinerank compare --data DIR --out DIR [--methods M ...] [--preset paper|official|tiny] [--no-tta] [--sequences T2]
    spinerank ablate --what thresholds --run RUN [--out DIR] [--no-tta] [--sequences T2]
    spinerank ablate --what heads --data DIR --out DIR [--heads mlp linear kan transformer] [--preset ...]
    spinerank predict --checkpoint RUN/best.pt [--tta] --out preds.csv FILES_OR_DIRS...
    spinerank predict --checkpoint RUN/best.pt --mask MASK|--disc-points CSV --out preds.csv SERIES
    spinerank predict --checkpoint RUN/best.pt --dicom SERIES_DIR --disc-points CSV --out preds.csv
    spinerank demo --out DIR [--all-methods] [--subjects N]
    spinerank import spider SRC --out DIR [--shape H W D] [--spacing ROW COL SLICE] [--split stratified|spider]
    spinerank import rsna SRC --out DIR [--shape H W D] [--spacing ROW COL SLICE]
    spinerank cache DATA [--preset paper|official|tiny | --shape D H W]
"""
from __future__ import annotations

import argparse
import pathlib
import signal
import sys

from . import methods
from .config import RANK_HEADS, TrainConfig
from .thresholds import METHODS as THRESHOLD_METHODS
from .thresholds import OBJECTIVES


def _synth(args) -> None:
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


def _train(args) -> None:
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


def _calibrate(args) -> None:
    from .calibrate import calibrate

    result = calibrate(args.run, tta=args.tta, method=args.method, objective=args.objective, device=args.device,
                       progress=not args.quiet, data=args.data, sequences=args.sequences)
    rows = result["validation_rows"]
    print(f"wrote {args.run}/thresholds.json ({args.method}, {args.objective}, "
          f"{'with' if args.tta else 'without'} TTA, fitted on {rows['rows']} validation {rows['unit']}) "
          f"in {result['seconds']:.1f} s")


def _evaluate(args) -> None:
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


def _compare(args) -> None:
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


def _ablate(args) -> None:
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


def _predict(args) -> int:
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


def _import(args) -> None:
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


def _cache(args) -> None:
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


def _demo(args) -> None:
    from .demo import demo

    demo(args.out, all_methods=args.all_methods, subjects=args.subjects, seed=args.seed, seeds=args.seeds,
         progress=not args.quiet)


#: --rank-anchor (train, compare, ablate): TrainConfig.rank_anchor.
RANK_ANCHOR_HELP = ("phase 2 of the ranking methods: add LAMBDA times the mean squared distance of each "
                    "labelled score from its grade's centre k*S/(K-1), in grade steps, to the pairwise loss; "
                    "spreads the scores over [0, S] (default: 0, off)")
QUIET_HELP = "-q: no progress bars (summaries stay); -qq: only warnings, errors and the final line"
PRESET_NAMES = ["paper", "official", "tiny"]
PRESET_HELP = ("paper: the paper's model and protocol as its text gives them; official: the same trained as the "
               "published code trains it; tiny: a small CPU version (default: tiny with --device cpu, paper with "
               "cuda, announced)")


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default in (None, False, 0, argparse.SUPPRESS) or "default" in text
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"

    def _split_lines(self, text, width):
        # A help of several lines (train --method: one per method) keeps them, each wrapped.
        split = super()._split_lines
        return [wrapped for line in text.splitlines() for wrapped in split(line, width)]


def version_line() -> str:
    from importlib import metadata

    import torch

    try:
        version = metadata.version("spinerank_ext")
    except metadata.PackageNotFoundError:
        version = "not installed"
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return f"spinerank {version} (torch {torch.__version__}, {cuda}, Python {sys.version.split()[0]})"


def method_help() -> str:
    """``train --method``'s help: a line per registered method (methods.register)
    with its description, the classifiers marked phase 1 only, the default marked."""
    entries = []
    for name in methods.names():
        marks = ["both phases" if methods.get(name).ranking else "phase 1 only"]
        marks += ["default"] if name == TrainConfig.method else []
        entries.append(f"{name} ({', '.join(marks)}): {methods.description(name)}")
    text = "\n".join(["the training method (SPEC §7: the same encoder and protocol for all):", *entries])
    return text.replace("%", "%%")  # argparse %-formats help


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spinerank", description="SpineRankNet: continuous spine-degeneration "
                                "severity scores from lumbar MRI.", formatter_class=_HelpWithDefaults)
    p.add_argument("--version", action="version", version=version_line(), help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("synth", help="write a synthetic cohort (phantom volumes with known severities)")
    s.add_argument("--out", required=True, help="dataset folder to create")
    s.add_argument("--subjects", type=int, default=300, help="subjects (1-6 discs each, T1 and T2 volumes)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the cohort")
    s.add_argument("--shape", type=int, nargs=3, default=(48, 80, 10), metavar=("H", "W", "D"),
                   help="volume size (rows, columns, slices); the paper's is 192 320 15")
    s.add_argument("--workers", type=int, help="processes (default: the available CPUs)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic cohort already in --out (never another dataset)")
    s.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    s.set_defaults(handler=_synth)

    t = sub.add_parser("train", help="train SpineRankNet (both phases) or a baseline (--method)")
    t.add_argument("--data", help="dataset folder (labels.csv, volumes/); with --resume: where the run's "
                   "dataset is now, if it moved (checked against the run's dataset.json)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, config.json)")
    t.add_argument("--preset", choices=PRESET_NAMES, default=None, help=PRESET_HELP)
    t.add_argument("--config", help="YAML or JSON file of TrainConfig settings")
    t.add_argument("--epochs-phase1", type=int, help="phase-1 epochs at most (default: the preset's)")
    t.add_argument("--epochs-phase2", type=int, help="phase-2 epochs at most (default: the preset's)")
    t.add_argument("--batch-size", type=int, help="discs per batch (default: the preset's, 32 for paper)")
    t.add_argument("--device", choices=["cpu", "cuda"], help="where to train (default: cpu)")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    t.add_argument("--max-pairs", type=int, help="mine at most this many pairs per task (default: all)")
    t.add_argument("--seed", type=int, help="seed of initialisation, order and augmentation (default: 0)")
    t.add_argument("--method", metavar="M", help=method_help())
    t.add_argument("--corn-class-weights", action="store_true",
                   help="corn: weight each disc's loss terms by the inverse frequency of its grade")
    t.add_argument("--init-phase1", metavar="CHECKPOINT",
                   help="skip phase 1: train phase 2 from this phase-1 model (e.g. RUN/best_phase1.pt of a ce run)")
    t.add_argument("--rank-head", choices=list(RANK_HEADS),
                   help="ranking head variant: mlp (the paper's, default), linear, kan or transformer")
    t.add_argument("--rank-anchor", type=float, metavar="LAMBDA", help=RANK_ANCHOR_HELP)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt, as configured "
                   "(--data, --device and --quiet may change; other settings given must equal the saved ones)")
    t.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    t.set_defaults(handler=_train)

    def tta_flag(command, default):
        command.add_argument("--tta", action=argparse.BooleanOptionalAction, default=default,
                             help=f"score every volume on the test-time views and average them (default: {default})")

    def sequences_flag(command):
        command.add_argument("--sequences", nargs="+", metavar="SEQ", default=None,
                             help="score the volumes of these sequences (default: T2, one row per disc, as "
                             "published; T1 T2: every volume, one row per volume)")

    def data_flag(command):
        command.add_argument("--data", help="the run's dataset folder, if it moved since training "
                             "(default: the folder in RUN/config.json; checked against RUN/dataset.json)")

    c = sub.add_parser("calibrate", help="fit per-task grade thresholds on the validation split")
    c.add_argument("--run", required=True, help="run folder (best.pt)")
    data_flag(c)
    tta_flag(c, True)
    c.add_argument("--method", choices=list(THRESHOLD_METHODS), default="grid",
                   help="threshold fitting: the paper's grid search, isotonic regression, Youden's index or a GMM")
    c.add_argument("--objective", choices=list(OBJECTIVES), default="composite",
                   help="what the grid search maximises on the validation scores")
    sequences_flag(c)
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    c.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    c.set_defaults(handler=_calibrate)

    e = sub.add_parser("evaluate", help="metrics, predictions and a report on the test split")
    e.add_argument("--run", required=True, help="run folder (best.pt)")
    data_flag(e)
    tta_flag(e, True)
    e.add_argument("--out", help="report folder (default RUN/eval, or RUN/eval-no-tta)")
    sequences_flag(e)
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    e.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    e.set_defaults(handler=_evaluate)

    def several_runs_flags(command, each):
        """The settings of commands that train, calibrate and evaluate several runs (compare, ablate)."""
        command.add_argument("--preset", choices=PRESET_NAMES, default=None, help=PRESET_HELP)
        command.add_argument("--config", help=f"YAML or JSON file of TrainConfig settings for every {each}")
        command.add_argument("--epochs-phase1", type=int, help="phase-1 epochs at most (default: the preset's)")
        command.add_argument("--epochs-phase2", type=int, help="phase-2 epochs at most (default: the preset's)")
        command.add_argument("--seed", type=int, help="training seed of every run (default: 0)")
        command.add_argument("--rank-anchor", type=float, metavar="LAMBDA",
                             help=RANK_ANCHOR_HELP + "; the ranking methods' runs only")
        tta_flag(command, True)
        sequences_flag(command)
        command.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
        command.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)

    m = sub.add_parser("compare", help="train, calibrate and evaluate several methods; a Table-1 comparison")
    m.add_argument("--data", required=True, help="dataset folder (labels.csv, volumes/)")
    m.add_argument("--out", required=True, help="folder of the runs, comparison.md and comparison.json")
    m.add_argument("--methods", nargs="+", choices=list(methods.names()), default=["ce", "spinerank"],
                   help="the methods to train and compare")
    m.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every method once per seed (OUT/seed-<s>/<method>); the tables then give mean ± std "
                        "over seeds and the differences against ce pooled over seeds (default: one run per method, "
                        "seed --seed)")
    several_runs_flags(m, "method")
    m.set_defaults(handler=_compare)

    a = sub.add_parser("ablate", help="the paper's ablations: threshold methods on a run, or ranking heads")
    a.add_argument("--what", required=True, choices=["thresholds", "heads"],
                   help="thresholds: every threshold method on the trained --run (post hoc); heads: phase 2 of "
                   "each ranking head from one shared phase-1 model, trained from --data into --out")
    a.add_argument("--run", help="--what thresholds: the trained ranking run")
    a.add_argument("--data", help="--what heads: the dataset folder; --what thresholds: the run's dataset, "
                   "if it moved")
    a.add_argument("--out", help="where ablation.md and ablation.json go (--what heads: also the runs); "
                   "--what thresholds default: RUN/ablation-thresholds")
    a.add_argument("--heads", nargs="+", choices=list(RANK_HEADS), help="--what heads: the variants (default: all)")
    several_runs_flags(a, "run")
    a.set_defaults(handler=_ablate)

    r = sub.add_parser("predict", help="scores and grades of new volumes (.nii, .nii.gz, .npy)",
                       description="Scores and grades of new volumes. Missing or unreadable inputs, and volumes "
                       "with fewer than a quarter of the model's input voxels along some axis, are skipped "
                       "with a message; volumes smaller than the model's input are predicted and flagged "
                       "small_input = 1. Exit status: 0 all predicted, 3 some skipped (the CSV holds the rest), "
                       "2 none predicted or another error.")
    r.add_argument("--checkpoint", required=True, help="RUN/best.pt (its RUN/thresholds.json grades the scores)")
    tta_flag(r, True)
    r.add_argument("--out", required=True, help="CSV to write")
    r.add_argument("inputs", nargs="*", help="volume files or folders; with --mask or --disc-points: the one whole "
                   "sagittal series (.mha, .nii.gz, ... as SimpleITK reads)")
    r.add_argument("--mask", help="a label mask of the series in SPIDER's scheme (discs 201, 202, ... from the "
                   "bottom): every disc is cut out as the run's imported training crops were, one row per disc")
    r.add_argument("--disc-points", metavar="CSV", help="disc centres of the series instead of a mask: columns "
                   "level, x, y, z in world RAS mm, optionally the normal nx, ny, nz; with --dicom also level, "
                   "instance_number, x, y (pixel coordinates on an instance, as the RSNA 2024 coordinates file)")
    r.add_argument("--dicom", metavar="SERIES_DIR", help="a DICOM series folder (.dcm files) as the whole series, "
                   "with --disc-points")
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    r.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    r.set_defaults(handler=_predict)

    i = sub.add_parser("import", help="import a public dataset of whole scans into a disc dataset folder")
    sources = i.add_subparsers(dest="source", required=True)
    from .importers.geometry import CropGrid

    default_grid = CropGrid()

    def grid_flags(command):
        command.add_argument(
            "--shape", type=int, nargs=3, default=default_grid.shape, metavar=("H", "W", "D"),
            help="crop size: rows (along the disc normal), columns (anterior -> posterior), slices (left -> right); "
            f"default {' '.join(map(str, default_grid.shape))}, the paper preset's volume")
        command.add_argument(
            "--spacing", type=float, nargs=3, default=default_grid.spacing, metavar=("ROW", "COL", "SLICE"),
            help="crop spacing in mm; default " + " ".join(f"{v:g}" for v in default_grid.spacing)
            + f" ({' x '.join(f'{v:g}' for v in default_grid.extent_mm)} mm)")

    def run_flags(command):
        command.add_argument("--workers", type=int, help="processes (default: the available CPUs)")
        command.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
        command.set_defaults(handler=_import)

    sp = sources.add_parser(
        "spider", help="SPIDER (Zenodo 10159290): sagittal .mha series, masks and per-disc gradings",
        description="Cuts every graded disc of every SPIDER series into a crop centred on and aligned with the "
        "disc (from its mask), writes labels.csv, tasks.json, volumes/*.nii.gz (affines to the scan's world "
        "coordinates), import_report.csv (everything skipped, and why) and dataset.json. Needs SimpleITK "
        "(pip install 'spinerank_ext[data]'). A rerun into the same --out reuses the series already imported.")
    sp.add_argument("src", help="the folder holding images/, masks/, overview.csv and radiological_gradings.csv "
                    "(or one folder above it)")
    sp.add_argument("--out", required=True, help="dataset folder to write (new, empty, or an earlier import)")
    grid_flags(sp)
    sp.add_argument("--split", choices=["stratified", "spider"], default="stratified",
                    help="stratified: train makes the project's patient-level 80/10/10 split (default); spider: "
                    "SPIDER's validation patients are the test split, its training patients train and val (8:2)")
    run_flags(sp)

    rs = sources.add_parser(
        "rsna", help="RSNA 2024 Lumbar Spine Degenerative Classification (Kaggle): DICOM studies, levels, points",
        description="Cuts every labelled level of every study from its sagittal T2/STIR and T1 series into a crop "
        "centred on the level's Spinal Canal Stenosis point (or its foramina's midpoint) and aligned with the "
        "spine, writes labels.csv (5 tasks, K = 3), tasks.json, volumes/*.nii.gz (affines to the scan's world "
        "coordinates), import_report.csv and dataset.json. Needs pydicom (pip install 'spinerank_ext[data]'). "
        "Axial series are not read. A rerun into the same --out reuses the studies already imported.")
    rs.add_argument("src", help="the folder holding train.csv, train_label_coordinates.csv, "
                    "train_series_descriptions.csv and train_images/ (or one folder above it)")
    rs.add_argument("--out", required=True, help="dataset folder to write (new, empty, or an earlier import)")
    grid_flags(rs)
    run_flags(rs)

    k = sub.add_parser("cache", help="decode a dataset's volumes once into its volume cache (DATA/.cache)",
                       description="Decodes every volume of DATA/labels.csv, fitted to the volume shape, into one "
                       "memory-mapped file that train, calibrate and evaluate read (they build it themselves on first "
                       "use; this does it ahead). Rebuilt when a volume changes. SPINERANK_CACHE_DIR moves it.")
    k.add_argument("data", help="dataset folder (labels.csv, volumes/)")
    k.add_argument("--preset", choices=PRESET_NAMES, default="paper",
                   help="the preset whose volume_shape to cache (default: paper, 15 x 192 x 320)")
    k.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="another volume shape")
    k.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    k.set_defaults(handler=_cache)

    d = sub.add_parser("demo", help="synthesise a cohort, compare CE and SpineRankNet on it, write the reports")
    d.add_argument("--out", required=True, help="folder of the cohort, the runs and the reports")
    d.add_argument("--all-methods", action="store_true", help="compare all six methods")
    d.add_argument("--subjects", type=int, default=200, help="subjects of the synthetic cohort")
    d.add_argument("--seed", type=int, default=0, help="seed of the cohort, and of the training without --seeds")
    d.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every method once per training seed (as compare --seeds)")
    d.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    d.set_defaults(handler=_demo)
    return p


class _Parser(argparse.ArgumentParser):
    """Every subcommand's parser: help with defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from . import progress

    progress.set_verbosity(2 - min(getattr(args, "quiet", 0), 2))
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops as cleanly as Ctrl-C
    try:
        code = args.handler(args)
    except KeyboardInterrupt:
        print("\nspinerank: interrupted. Checkpoints are intact; continue with --resume.", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # OSError: permissions, a full disk, a read-only folder, ...
        print(f"spinerank: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        progress.set_verbosity(None)  # a library caller in this process follows its own settings again
    return code if isinstance(code, int) else 0


def _one_line(exc: Exception) -> str:
    """An OSError from the system as one line: its reason and the path it
    concerns. Other errors keep their text (a preflight lists one file a line)."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = [p for p in (exc.filename, exc.filename2) if p]
        return exc.strerror + (": " + " -> ".join(map(str, paths)) if paths else "")
    return str(exc) or type(exc).__name__
