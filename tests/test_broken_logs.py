"""A corpus of broken logs, and what every command that reads a log makes of them.

The corpus is built here, from real events encoded by the recorder's own
encoder, then broken the way disks, killed writers, other tools and hostile
authors break files. Each case expects either one ``error:`` line on stderr
naming the file (and the line, where one applies) with exit code 2, or, where
the rest of the log still means something, the log read with a warning.
"""
from __future__ import annotations

import gzip
import inspect
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dask
import distributed
import orjson
import pytest
import typer
from distributed import worker_state_machine as wsm

import cli
from replay.log import ClusterLog, decode_step
from replay.logfile import MAX_LINE, LogError, LogWriter
from replay.record import state_inputs
from schemas.convert import encode_event, encode_instruction
from schemas.records import FORMAT, VERSION

ADDRESS = "tcp://127.0.0.1:40001"
ROOT = Path(__file__).resolve().parent.parent


def header(worker: str = ADDRESS, **changes) -> dict:
    """A header as ``Session._write_header`` writes it, for a fresh real WorkerState."""
    ws = wsm.WorkerState(nthreads=1, address=worker, validate=True)
    rec = {
        "kind": "header",
        "format": FORMAT,
        "version": VERSION,
        "worker": worker,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "started": 1700000000.0,
        "deterministic": True,
        "hash_seed": os.environ.get("PYTHONHASHSEED"),
        "from_empty": True,
        "initial_tasks": 0,
        "state": state_inputs(ws),
    }
    rec.update(changes)
    return rec


def steps(worker: str = ADDRESS, sid: str = "s", key: str = "x") -> list[dict]:
    """Step records of a real WorkerState computing one task, as the recorder writes them."""
    ws = wsm.WorkerState(nthreads=1, address=worker, validate=True)
    events = [
        wsm.ComputeTaskEvent.dummy(key, stimulus_id=f"{sid}1"),
        wsm.ExecuteSuccessEvent.dummy(key, run_id=0, stimulus_id=f"{sid}2"),
        wsm.FreeKeysEvent(keys=[key], stimulus_id=f"{sid}3"),
    ]
    out = []
    for seq, ev in enumerate(events, 1):
        encoded = encode_event(ev)
        instructions = ws.handle_stimulus(ev)
        out.append({
            "kind": "step", "worker": worker, "seq": seq, "handled": 1700000000.0 + seq,
            "event": encoded, "instructions": [encode_instruction(i) for i in instructions],
        })
    return out


def end(worker: str = ADDRESS, seq: int = 3) -> dict:
    return {"kind": "end", "worker": worker, "seq": seq, "time": 1700000010.0, "reason": "teardown"}


def lines(*records: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def valid_log() -> bytes:
    return lines(header(), *steps(), end())


def with_event(seq: int, change) -> bytes:
    """The valid log with step ``seq``'s event changed in place by ``change``."""
    s = steps()
    change(s[seq - 1]["event"])
    return lines(header(), *s, end())


# --- the corpus -------------------------------------------------------------


@dataclass
class Case:
    data: bytes | None = None
    #: "error", "warning" or "ok"
    outcome: str = "error"
    #: line number the error names (None: the file as a whole)
    line: int | None = None
    #: text the message must contain
    text: str = ""
    suffix: str = ".jsonl"
    stdin: bool = False
    #: writes the file itself instead of ``data`` (big or odd files)
    make: object = None


def _gz_truncated() -> bytes:
    buf = io.BytesIO()
    w = LogWriter.__new__(LogWriter)  # the recorder's writer, on a memory file
    w.path, w._raw = "mem", buf
    w._gz = gzip.GzipFile(fileobj=buf, mode="ab")
    for rec in (header(), *steps()):
        w.write(rec)
    # a killed writer: sync-flushed lines, no final block, no trailer
    return buf.getvalue()


def _gz_corrupt() -> bytes:
    data = bytearray(gzip.compress(valid_log() * 20, mtime=0))
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0x5A for b in data[mid:mid + 16])
    return bytes(data)


def _huge_line(path: Path) -> None:
    # 50 MB of valid JSON in one record: larger than any real step
    with open(path, "wb") as f:
        f.write(lines(header()))
        f.write(b'{"kind":"step","worker":"' + ADDRESS.encode() + b'","seq":1,"handled":1.0,"event":{"cls":"PauseEvent","stimulus_id":"')
        chunk = b"a" * 2**20
        for _ in range(50):
            f.write(chunk)
        f.write(b'"}}\n')


def _deep_key(depth: int) -> bytes:
    # orjson writes at most 254 levels; the reader accepts 1024
    deep = b"[" * depth + b'"x"' + b"]" * depth
    return valid_log().replace(b'"key":"x"', b'"key":' + deep, 1)


def _set(field, value):
    def change(ev):
        ev[field] = value
    return change


def _drop(field):
    def change(ev):
        del ev[field]
    return change


def _other_version_extra_field() -> bytes:
    s = steps()
    s[0]["event"]["new_field_of_2099"] = 1
    return lines(header(distributed="2099.1.0"), *s)


def _other_version_event_class() -> bytes:
    s = steps()
    s[1]["event"] = {"cls": "SpillEvent", "stimulus_id": "s2", "key": "x"}
    return lines(header(distributed="2099.1.0"), *s)


H, S, E = header(), steps(), end()

CASES: dict[str, Case] = {
    "empty file": Case(b"", text="no worker header"),
    "blank lines only": Case(b"\n\n  \n", text="no worker header"),
    "header only": Case(lines(H), outcome="ok"),
    "torn last line": Case(valid_log()[:-40], outcome="warning", text="torn last line"),
    "torn header": Case(lines(H)[:-30], text="no worker header"),
    "invalid JSON in the middle": Case(lines(H, S[0]) + b'{"kind": "step", oops\n' + lines(S[1]),
                                       line=3, text="invalid JSON"),
    "binary garbage": Case(bytes(range(256)) * 64, line=1, text="invalid JSON"),
    "binary garbage without newline": Case(bytes(range(11, 256)) * 64, text="no worker header"),
    "corrupt gz": Case(suffix=".jsonl.gz", text="corrupt compressed stream", make=_gz_corrupt),
    "truncated gz": Case(suffix=".jsonl.gz", outcome="warning", text="compressed stream ends early",
                         make=_gz_truncated),
    "gz header only, no stream": Case(b"\x1f\x8b\x08", suffix=".jsonl.gz", outcome="error",
                                       text="no worker header"),
    "not a JSON object": Case(lines(H) + b"[1, 2, 3]\n", line=2, text="JSON object"),
    "unknown record kind": Case(lines(H) + b'{"kind": "checkpoint", "worker": "w"}\n', line=2,
                                text="unknown record kind 'checkpoint'"),
    "unknown event class": Case(with_event(2, _set("cls", "SpillEvent")), line=3,
                                text="unknown event class 'SpillEvent'"),
    "missing field": Case(with_event(1, _drop("who_has")), line=2, text="who_has"),
    "renamed field": Case(with_event(1, lambda ev: ev.update(whohas=ev.pop("who_has"))), line=2,
                          text="who_has"),
    "missing stimulus_id": Case(with_event(1, _drop("stimulus_id")), line=2, text="stimulus_id"),
    "wrong field type": Case(with_event(1, _set("run_id", "zero")), line=2, text="run_id"),
    "wrong field type deep inside": Case(with_event(1, _set("who_has", [["y", "tcp://a:1"]])), line=2,
                                         text="who_has"),
    "bad key encoding": Case(with_event(1, _set("key", {"bogus": 1})), line=2, text="key"),
    "bad float tag": Case(with_event(2, _set("start", {"float": "huge"})), line=3, text="start"),
    "wrong envelope type": Case(lines(H, {**S[0], "handled": "yesterday"}), line=2, text="handled"),
    "format of another program": Case(lines(header(format="other-tool")), line=1, text="format"),
    "format version from the future": Case(lines(header(version=VERSION + 1), *S), line=1,
                                           text="newer"),
    "header missing state": Case(lines({k: v for k, v in H.items() if k != "state"}), line=1,
                                 text="state"),
    "events before their header": Case(lines(S[0], H, *S[1:]), line=1, text="before the header"),
    "duplicate sequence number": Case(lines(H, S[0], S[0], *S[1:]), line=3, text="out of order"),
    "out-of-order sequence numbers": Case(lines(H, S[1], S[0], S[2]), line=2, text="out of order"),
    "gap in sequence numbers": Case(lines(H, S[0], S[2]), line=3, text="out of order"),
    "two headers for one worker": Case(lines(H, S[0], H, *S[1:]), line=3, text="second header"),
    "step after end": Case(lines(H, *S, E, {**S[2], "seq": 4}), line=6, text="after the end"),
    "end with wrong count": Case(lines(H, *S, end(seq=7)), line=5, text="end at step 7"),
    "line of 50 MB": Case(line=2, text=f"longer than {MAX_LINE} bytes", make=_huge_line),
    "deeply nested JSON": Case(lines(H) + b"[" * 100_000 + b"]" * 100_000 + b"\n", line=2,
                               text="invalid JSON"),
    "deeply nested key": Case(_deep_key(900), line=2, text="nested too deeply"),
    "non-UTF-8 bytes": Case(valid_log().replace(b'"s2"', b'"s\xff\xfe2"'), line=3, text="UTF-8"),
    "lone surrogate escape": Case(valid_log().replace(b'"s2"', b'"s\\ud800"'), line=3,
                                  text="invalid JSON"),
    "NaN literal": Case(valid_log().replace(b'"start":0.0', b'"start":NaN'), line=3,
                        text="invalid JSON"),
    "CRLF line ends": Case(valid_log().replace(b"\n", b"\r\n"), outcome="warning", text="CRLF"),
    "log of a dask version with an extra field": Case(make=_other_version_extra_field, line=2,
                                                      text="2099.1.0"),
    "log of a dask version with another event class": Case(make=_other_version_event_class, line=3,
                                                           text="2099.1.0"),
    "stdin, broken": Case(lines(H, S[0]) + b"\x00garbage\n", stdin=True, line=3, text="invalid JSON"),
    "stdin, torn last line": Case(valid_log()[:-40], stdin=True, outcome="warning",
                                  text="torn last line"),
    "stdin, gzip": Case(suffix="", stdin=True, outcome="ok", make=lambda: gzip.compress(valid_log())),
    "missing file": Case(text="cannot open"),
    "directory": Case(text="cannot open"),
}


def build(name: str, tmp_path: Path) -> tuple[str, bytes | None]:
    """The case's path argument and what standard input holds."""
    case = CASES[name]
    path = tmp_path / ("log" + case.suffix)
    if name == "missing file":
        return str(path), None
    if name == "directory":
        path.mkdir()
        return str(path), None
    data = case.data
    if callable(case.make):
        made = case.make(path) if name == "line of 50 MB" else case.make()
        if made is not None:
            data = made
    if case.stdin:
        return "-", data
    if data is not None:
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
def test_reader(name, validate, tmp_path, stdin):
    case = CASES[name]
    path, data = build(name, tmp_path)
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
        assert [w.events for w in log.workers] == [3 if name != "header only" else 0]
        if case.outcome == "warning":
            assert len(log.warnings) == 1 and case.text in log.warnings[0], log.warnings
        else:
            assert log.warnings == []


# --- every command that reads a log -----------------------------------------


def read_commands() -> list[str]:
    """Commands of ``cli.app`` that read logs given as their first argument.

    Commands that need more than a log (such as an output file to write) are
    transformations, not readers, and are left out.
    """
    found = []
    for info in cli.app.registered_commands:
        callback = info.callback
        params = list(inspect.signature(callback).parameters.values())
        if not params or not params[0].name.startswith("log"):
            continue
        required = [
            p for p in params[1:]
            if isinstance(p.default, (typer.models.OptionInfo, typer.models.ArgumentInfo))
            and p.default.default is ...
        ]
        name = info.name or callback.__name__.replace("_", "-")
        # a server would answer a good log forever; it opens logs as `load` does
        if not required and name != "serve":
            found.append(name)
    return sorted(found)


COMMANDS = read_commands()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["replay", *args]
    try:
        with pytest.raises(SystemExit) as info:
            cli.main()
            sys.exit(0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out, captured.err


def test_read_commands_are_found():
    assert "check" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", list(CASES))
def test_command(name, command, tmp_path, capsys, stdin):
    case = CASES[name]
    path, data = build(name, tmp_path)
    if data is not None:
        stdin(data)
    code, out, err = run_cli([command, path], capsys)
    assert "Traceback" not in err
    err_lines = err.splitlines()
    if case.outcome == "error":
        assert code == 2, (code, err)
        assert len(err_lines) == 1, err
        where = shown_as(path) + (f":{case.line}:" if case.line is not None else ":")
        assert err_lines[0].startswith(f"error: {where}"), err
        assert case.text in err_lines[0]
    else:
        assert code == 0, (code, err)
        warnings = [x for x in err_lines if x.startswith("warning:")]
        if case.outcome == "warning":
            assert len(warnings) == 1 and case.text in warnings[0], err
        else:
            assert warnings == [], err
        assert not any(x.startswith("error:") for x in err_lines), err


def test_installed_entry_point_reads_stdin(tmp_path):
    # the real console script: no traceback and one line, also through a pipe
    exe = Path(sys.executable).with_name("replay")
    broken = CASES["stdin, broken"].data
    r = subprocess.run([str(exe), "check", "-"], input=broken, capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "error: <stdin>:3: invalid JSON: unexpected character, expected a JSON value: "
        "line 1 column 1 (char 0)"
    ]
    r = subprocess.run([str(exe), "check", "--json", "-"], input=valid_log(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["workers"][0]["events"] == 3


# --- terminal safety --------------------------------------------------------

HOSTILE = "tcp://evil:1\x1b[31m[bold]x[/bold]\x07"


def test_strings_from_a_log_are_shown_inert(tmp_path, capsys):
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(lines(header(HOSTILE), *steps(HOSTILE, sid="\x1b]0;title\x07[red]s")))
    for command in COMMANDS:
        code, out, err = run_cli([command, str(path)], capsys)
        shown = out + err
        assert "\x1b" not in shown and "\x07" not in shown, (command, shown)
        if command == "check":
            assert code == 0, err
            # markup is printed as text, the escapes as their Python spelling
            assert "tcp://evil:1\\x1b[31m[bold]x[/bold]\\x07" in out


def test_hostile_error_message_is_one_inert_line(tmp_path, capsys):
    path = tmp_path / "hostile.jsonl"
    s = steps()
    s[0]["event"]["key"] = {"\x1b[2J[blink]": "\n" * 5}
    path.write_bytes(lines(header(), *s))
    code, out, err = run_cli(["check", str(path)], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "\x1b" not in err, err


# --- nothing from a log is executed -----------------------------------------


#: the one deserialiser allowed: values this project's own forked reader
#: marshals into a pipe it created, or spools to its own temporary file
#: (marshal builds data, it runs nothing)
ALLOWED = {("prefetch.py", "marshal.loads")}


def test_no_code_path_unpickles_or_evaluates():
    sources = [*ROOT.glob("replay/*.py"), *ROOT.glob("schemas/*.py"), ROOT / "cli.py"]
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


def test_paths_named_in_a_log_are_never_opened(tmp_path, capsys):
    global _opened
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(valid_log())
    named = str(secret)
    path = tmp_path / "log.jsonl"
    s = steps(named, sid=named, key=named)
    path.write_bytes(lines(header(named, python=named, dask=named), *s, end(named)))
    _opened = []
    try:
        read_fast(str(path))
        ClusterLog.open(str(path), validate=True)
        for command in COMMANDS:
            run_cli([command, str(path)], capsys)
        opened = _opened
    finally:
        _opened = None
    assert str(path) in opened
    assert named not in opened


@pytest.mark.parametrize("seed", ["evil", "-1", "4294967296", "１２"])
def test_hash_seed_that_python_would_refuse(seed, tmp_path, capsys):
    # replay re-executes itself with the recorded seed: a bad one must stop at the header
    path = tmp_path / "log.jsonl"
    path.write_bytes(lines(header(hash_seed=seed), *steps(), end()))
    for validate in (True, False):
        with pytest.raises(LogError, match="hash_seed") as info:
            ClusterLog.open(str(path), validate=validate)
        assert info.value.line == 1
    code, out, err = run_cli(["check", str(path)], capsys)
    assert code == 2 and err.startswith(f"error: {path}:1: hash_seed") and len(err.splitlines()) == 1


def test_header_state_is_checked_on_the_fast_path(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(lines(header(state={}), *steps(), end()))
    with pytest.raises(LogError, match="state.nthreads") as info:
        ClusterLog.open(str(path))
    assert info.value.line == 1
