"""``replay --help``: what a newcomer reads first. Values are named, never
typed (``--at POS``, not ``--at <str>``), flags stand alone, bounds are said in
words and still enforced, docstrings read as sentences, ``-h`` is ``--help``
and ``--version`` says which release answers."""
from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import pytest
from typer.main import get_command

import cli

COMMANDS = sorted(get_command(cli.app).commands)
#: how typer spells a Python type or a bound beside an option
TYPED = re.compile(r"<(bool|str|int|float|list|text)[^>]*>|list\[|int range|x>=|x<=", re.IGNORECASE)


def test_every_command_is_listed(cli_run):
    code, out, err = cli_run(["-h"], columns=200)
    assert code == 0, err
    assert not TYPED.search(out) and re.search(r"--version\s+Print", out), out
    for name in COMMANDS:
        assert re.search(rf"^\W*{re.escape(name)}\s", out, re.MULTILINE), name


@pytest.mark.parametrize("name", COMMANDS)
def test_help_names_every_value_and_no_type(cli_run, name):
    code, out, err = cli_run([name, "-h"], columns=200)
    assert code == 0, err
    assert cli_run([name, "--help"], columns=200)[1] == out
    assert not TYPED.search(out), out
    command = get_command(cli.app).commands[name]
    for p in command.params:
        if p.param_type_name == "argument":
            assert (p.metavar or p.name.upper()) in out.split("Usage:")[1].splitlines()[0]
            continue
        long = max(p.opts, key=len)
        if p.is_flag:  # a flag alone, its help right after it
            assert re.search(rf"{re.escape(long)}(\s+-\w)?\s+[A-Z]\w", out), (long, out)
        else:  # a value: its name in capitals (or a shape such as KEY=STATE)
            assert re.search(rf"{re.escape(long)}(\s+-\w)?\s+\[?[A-Z][A-Z_=.]*\]?\s", out), (long, out)


def test_a_bound_is_said_in_words_and_still_holds(cli_run, fixture_path):
    code, out, _ = cli_run(["step", "-h"], columns=200)
    assert re.search(r"--jump\s+N\s+.*\(at least 1\)\.", out), out
    assert re.search(r"--level\s+LEVEL\s+.*\(1 to 9\)\.", cli_run(["simulate", "-h"], columns=200)[1])
    code, out, err = cli_run(["step", fixture_path("stuck-flight.jsonl"), "--jump", "0", "--print"])
    assert code == 2 and "--jump" in err and "Traceback" not in err


def test_descriptions_read_as_sentences(cli_run):
    # a docstring's first paragraph, wrapped in the source, is one line in the list
    code, out, _ = cli_run(["-h"], columns=400)
    listing = " ".join(out.split())
    for name, command in get_command(cli.app).commands.items():
        first = inspect.cleandoc(command.help or "").split("\n\n")[0]
        words = " ".join(first.replace("`", "").split())
        assert f"{name} {words}" in listing, name
        assert words.endswith("."), name


def test_version(cli_run):
    code, out, err = cli_run(["--version"])
    assert code == 0, err
    assert out.strip() == f"dask-replay {version('dask-replay')} (distributed {version('distributed')})"
