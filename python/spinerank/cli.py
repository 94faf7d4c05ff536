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

The parsers are here, one function per command; what each command then does is in
commands.py.
"""
from __future__ import annotations

import argparse
import signal
import sys

from . import commands, methods
from .config import RANK_HEADS, TrainConfig
from .thresholds import METHODS as THRESHOLD_METHODS
from .thresholds import OBJECTIVES


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

    for add in (_synth_parser, _train_parser, _calibrate_parser, _evaluate_parser, _compare_parser, _ablate_parser,
                _predict_parser, _import_parser, _cache_parser, _demo_parser):
        add(sub)
    return p


def _synth_parser(sub) -> None:
    """``spinerank synth``."""
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
    s.set_defaults(handler=commands.run_synth)


def _train_parser(sub) -> None:
    """``spinerank train``."""
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
    t.set_defaults(handler=commands.run_train)


def _tta_flag(command, default):
    command.add_argument("--tta", action=argparse.BooleanOptionalAction, default=default,
                         help=f"score every volume on the test-time views and average them (default: {default})")


def _sequences_flag(command):
    command.add_argument("--sequences", nargs="+", metavar="SEQ", default=None,
                         help="score the volumes of these sequences (default: T2, one row per disc, as "
                         "published; T1 T2: every volume, one row per volume)")


def _data_flag(command):
    command.add_argument("--data", help="the run's dataset folder, if it moved since training "
                         "(default: the folder in RUN/config.json; checked against RUN/dataset.json)")


def _calibrate_parser(sub) -> None:
    """``spinerank calibrate``."""
    c = sub.add_parser("calibrate", help="fit per-task grade thresholds on the validation split")
    c.add_argument("--run", required=True, help="run folder (best.pt)")
    _data_flag(c)
    _tta_flag(c, True)
    c.add_argument("--method", choices=list(THRESHOLD_METHODS), default="grid",
                   help="threshold fitting: the paper's grid search, isotonic regression, Youden's index or a GMM")
    c.add_argument("--objective", choices=list(OBJECTIVES), default="composite",
                   help="what the grid search maximises on the validation scores")
    _sequences_flag(c)
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    c.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    c.set_defaults(handler=commands.run_calibrate)


def _evaluate_parser(sub) -> None:
    """``spinerank evaluate``."""
    e = sub.add_parser("evaluate", help="metrics, predictions and a report on the test split")
    e.add_argument("--run", required=True, help="run folder (best.pt)")
    _data_flag(e)
    _tta_flag(e, True)
    e.add_argument("--out", help="report folder (default RUN/eval, or RUN/eval-no-tta)")
    _sequences_flag(e)
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    e.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    e.set_defaults(handler=commands.run_evaluate)


def _several_runs_flags(command, each):
    """The settings of commands that train, calibrate and evaluate several runs (compare, ablate)."""
    command.add_argument("--preset", choices=PRESET_NAMES, default=None, help=PRESET_HELP)
    command.add_argument("--config", help=f"YAML or JSON file of TrainConfig settings for every {each}")
    command.add_argument("--epochs-phase1", type=int, help="phase-1 epochs at most (default: the preset's)")
    command.add_argument("--epochs-phase2", type=int, help="phase-2 epochs at most (default: the preset's)")
    command.add_argument("--seed", type=int, help="training seed of every run (default: 0)")
    command.add_argument("--rank-anchor", type=float, metavar="LAMBDA",
                         help=RANK_ANCHOR_HELP + "; the ranking methods' runs only")
    _tta_flag(command, True)
    _sequences_flag(command)
    command.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    command.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)


def _compare_parser(sub) -> None:
    """``spinerank compare``."""
    m = sub.add_parser("compare", help="train, calibrate and evaluate several methods; a Table-1 comparison")
    m.add_argument("--data", required=True, help="dataset folder (labels.csv, volumes/)")
    m.add_argument("--out", required=True, help="folder of the runs, comparison.md and comparison.json")
    m.add_argument("--methods", nargs="+", choices=list(methods.names()), default=["ce", "spinerank"],
                   help="the methods to train and compare")
    m.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every method once per seed (OUT/seed-<s>/<method>); the tables then give mean ± std "
                        "over seeds and the differences against ce pooled over seeds (default: one run per method, "
                        "seed --seed)")
    _several_runs_flags(m, "method")
    m.set_defaults(handler=commands.run_compare)


def _ablate_parser(sub) -> None:
    """``spinerank ablate``."""
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
    _several_runs_flags(a, "run")
    a.set_defaults(handler=commands.run_ablate)


def _predict_parser(sub) -> None:
    """``spinerank predict``."""
    r = sub.add_parser("predict", help="scores and grades of new volumes (.nii, .nii.gz, .npy)",
                       description="Scores and grades of new volumes. Missing or unreadable inputs, and volumes "
                       "with fewer than a quarter of the model's input voxels along some axis, are skipped "
                       "with a message; volumes smaller than the model's input are predicted and flagged "
                       "small_input = 1. Exit status: 0 all predicted, 3 some skipped (the CSV holds the rest), "
                       "2 none predicted or another error.")
    r.add_argument("--checkpoint", required=True, help="RUN/best.pt (its RUN/thresholds.json grades the scores)")
    _tta_flag(r, True)
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
    r.set_defaults(handler=commands.run_predict)


def _import_parser(sub) -> None:
    """``spinerank import spider|rsna``."""
    i = sub.add_parser("import", help="import a public dataset of whole scans into a disc dataset folder")
    sources = i.add_subparsers(dest="source", required=True)
    from .importers.geometry import CropGrid

    default_grid = CropGrid()

    sp = sources.add_parser(
        "spider", help="SPIDER (Zenodo 10159290): sagittal .mha series, masks and per-disc gradings",
        description="Cuts every graded disc of every SPIDER series into a crop centred on and aligned with the "
        "disc (from its mask), writes labels.csv, tasks.json, volumes/*.nii.gz (affines to the scan's world "
        "coordinates), import_report.csv (everything skipped, and why) and dataset.json. Needs SimpleITK "
        "(pip install 'spinerank_ext[data]'). A rerun into the same --out reuses the series already imported.")
    sp.add_argument("src", help="the folder holding images/, masks/, overview.csv and radiological_gradings.csv "
                    "(or one folder above it)")
    sp.add_argument("--out", required=True, help="dataset folder to write (new, empty, or an earlier import)")
    _grid_flags(sp, default_grid)
    sp.add_argument("--split", choices=["stratified", "spider"], default="stratified",
                    help="stratified: train makes the project's patient-level 80/10/10 split (default); spider: "
                    "SPIDER's validation patients are the test split, its training patients train and val (8:2)")
    _import_run_flags(sp)

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
    _grid_flags(rs, default_grid)
    _import_run_flags(rs)


def _grid_flags(command, default_grid):
    command.add_argument(
        "--shape", type=int, nargs=3, default=default_grid.shape, metavar=("H", "W", "D"),
        help="crop size: rows (along the disc normal), columns (anterior -> posterior), slices (left -> right); "
        f"default {' '.join(map(str, default_grid.shape))}, the paper preset's volume")
    command.add_argument(
        "--spacing", type=float, nargs=3, default=default_grid.spacing, metavar=("ROW", "COL", "SLICE"),
        help="crop spacing in mm; default " + " ".join(f"{v:g}" for v in default_grid.spacing)
        + f" ({' x '.join(f'{v:g}' for v in default_grid.extent_mm)} mm)")


def _import_run_flags(command):
    command.add_argument("--workers", type=int, help="processes (default: the available CPUs)")
    command.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    command.set_defaults(handler=commands.run_import)


def _cache_parser(sub) -> None:
    """``spinerank cache``."""
    k = sub.add_parser("cache", help="decode a dataset's volumes once into its volume cache (DATA/.cache)",
                       description="Decodes every volume of DATA/labels.csv, fitted to the volume shape, into one "
                       "memory-mapped file that train, calibrate and evaluate read (they build it themselves on first "
                       "use; this does it ahead). Rebuilt when a volume changes. SPINERANK_CACHE_DIR moves it.")
    k.add_argument("data", help="dataset folder (labels.csv, volumes/)")
    k.add_argument("--preset", choices=PRESET_NAMES, default="paper",
                   help="the preset whose volume_shape to cache (default: paper, 15 x 192 x 320)")
    k.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="another volume shape")
    k.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    k.set_defaults(handler=commands.run_cache)


def _demo_parser(sub) -> None:
    """``spinerank demo``."""
    d = sub.add_parser("demo", help="synthesise a cohort, compare CE and SpineRankNet on it, write the reports")
    d.add_argument("--out", required=True, help="folder of the cohort, the runs and the reports")
    d.add_argument("--all-methods", action="store_true", help="compare all six methods")
    d.add_argument("--subjects", type=int, default=200, help="subjects of the synthetic cohort")
    d.add_argument("--seed", type=int, default=0, help="seed of the cohort, and of the training without --seeds")
    d.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every method once per training seed (as compare --seeds)")
    d.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    d.set_defaults(handler=commands.run_demo)


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
