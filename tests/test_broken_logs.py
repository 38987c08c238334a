"""A corpus of broken logs, and what every command that reads a log makes of them.

The corpus starts from a real log: one task's life on a real ``WorkerState``,
recorded by the recorder itself (the ``task_records`` fixture). Its records
are then broken the way disks, killed writers, other tools and hostile
authors break files. Each case expects either one ``error:`` line on stderr
naming the file (and the line, where one applies) with exit code 2, or, where
the rest of the log still means something, the log read with a warning.

Every command that takes a log meets every case; the commands are found on
the app itself, so a new one cannot be left out. ``merge``, which writes a new
log from the ones it reads, has a contract of its own (``test_merge``).
"""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import typer.main

import cli
from replay.log import ClusterLog, decode_step, summary
from replay.logfile import MAX_LINE, LogError, LogWriter
from schemas import compiled
from schemas.records import VERSION

ROOT = Path(__file__).resolve().parent.parent


class Corpus:
    """The valid log of one task, as the recorder writes it, and ways to break it.

    Every access gives fresh records, free to change.
    """

    def __init__(self, task_records: Callable[..., list[dict]], jsonl: Callable[..., bytes]):
        self.records = task_records
        #: records -> the bytes of a log
        self.lines = jsonl

    @property
    def H(self) -> dict:
        """The header."""
        return self.records()[0]

    @property
    def S(self) -> list[dict]:
        """The three steps: compute x (``s1``), x done (``s2``), release x (``s3``)."""
        return self.records()[1:4]

    @property
    def E(self) -> dict:
        """The end record."""
        return self.records()[4]

    def header(self, **changes) -> dict:
        return {**self.H, **changes}

    def end(self, **changes) -> dict:
        return {**self.E, **changes}

    def valid(self) -> bytes:
        return self.lines(*self.records())

    def with_event(self, seq: int, change: Callable[[dict], object]) -> bytes:
        """The valid log with step ``seq``'s event changed in place by ``change``."""
        records = self.records()
        change(records[seq]["event"])
        return self.lines(*records)


@pytest.fixture(scope="session")
def corpus(task_records, jsonl) -> Corpus:
    c = Corpus(task_records, jsonl)
    assert [r["kind"] for r in c.records()] == ["header", "step", "step", "step", "end"]
    return c


# --- the corpus -------------------------------------------------------------


@dataclass
class Case:
    #: the bytes of the log, made from the valid one
    data: Callable[[Corpus], bytes] | None = None
    #: "error", "warning" or "ok"
    outcome: str = "error"
    #: line number the error names (None: the file as a whole)
    line: int | None = None
    #: text the message must contain
    text: str = ""
    suffix: str = ".jsonl"
    stdin: bool = False
    #: writes the file itself instead of ``data`` (big or odd files)
    write: Callable[[Path, Corpus], None] | None = None


def _gz_truncated(path: Path, c: Corpus) -> None:
    # a killed writer: the recorder's gzip writer, sync-flushed after every
    # line, copied before it is closed (no final block, no trailer), no end record
    live = path.with_name("live-" + path.name)
    writer = LogWriter(str(live), compress=True)
    try:
        for rec in c.records()[:-1]:
            writer.write(rec)
        path.write_bytes(live.read_bytes())
    finally:
        writer.close()


def _gz_corrupt(c: Corpus) -> bytes:
    data = bytearray(gzip.compress(c.valid() * 20, mtime=0))
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0x5A for b in data[mid:mid + 16])
    return bytes(data)


def _huge_line(path: Path, c: Corpus) -> None:
    # 50 MB of valid JSON in one record: larger than any real step
    with open(path, "wb") as f:
        f.write(c.lines(c.H))
        f.write(b'{"kind":"step","worker":"' + c.H["worker"].encode()
                + b'","seq":1,"handled":1.0,"event":{"cls":"PauseEvent","stimulus_id":"')
        chunk = b"a" * 2**20
        for _ in range(50):
            f.write(chunk)
        f.write(b'"}}\n')


def _deep_key(c: Corpus, depth: int) -> bytes:
    # orjson writes at most 254 levels; the reader accepts 1024
    deep = b"[" * depth + b'"x"' + b"]" * depth
    valid = c.valid()
    assert b'"key":"x"' in valid
    return valid.replace(b'"key":"x"', b'"key":' + deep, 1)


def _replace(old: bytes, new: bytes) -> Callable[[Corpus], bytes]:
    """The valid log with its first ``old`` bytes replaced."""
    def data(c: Corpus) -> bytes:
        valid = c.valid()
        assert old in valid, old
        return valid.replace(old, new, 1)
    return data


def _set(field, value):
    def change(ev):
        assert field in ev, field
        ev[field] = value
    return change


def _drop(field):
    def change(ev):
        del ev[field]
    return change


def _other_version_extra_field(c: Corpus) -> bytes:
    s = c.S
    s[0]["event"]["new_field_of_2099"] = 1
    return c.lines(c.header(distributed="2099.1.0"), *s)


def _other_version_event_class(c: Corpus) -> bytes:
    s = c.S
    s[1]["event"] = {"cls": "SpillEvent", "stimulus_id": "s2", "key": "x"}
    return c.lines(c.header(distributed="2099.1.0"), *s)


CASES: dict[str, Case] = {
    "empty file": Case(lambda c: b"", text="no worker header"),
    "blank lines only": Case(lambda c: b"\n\n  \n", text="no worker header"),
    "header only": Case(lambda c: c.lines(c.H), outcome="ok"),
    "torn last line": Case(lambda c: c.valid()[:-40], outcome="warning", text="torn last line"),
    "torn header": Case(lambda c: c.lines(c.H)[:-30], text="no worker header"),
    "invalid JSON in the middle": Case(
        lambda c: c.lines(c.H, c.S[0]) + b'{"kind": "step", oops\n' + c.lines(c.S[1]),
        line=3, text="invalid JSON"),
    "binary garbage": Case(lambda c: bytes(range(256)) * 64, line=1, text="invalid JSON"),
    "binary garbage without newline": Case(lambda c: bytes(range(11, 256)) * 64, text="no worker header"),
    "corrupt gz": Case(_gz_corrupt, suffix=".jsonl.gz", text="corrupt compressed stream"),
    "truncated gz": Case(suffix=".jsonl.gz", outcome="warning", text="compressed stream ends early",
                         write=_gz_truncated),
    "gz header only, no stream": Case(lambda c: b"\x1f\x8b\x08", suffix=".jsonl.gz", outcome="error",
                                       text="no worker header"),
    "not a JSON object": Case(lambda c: c.lines(c.H) + b"[1, 2, 3]\n", line=2, text="JSON object"),
    "unknown record kind": Case(lambda c: c.lines(c.H) + b'{"kind": "checkpoint", "worker": "w"}\n',
                                line=2, text="unknown record kind 'checkpoint'"),
    "unknown event class": Case(lambda c: c.with_event(2, _set("cls", "SpillEvent")), line=3,
                                text="unknown event class 'SpillEvent'"),
    "missing field": Case(lambda c: c.with_event(1, _drop("who_has")), line=2, text="who_has"),
    "renamed field": Case(lambda c: c.with_event(1, lambda ev: ev.update(whohas=ev.pop("who_has"))),
                          line=2, text="who_has"),
    "missing stimulus_id": Case(lambda c: c.with_event(1, _drop("stimulus_id")), line=2,
                                text="stimulus_id"),
    "wrong field type": Case(lambda c: c.with_event(1, _set("run_id", "zero")), line=2, text="run_id"),
    "wrong field type deep inside": Case(lambda c: c.with_event(1, _set("who_has", [["y", "tcp://a:1"]])),
                                         line=2, text="who_has"),
    "bad key encoding": Case(lambda c: c.with_event(1, _set("key", {"bogus": 1})), line=2, text="key"),
    "bad float tag": Case(lambda c: c.with_event(2, _set("start", {"float": "huge"})), line=3,
                          text="start"),
    "wrong envelope type": Case(lambda c: c.lines(c.H, {**c.S[0], "handled": "yesterday"}), line=2,
                                text="handled"),
    "format of another program": Case(lambda c: c.lines(c.header(format="other-tool")), line=1,
                                      text="format"),
    "format version from the future": Case(lambda c: c.lines(c.header(version=VERSION + 1), *c.S),
                                           line=1, text="newer"),
    "header missing state": Case(lambda c: c.lines({k: v for k, v in c.H.items() if k != "state"}),
                                 line=1, text="state"),
    "events before their header": Case(lambda c: c.lines(c.S[0], c.H, *c.S[1:]), line=1,
                                       text="before the header"),
    "duplicate sequence number": Case(lambda c: c.lines(c.H, c.S[0], c.S[0], *c.S[1:]), line=3,
                                      text="out of order"),
    "out-of-order sequence numbers": Case(lambda c: c.lines(c.H, c.S[1], c.S[0], c.S[2]), line=2,
                                          text="out of order"),
    "gap in sequence numbers": Case(lambda c: c.lines(c.H, c.S[0], c.S[2]), line=3, text="out of order"),
    "two headers for one worker": Case(lambda c: c.lines(c.H, c.S[0], c.H, *c.S[1:]), line=3,
                                       text="second header"),
    "step after end": Case(lambda c: c.lines(c.H, *c.S, c.E, {**c.S[2], "seq": 4}), line=6,
                           text="after the end"),
    "end with wrong count": Case(lambda c: c.lines(c.H, *c.S, c.end(seq=7)), line=5, text="end at step 7"),
    "line of 50 MB": Case(line=2, text=f"longer than {MAX_LINE} bytes", write=_huge_line),
    "deeply nested JSON": Case(lambda c: c.lines(c.H) + b"[" * 100_000 + b"]" * 100_000 + b"\n", line=2,
                               text="invalid JSON"),
    "deeply nested key": Case(lambda c: _deep_key(c, 900), line=2, text="nested too deeply"),
    "non-UTF-8 bytes": Case(_replace(b'"s2"', b'"s\xff\xfe2"'), line=3, text="UTF-8"),
    "lone surrogate escape": Case(_replace(b'"s2"', b'"s\\ud800"'), line=3, text="invalid JSON"),
    "NaN literal": Case(_replace(b'"start":0.0', b'"start":NaN'), line=3, text="invalid JSON"),
    "CRLF line ends": Case(lambda c: c.valid().replace(b"\n", b"\r\n"), outcome="warning", text="CRLF"),
    # a release outside the supported range is refused at its header
    "log of a dask version with an extra field": Case(_other_version_extra_field, line=1,
                                                      text="2099.1.0"),
    "log of a dask version with another event class": Case(_other_version_event_class, line=1,
                                                           text="2099.1.0"),
    "stdin, broken": Case(lambda c: c.lines(c.H, c.S[0]) + b"\x00garbage\n", stdin=True, line=3,
                          text="invalid JSON"),
    "stdin, torn last line": Case(lambda c: c.valid()[:-40], stdin=True, outcome="warning",
                                  text="torn last line"),
    "stdin, gzip": Case(lambda c: gzip.compress(c.valid()), suffix="", stdin=True, outcome="ok"),
    "missing file": Case(text="cannot open"),
    # a directory is a recording: this one holds no worker log
    "directory": Case(text="no .jsonl or .jsonl.gz worker logs in this directory"),
}

#: steps in the log of a case that is read (not refused)
EVENTS = {name: 0 if name == "header only" else 3 for name in CASES}


def build(name: str, tmp_path: Path, c: Corpus) -> tuple[str, bytes | None]:
    """The case's path argument and what standard input holds."""
    case = CASES[name]
    path = tmp_path / ("log" + case.suffix)
    if name == "missing file":
        return str(path), None
    if name == "directory":
        path.mkdir()
        return str(path), None
    if case.write is not None:
        case.write(path, c)
        return str(path), None
    data = case.data(c)
    if case.stdin:
        return "-", data
    path.write_bytes(data)
    return str(path), None


def shown_as(path: str) -> str:
    return "<stdin>" if path == "-" else path


# --- the reading paths ------------------------------------------------------


def read_fast(path: str) -> ClusterLog:
    """What the replay engine does: index the log, then decode every step."""
    log = ClusterLog.open(path)
    for w in log.workers:
        for lineno, rec in log.records(w):
            if rec["kind"] == "step":
                decode_step(log.path, lineno, rec, w.header)
    return log


@pytest.fixture
def stdin(monkeypatch):
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return feed


@pytest.mark.parametrize("validate", [True, False], ids=["pydantic", "fast"])
@pytest.mark.parametrize("name", list(CASES))
def test_reader(name, validate, tmp_path, stdin, corpus):
    case = CASES[name]
    path, data = build(name, tmp_path, corpus)
    if data is not None:
        stdin(data)
    read = (lambda p: ClusterLog.open(p, validate=True)) if validate else read_fast
    if case.outcome == "error":
        with pytest.raises(LogError) as info:
            read(path)
        e = info.value
        assert e.path == shown_as(path)
        assert e.line == case.line, str(e)
        assert case.text in str(e)
        assert "\n" not in str(e)
        assert len(str(e)) < 500
    else:
        log = read(path)
        assert [w.events for w in log.workers] == [EVENTS[name]]
        if case.outcome == "warning":
            assert len(log.warnings) == 1 and case.text in log.warnings[0], log.warnings
        else:
            assert log.warnings == []


def _check(path: str) -> tuple[tuple, ClusterLog | None]:
    """What ``replay check`` makes of a log: its summary or its one error line."""
    try:
        log = ClusterLog.open(path, validate=True)
    except LogError as e:
        return ("error", str(e)), None
    return ("ok", summary(log)), log


@pytest.mark.parametrize("name", list(CASES))
def test_check_compiled_and_pydantic_agree(name, tmp_path, stdin, corpus, monkeypatch):
    """``replay check`` says the same with its compiled schema (schemas.compiled)
    as the pydantic way alone, and the compiled schema answered every step
    and end record of a log it reads."""
    path, data = build(name, tmp_path, corpus)
    if data is not None:
        stdin(data)
    fast, log = _check(path)
    if data is not None:
        stdin(data)
    with monkeypatch.context() as m:
        m.setattr(compiled, "checked", lambda line: None)
        slow, slow_log = _check(path)
    assert fast == slow
    if log is not None:
        assert slow_log.checked == 0
        assert log.checked == sum(w.events + w.ended for w in log.workers) > 0 or name == "header only"


# --- every command that reads a log -----------------------------------------

#: the commands of ``replay``, as click sees them
APP = typer.main.get_command(cli.app).commands

#: the commands that read no log, and what they do instead
READ_NO_LOG = {
    "schema": "prints the JSON Schema of a log line",
    "simulate": "writes a log of its own making",
    # hostile dumps have tests of their own (test_dump.py)
    "import-dump": "reads a cluster dump, not a log",
}


def log_param(command: str):
    """The command's LOG (or LOGS) argument, or None."""
    for p in APP[command].params:
        if p.param_type_name == "argument" and p.name in ("log", "logs"):
            return p
    return None


def log_commands() -> list[str]:
    """The commands that take a log, found on the app: every one with a LOG or LOGS argument."""
    return sorted(name for name in APP if log_param(name) is not None)


COMMANDS = log_commands()

#: a value for each required parameter of a log command besides its log, by
#: name; ``{events}`` is the number of steps in the log, ``{tmp}`` a scratch folder
REQUIRED = {
    "span": "0..{events}",  # to the last step: the diff replays the whole log
    "key_or_stimulus": "x",  # the one task of the corpus
    "output": "{tmp}/merged.jsonl",
    # bisect refuses every log of the corpus before it asks the package index
    "good": "2025.2.0",
    "bad": "2025.1.0",
}


def argv(command: str, log: str, tmp: Path, events: int = 3) -> list[str]:
    """``COMMAND LOG`` and a value for every other parameter it requires."""
    args = [command, log]
    for p in APP[command].params:
        if not p.required or p is log_param(command):
            continue
        assert p.name in REQUIRED, f"replay {command}: no value for its required {p.name}: add one to REQUIRED"
        value = REQUIRED[p.name].format(events=events, tmp=tmp)
        args += [value] if p.param_type_name == "argument" else [p.opts[0], value]
    return args


def reads_stdin(command: str) -> bool:
    """Whether the command documents '-' as standard input."""
    return "'-' for stdin" in (log_param(command).help or "")


#: the commands that write a new log from the logs they read; they have a
#: contract of their own (test_merge)
TRANSFORMS = {"merge"}

#: read commands that take a directory of worker logs too: an empty one is
#: refused for holding none, not for being a directory
READS_DIRECTORIES = {"report"}


def test_read_commands_are_found():
    assert "check" in COMMANDS
    # every command of the app meets the corpus, unless it is known to read no log
    assert set(COMMANDS) == set(APP) - set(READ_NO_LOG)
    assert {"check", "load", "state", "diff", "story", "why", "verify"} <= set(COMMANDS)
    assert TRANSFORMS <= set(COMMANDS)
    for command in COMMANDS:
        argv(command, "log.jsonl", Path("tmp"))  # a value for everything each one requires


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in TRANSFORMS])
@pytest.mark.parametrize("name", list(CASES))
def test_command(name, command, tmp_path, cli_run, corpus, monkeypatch):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # where a command's default output (report.html) goes
    path, data = build(name, tmp_path, corpus)
    code, out, err = cli_run(argv(command, path, tmp_path, EVENTS[name]), stdin=data)
    assert "Traceback" not in err
    err_lines = err.splitlines()
    if case.stdin and not reads_stdin(command):
        # a command that must read its log twice, or keep it, refuses a pipe
        assert code == 2, (code, err)
        assert len(err_lines) == 1 and err_lines[0].startswith("error: "), err
        assert "standard input" in err_lines[0], err
    elif case.outcome == "error":
        assert code == 2, (code, err)
        assert len(err_lines) == 1, err
        where = shown_as(path) + (f":{case.line}:" if case.line is not None else ":")
        assert err_lines[0].startswith(f"error: {where}"), err
        if name == "directory" and command in READS_DIRECTORIES:
            assert "no .jsonl or .jsonl.gz worker logs in this directory" in err_lines[0], err
        else:
            assert case.text in err_lines[0]
    else:
        warnings = [x for x in err_lines if x.startswith("warning:")]
        if case.outcome == "warning":
            assert len(warnings) == 1 and case.text in warnings[0], err
        else:
            assert warnings == [], err
        refusal = refused_question(command, EVENTS[name])
        if refusal is None:
            assert code == 0, (code, err)
            assert not any(x.startswith("error:") for x in err_lines), err
        else:
            # the log is read; what the command was asked is not in it
            others = [x for x in err_lines if x not in warnings]
            assert (code, len(others)) == (refusal[0], 1), (code, err)
            assert refusal[1].format(path=shown_as(path), worker=corpus.H["worker"]) in others[0], err


def refused_question(command: str, events: int) -> tuple[int, str] | None:
    """``(exit code, message)`` of a command that reads a sound log of the
    corpus but finds nothing of what it is asked; None if it answers."""
    if command == "story" and events == 0:
        # the story of x, in a log of no step
        return 2, "error: {path}: no such key on {worker}: 'x' (nor is it a stimulus id)"
    if command == "bisect":
        # no predicate of `replay shrink` in the corpus's header
        return 2, "error: {path}: not a pytest file (.py) or a log written by `replay shrink -o`"
    if command == "shrink":
        # the corpus's task ends released: no stuck task to shrink the log down to
        return 1, "{worker}: no task is stuck"
    return None


#: cases where ``replay merge`` breaks its contract today (replay/merge.py);
#: strict, so that a fix shows up here as an unexpected pass
MERGE_DEFECTS = {
    "deeply nested key": (TypeError, "the reader takes JSON nested up to 1024 levels, the writer "
                                     "orjson only 254: merge cannot write the record back out"),
    "CRLF line ends": (AssertionError, "merge reads each input twice, and warns twice"),
}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=MERGE_DEFECTS[name][0],
                                               reason=MERGE_DEFECTS[name][1]))
    if name in MERGE_DEFECTS else name
    for name in CASES
])
def test_merge(name, tmp_path, cli_run, corpus):
    """``replay merge`` checks only what interleaving needs (JSON lines, record
    kinds, a header first, times) and copies records as they are. So a broken
    log is either refused at once, as the readers refuse it (one ``error:``
    line naming the file, and its line where the case has one; the wording is
    merge's own), or merged into a log that ``replay check`` refuses for the
    case's reason: merging never makes a broken log look sound."""
    case = CASES[name]
    path, data = build(name, tmp_path, corpus)
    merged = tmp_path / "merged.jsonl"
    args = argv("merge", path, tmp_path)
    assert args[-2:] == ["-o", str(merged)]
    code, out, err = cli_run(args, stdin=data)
    err_lines = err.splitlines()
    errors = [x for x in err_lines if x.startswith("error:")]
    warnings = [x for x in err_lines if x.startswith("warning:")]
    if case.stdin:
        # each input is read twice (its header first): a pipe is refused
        assert code == 2 and errors == err_lines and len(errors) == 1, err
        assert "standard input" in errors[0]
        return
    if code == 2:
        assert case.outcome == "error", f"merge refused a log the readers accept: {err}"
        # the refusal comes last, after any warning about the same file
        assert len(errors) == 1 and err_lines[-1] == errors[0], err
        assert set(err_lines) == set(errors) | set(warnings), err
        where = path + (f":{case.line}:" if case.line is not None else ":")
        assert errors[0].startswith(f"error: {where}"), err
        assert not merged.exists()
        return
    assert code == 0, (code, err)
    assert err_lines[-1].startswith(f"{merged}: "), err  # the count of records written
    assert errors == [] and len(err_lines) == len(warnings) + 1, err
    if case.outcome == "warning":
        assert len(warnings) == 1 and case.text in warnings[0], err
    else:
        assert warnings == [], err
    code, out, err = cli_run(["check", str(merged)])
    if case.outcome == "error":
        assert code == 2, (code, out, err)
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {merged}:"), err
        assert case.text in err
    else:
        assert (code, err) == (0, ""), err
        assert orjson.loads(cli_run(["check", "--json", str(merged)])[1])["workers"][0]["events"] == EVENTS[name]


def test_installed_entry_point_reads_stdin(corpus):
    # the real console script: no traceback and one line, also through a pipe
    exe = Path(sys.executable).with_name("replay")
    broken = CASES["stdin, broken"].data(corpus)
    r = subprocess.run([str(exe), "check", "-"], input=broken, capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "error: <stdin>:3: invalid JSON: unexpected character, expected a JSON value: "
        "line 1 column 1 (char 0)"
    ]
    r = subprocess.run([str(exe), "check", "--json", "-"], input=corpus.valid(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["workers"][0]["events"] == 3


# --- terminal safety --------------------------------------------------------

HOSTILE = "tcp://evil:1\x1b[31m[bold]x[/bold]\x07"


def test_strings_from_a_log_are_shown_inert(tmp_path, cli_run, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what a command writes by default (report.html) stays here
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(corpus.lines(*corpus.records(HOSTILE, sid="\x1b]0;title\x07[red]s")))
    for command in COMMANDS:
        code, out, err = cli_run(argv(command, str(path), tmp_path))
        shown = out + err
        assert "\x1b" not in shown and "\x07" not in shown, (command, shown)
        if command == "check":
            assert code == 0, err
            # markup is printed as text, the escapes as their Python spelling
            assert "tcp://evil:1\\x1b[31m[bold]x[/bold]\\x07" in out


def test_hostile_error_message_is_one_inert_line(tmp_path, cli_run, corpus):
    path = tmp_path / "hostile.jsonl"
    s = corpus.S
    s[0]["event"]["key"] = {"\x1b[2J[blink]": "\n" * 5}
    path.write_bytes(corpus.lines(corpus.H, *s))
    code, out, err = cli_run(["check", str(path)])
    assert code == 2
    assert len(err.splitlines()) == 1 and "\x1b" not in err, err


# --- nothing from a log is executed -----------------------------------------


#: the deserialisers allowed: values this project's own forked reader
#: marshals into a pipe it created, or spools to its own temporary file
#: (marshal builds data, it runs nothing), and the result a replay child
#: process of ``--scheduler`` pickles to its parent's pipe; and the one
#: evaluation: the expression a user types after ``replay shrink --expr``,
#: never log content
ALLOWED = {
    ("readahead.py", "marshal.loads"),
    ("parallel.py", "pickle.load"),
    ("shrinker.py", "eval("),
    ("writer.py", "eval("),  # replay/testcase/: the user's --expr, checked on the written test's run
    # --import: the modules the command line names, never one a log names
    ("imports.py", "import_module"),
    # the state machine's own module, by its fixed name
    ("codeid.py", "import_module"),
    # the recorder's encoders, the decoders and the tag Structs' one-entry
    # checks, generated at import from the project's own names (dask's
    # dataclass field names, the schema's tag names), never from a log
    ("generated.py", "exec("),
}


def test_no_code_path_unpickles_or_evaluates():
    sources = [*ROOT.glob("replay/**/*.py"), *ROOT.glob("schemas/*.py"), ROOT / "cli.py"]
    banned = ("pickle.load", "eval(", "exec(", "marshal.loads", "marshal.load(", "yaml.load",
              "cloudpickle", "loads_function", "__import__", "import_module", "dill")
    for src in sources:
        text = src.read_text().replace("literal_eval(", "literal_eval")
        for word in banned:
            if (src.name, word) not in ALLOWED:
                assert word not in text, (src.name, word)
    codec = (ROOT / "schemas" / "codec.py").read_text()
    assert "ast.literal_eval(text)" in codec


def test_parse_key_runs_no_code(tmp_path):
    from schemas.codec import parse_key

    marker = tmp_path / "ran"
    text = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert parse_key(text) == text
    assert parse_key("(lambda: 1)()") == "(lambda: 1)()"
    assert not marker.exists()


_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def test_paths_named_in_a_log_are_never_opened(tmp_path, cli_run, corpus, monkeypatch):
    global _opened
    monkeypatch.chdir(tmp_path)  # what a command writes by default (report.html) stays here
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(corpus.valid())
    named = str(secret)
    path = tmp_path / "log.jsonl"
    h, *s, e = corpus.records(named, sid=named, key=named)
    path.write_bytes(corpus.lines({**h, "python": named, "dask": named}, *s, e))
    _opened = []
    try:
        read_fast(str(path))
        ClusterLog.open(str(path), validate=True)
        for command in COMMANDS:
            cli_run(argv(command, str(path), tmp_path))
        opened = _opened
    finally:
        _opened = None
    assert str(path) in opened
    assert named not in opened


@pytest.mark.parametrize("seed", ["evil", "-1", "4294967296", "１２"])
def test_hash_seed_that_python_would_refuse(seed, tmp_path, cli_run, corpus):
    # replay re-executes itself with the recorded seed: a bad one must stop at the header
    path = tmp_path / "log.jsonl"
    path.write_bytes(corpus.lines(corpus.header(hash_seed=seed), *corpus.S, corpus.E))
    for validate in (True, False):
        with pytest.raises(LogError, match="hash_seed") as info:
            ClusterLog.open(str(path), validate=validate)
        assert info.value.line == 1
    code, out, err = cli_run(["check", str(path)])
    assert code == 2 and err.startswith(f"error: {path}:1: hash_seed") and len(err.splitlines()) == 1


def test_header_state_is_checked_on_the_fast_path(tmp_path, corpus):
    path = tmp_path / "log.jsonl"
    path.write_bytes(corpus.lines(corpus.header(state={}), *corpus.S, corpus.E))
    with pytest.raises(LogError, match="state.nthreads") as info:
        ClusterLog.open(str(path))
    assert info.value.line == 1
