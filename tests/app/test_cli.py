"""The command line as a user meets it (issue 19): --version, help with defaults
for every option, the preset chosen by device and announced, the same TTA default
for predict as for evaluate, progress in log files, -q and -qq."""
import argparse
import json
import re
from importlib import metadata

import pytest
from conftest import write_cohort

from spinerank import cli, progress


def all_options(parser, name="spinerank"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from all_options(subparser, f"{name} {sub}")
        elif action.option_strings:
            yield name, action


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"spinerank {metadata.version('spinerank_ext')} (torch ")


def test_every_option_has_help_and_shows_its_default():
    parser = cli.parser()
    options = list(all_options(parser))
    assert len(options) > 80
    assert [f"{name} {a.option_strings}" for name, a in options if not a.help] == []
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {name: sub.format_help() for name, sub in action.choices.items()}
    squeeze = {name: re.sub(r"\s+", " ", text) for name, text in helps.items()}
    assert "(default: grid)" in squeeze["calibrate"] and "(default: composite)" in squeeze["calibrate"]
    assert "(default: 300)" in squeeze["synth"] and "(default: True)" in squeeze["predict"]
    assert "(default: ce spinerank)" in squeeze["compare"]


def test_predict_and_evaluate_share_the_tta_default():
    parser = cli.parser()
    predict = parser.parse_args(["predict", "--checkpoint", "c.pt", "--out", "p.csv", "x.npy"])
    evaluate = parser.parse_args(["evaluate", "--run", "r"])
    assert predict.tta is True and evaluate.tta is True


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)


def train(cohort, out, *flags):
    return cli.main(["train", "--data", str(cohort), "--out", str(out), "--method", "ce", "--epochs-phase1", "1",
                     "--epochs-phase2", "0", "--config", str(SMALL), *flags])


SMALL = None


@pytest.fixture(autouse=True)
def small_config(tmp_path):
    """A config file that keeps the model tiny but names no preset."""
    global SMALL
    SMALL = tmp_path / "small.json"
    SMALL.write_text(json.dumps({"width": 4, "volume_shape": [6, 20, 24], "input_shape": [4, 16, 20],
                                 "batch_size": 8, "aug_shift_h": 2, "aug_shift_w": 2}))


def test_no_preset_on_the_cpu_trains_tiny_and_says_so(cohort, tmp_path, capsys):
    assert train(cohort, tmp_path / "run", "-q") == 0
    err = capsys.readouterr().err
    assert "spinerank: no --preset given: tiny for --device cpu" in err and "--preset paper" in err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["preset"] == "tiny"


def test_quiet_keeps_summaries_and_very_quiet_only_the_final_line(cohort, tmp_path, capsys):
    assert train(cohort, tmp_path / "q", "-q", "--preset", "tiny") == 0
    out, err = capsys.readouterr()
    assert "phase 1 epoch 1/1: train loss" in out and "done:" in out and "epoch 1:" not in err
    assert train(cohort, tmp_path / "qq", "-qq", "--preset", "tiny") == 0
    out, err = capsys.readouterr()
    assert "phase 1 epoch" not in out and out.strip().startswith("done:") and err == ""


def test_progress_in_a_log_is_a_few_plain_lines(capsys, monkeypatch):
    progress.set_verbosity(None)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    bar = progress.progress_bar(range(3), desc="work", unit="step")
    assert list(bar) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "work: 1/3 step (33%), 0 s" and lines[-1].startswith("work: 3/3 step (100%)")
    assert not any("\r" in line for line in lines)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 3600.0)
    assert list(progress.progress_bar(range(1000), desc="fast", leave=False)) == list(range(1000))
    assert capsys.readouterr().err == ""  # short loops leave nothing in a log


def test_training_does_not_depend_on_the_progress_display(tmp_path, monkeypatch):
    """Bars on a terminal, log lines in a file, or nothing: the same run, bit for bit
    (a progress bar must not start an extra DataLoader iteration that moves the dropout RNG)."""
    import sys

    from conftest import tiny_config

    from spinerank.train import Trainer

    data = write_cohort(tmp_path / "c", subjects=12)
    histories = []
    for shown, terminal in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
        out = tmp_path / f"run-{shown}-{terminal}"
        Trainer(tiny_config(data, out, epochs_phase1=1, epochs_phase2=2, progress=shown)).run()
        histories.append([{k: v for k, v in json.loads(line).items() if k != "seconds"}
                          for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert histories[0] == histories[1] == histories[2]
