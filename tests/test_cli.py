"""The command line in the ecosystem's habits: --version, the user's commands
listed apart from the rules' steps, help on every option (choices, units,
defaults), one-line errors for every bad value."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pandas as pd
import pytest

from qdesign import __version__
from qdesign.analysis.findings import _recovered
from qdesign.core.registry import DATASETS
from qdesign.run import cli


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version():
    res = subprocess.run([sys.executable, "-m", "qdesign", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"qdesign {__version__}"


def test_every_command_is_listed_once_users_first():
    names = set(subparsers())
    assert names == set(cli.USER_COMMANDS) | set(cli.PIPELINE_COMMANDS)
    assert not set(cli.USER_COMMANDS) & set(cli.PIPELINE_COMMANDS)
    assert names == set(cli._COMMANDS)
    text = cli._parser().format_help()
    users, steps = text.index("commands:"), text.index("pipeline steps")
    for name in cli.USER_COMMANDS:
        assert users < text.index(f"\n  {name} ") < steps, name
    for name in cli.PIPELINE_COMMANDS:
        assert text.index(f"\n  {name} ") > steps, name
    assert "examples:" in text and "--version" in text
    assert text.count("train-float") == 1  # no second, unordered list of every command


def test_every_option_has_help_and_says_its_default():
    for name, parser in subparsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.dest} has no help"
            assert "(s)" not in action.help, f"{name} {action.dest}: {action.help}"
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and not action.required and action.default not in (None, False):
                if isinstance(action, argparse._HelpAction):
                    continue
                assert "default:" in " ".join(parser._get_formatter()._get_help_string(action).split()), (
                    f"{name} {action.option_strings[0]} does not show its default"
                )
        assert name in text


def test_prepare_data_lists_the_datasets():
    text = subparsers()["prepare-data"].format_help()
    assert "{" + ",".join(DATASETS) + "}" in text


def test_user_commands_show_examples():
    for name in ("recommend", "findings", "export", "export-frontier", "validate-config"):
        assert "examples:\n  python -m qdesign " + name in subparsers()[name].format_help()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["recommend", "results/s", "--budget", "-5KiB"], "a budget is a positive memory size, got '-5KiB'"),
        (["recommend", "results/s", "--budget", "5parsecs"], "'5parsecs' is not a memory size"),
        (["recommend", "results/s", "--budget", "0"], "at least 1 bit"),
        (["recommend", "results/s"], "the following arguments are required: --budget"),
        (["recommend", "results/s", "--budget", "1KiB", "--memory", "all"], "invalid choice: 'all'"),
        (["export-frontier", "results/s", "--data", "d.pt", "--out-dir", "o", "--seed", "-1"], "neither best_val"),
        (["export-frontier", "results/s", "--data", "d.pt", "--out-dir", "o", "--seed", "best"], "neither best_val"),
        (["prepare-data", "--dataset", "imagenet", "--out", "x.pt"], "invalid choice: 'imagenet'"),
        (["prepare-data", "--dataset", "digits", "--out", "x.pt", "--split-seed", "-3"], "must be at least 0"),
        (["scaling", "--summary", "s.parquet", "--out", "o.parquet", "--n-boot", "0"], "must be at least 1"),
        (["scaling", "--summary", "s.parquet", "--out", "o.parquet", "--n-boot", "ten"], "'ten' is not a whole number"),
        (
            ["sensitivity", "--spec", "{}", "--data", "d", "--float-checkpoint", "f", "--bits", "17", "--out", "o"],
            "1 to 16",
        ),
        (
            [
                "figures",
                "--summary",
                "a",
                "--ecr",
                "b",
                "--frontier",
                "c",
                "--scaling",
                "d",
                "--out-dir",
                "o",
                "--formats",
                "gif",
            ],
            "'gif' is not a figure format",
        ),  # fmt: skip
        (
            [
                "figures",
                "--summary",
                "a",
                "--ecr",
                "b",
                "--frontier",
                "c",
                "--scaling",
                "d",
                "--out-dir",
                "o",
                "--dpi",
                "-1",
            ],
            "must be at least 1",
        ),  # fmt: skip
        (["export-reference", "--config", "c.yaml", "--out", "o", "--wall-seconds", "-2"], "positive number"),
        (["nope"], "unknown command 'nope'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_a_bad_value_is_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        cli.run(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("qdesign: error: ") and needle in err, err
    assert "--help" in err and "usage:" not in err


def test_a_bad_value_is_one_line_in_a_process():
    """The same from the shell, and no traceback (the -5KiB that argparse took for an option)."""
    argv = [sys.executable, "-m", "qdesign", "recommend", "results/s", "--budget", "-5KiB"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        "qdesign: error: recommend: argument --budget: a budget is a positive memory size, got '-5KiB' "
        "(see python -m qdesign recommend --help)"
    ]


def test_findings_counts_widths_in_words():
    assert _recovered(pd.Series([1.4706])) == "147.06% (1 width; above 100%: retrained beats float)"
    assert _recovered(pd.Series([0.5, 0.7, 0.9])) == "70.00% (3 widths)"
    assert _recovered(pd.Series([], dtype=float)) == "no loss to recover"
