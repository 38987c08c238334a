"""The runner ``replay bisect`` searches with: releases from the package index,
one cached venv per release, and the reproducer run in it as a subprocess.

A venv is ``<cache>/dask-replay/bisect/<package>-<version>`` (``<cache>`` is
``$XDG_CACHE_HOME`` or ``~/.cache``), made with ``uv`` when it is installed and
with ``venv`` and ``pip`` otherwise, holding ``distributed`` and ``dask`` of the
same release and ``pytest``; for a log, also this dask-replay (an editable
install of its source checkout). A file in it, written last, says it is ready:
a venv without one is made again, so a second search reuses every venv the
first one finished. A lock per venv keeps two searches from making the same
one at once.

A test file's outcome is pytest's own report (its JUnit XML): ``fail`` if a
test failed, ``error`` if one could not run or nothing was collected, ``pass``
otherwise. A log's is whether the predicate ``replay shrink`` wrote into its
header holds when the log is replayed under the release (``holds`` or
``gone``): ``python -m replay.releases probe LOG`` in the venv. Either may be
``timeout``.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import orjson
from packaging.version import InvalidVersion, Version

from replay.bisect import Trial
from replay.errors import BadInput
from replay.logfile import cache_folder

#: the dask-replay source checkout, installed into a venv that replays a log
SOURCE = Path(__file__).resolve().parent.parent
#: written last into a finished venv
READY = "dask-replay-bisect.json"
#: the longest pip or uv may take to make one venv
INSTALL_TIMEOUT = 900.0

Progress = Callable[[str], None]


def cache_dir() -> Path:
    return Path(cache_folder()) / "bisect"


# --- the package index ----------------------------------------------------------------


def parse_index(text: str) -> list[str]:
    """The final releases in ``pip index versions`` output, oldest first."""
    for line in text.splitlines():
        if line.startswith("Available versions:"):
            found = []
            for v in line.partition(":")[2].split(","):
                try:
                    parsed = Version(v.strip())
                except InvalidVersion:
                    continue  # e.g. 1.6.1.linux-x86_64, an ancient upload
                if not (parsed.is_prerelease or parsed.is_devrelease or parsed.local):
                    found.append((parsed, v.strip()))
            return [v for _, v in sorted(found)]
    return []


def available(package: str) -> list[str]:
    """Every final release of ``package`` the package index has, oldest first."""
    cmd = [sys.executable, "-m", "pip", "index", "versions", package, "--disable-pip-version-check"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise BadInput(f"the package index did not list {package}'s releases within 300 s") from None
    found = parse_index(proc.stdout)
    if not found:
        raise BadInput(f"the package index lists no releases of {package}: {_last_line(proc.stderr or proc.stdout)}")
    return found


# --- reproducers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repro:
    """What runs in each release: a pytest file, or a shrunk log and its predicate."""

    path: Path
    #: a shrunk log's header (None: a pytest file)
    header: Optional[dict] = None
    #: the user's ``--expr``, for a log shrunk with one (never taken from the log)
    expr: Optional[str] = None

    @property
    def is_log(self) -> bool:
        return self.header is not None

    def usable_under(self, version: str) -> Optional[str]:
        """Why the reproducer cannot run under ``version`` without trying; None if it may."""
        if self.is_log:
            from schemas.versions import NEWEST, OLDEST, supported

            if not supported(version):
                return f"outside the releases a log replays under ({OLDEST} to {NEWEST})"
        return None


def load_repro(path: str, expr: Optional[str] = None, *, warn: Progress | None = None) -> Repro:
    """A pytest file (``.py``), or a log written by ``replay shrink -o``, whose
    header names its predicate; ``warn`` hears what reading the log found
    wrong but could read past (a torn last line)."""
    if path == "-":
        raise BadInput("REPRO is read once per release: give a file, not standard input")
    p = Path(path)
    if p.suffix == ".py":
        if not p.is_file():
            raise BadInput("cannot open: No such file or directory", path)
        if expr is not None:
            raise BadInput("--expr is for a log shrunk with --expr, not for a test file")
        return Repro(p.resolve())
    from replay.log import ClusterLog

    log = ClusterLog.open(str(p), validate=True)  # a shrunk log is short: every line is checked here
    for w in log.warnings if warn else ():
        warn(w)
    shrunk = [w for w in log.workers if w.header.get("shrunk")]
    if len(log.workers) != 1 or not shrunk:
        raise BadInput("not a pytest file (.py) or a log written by `replay shrink -o` "
                       "(one worker, its predicate in the header)", path)
    header = shrunk[0].header
    if header["shrunk"]["predicate"] == "expr" and expr is None:
        raise BadInput(f"shrunk with --expr {header['shrunk']['expr']!r}; an expression "
                       "is never evaluated from a log: give it again with --expr", path)
    if header["shrunk"]["predicate"] != "expr" and expr is not None:
        raise BadInput(f"shrunk with {header['shrunk']['text']!r}, not an --expr", path)
    return Repro(p.resolve(), header, expr)


# --- venvs ---------------------------------------------------------------------------------------


class Unusable(Exception):
    """A release that cannot be installed or imported: its trial is skipped."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Venv:
    """The cached venv of one release."""

    package: str
    version: str
    root: Path

    @classmethod
    def of(cls, package: str, version: str) -> Venv:
        return cls(package, version, cache_dir() / f"{package}-{version}")

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def ready(self) -> Optional[dict]:
        try:
            return orjson.loads((self.root / READY).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def ensure(self, *, project: bool, progress: Progress | None = None) -> float:
        """Make the venv unless it is ready; returns the seconds spent (0: reused).
        Raises :class:`Unusable` when the release cannot be installed or imported."""
        if project and not (SOURCE / "pyproject.toml").is_file():
            raise BadInput("replaying a log under other releases needs dask-replay's source "
                           f"checkout; {SOURCE} is not one")
        with _locked(self.root.with_name(self.root.name + ".lock")):
            info = self.ready()
            if info is not None and (not project or info.get("project") == _source_id()):
                return 0.0
            start = time.perf_counter()
            if info is None:
                if progress:
                    progress(f"installing {self.package} {self.version} in {self.root}")
                shutil.rmtree(self.root, ignore_errors=True)
                self._create()
                self._install([f"distributed=={self.version}", f"dask=={self.version}", "pytest"])
                info = {"python": sys.version.split()[0], "project": None,
                        "versions": self._import_check(), "uv": bool(shutil.which("uv"))}
            if project:
                if progress:
                    progress(f"installing dask-replay into the venv of {self.version}")
                # the pins again, so that the resolver keeps the release
                self._install(["-e", str(SOURCE), f"distributed=={self.version}", f"dask=={self.version}"])
                info["project"] = _source_id()
            (self.root / READY).write_bytes(orjson.dumps(info))
            return time.perf_counter() - start

    def _create(self) -> None:
        uv = shutil.which("uv")
        if uv:
            self._call([uv, "venv", "--quiet", "--python", sys.executable, str(self.root)], "uv venv")
        else:
            self._call([sys.executable, "-m", "venv", str(self.root)], "python -m venv")

    def _install(self, requirements: list[str]) -> None:
        constraints = self.root / "constraints.txt"
        # dask releases before 2024.8.0 predate numpy 2: if anything pulls numpy in, an older one
        old = Version(self.version) < Version("2024.8.0")
        constraints.write_text("numpy<2\n" if old else "")
        uv = shutil.which("uv")
        if uv:
            cmd = [uv, "pip", "install", "--quiet", "--python", self.python, "-c", str(constraints), *requirements]
        else:
            cmd = [self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "-c", str(constraints), *requirements]
        self._call(cmd, "installing " + " ".join(r for r in requirements if r != "-e"))

    def _import_check(self) -> dict:
        code = ("import json, dask, distributed, pytest; "
                "print(json.dumps({'dask': dask.__version__, 'distributed': distributed.__version__}))")
        out = self._call([self.python, "-c", code], "import dask, distributed")
        found = orjson.loads(out.strip().splitlines()[-1])
        if found.get(self.package) != self.version:
            raise Unusable(f"the venv has {self.package} {found.get(self.package)}, not {self.version}")
        return found

    def _call(self, cmd: list[str], what: str) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                  env=_clean_env())
        except subprocess.TimeoutExpired:
            raise Unusable(f"{what}: still running after {INSTALL_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            raise Unusable(f"{what} failed: {_last_line(proc.stderr or proc.stdout)}")
        return proc.stdout


def _source_id() -> str:
    """The checkout and its declared dependencies: an editable install follows
    the code, not a dependency added since."""
    pyproject = (SOURCE / "pyproject.toml").read_bytes()
    return f"{SOURCE} {hashlib.sha256(pyproject).hexdigest()[:16]}"


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point a venv's Python elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTHONSTARTUP")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


# --- running a reproducer -----------------------------------------------------------------


def _run(cmd: list[str], timeout: float, env: dict[str, str], cwd: str) -> tuple[Optional[int], str]:
    """``(exit code, output)``; exit code None after ``timeout`` seconds, when
    the whole process group is killed (a test may have started processes)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def pytest_outcome(report: Path, code: Optional[int], output: str) -> tuple[str, str]:
    """``(outcome, note)`` from pytest's JUnit XML report of one run."""
    if code is None:
        return "timeout", ""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return "error", f"no report from pytest (exit code {code}): {_last_line(output)}"
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "errors", "failures", "skipped")}
    first = next((c for s in suites for tc in s.iter("testcase") for c in tc if c.tag in ("failure", "error")), None)
    note = "" if first is None else _first_error(first)
    if count["tests"] == 0 and not count["errors"]:
        return "error", "no tests collected"
    if count["errors"] or code not in (0, 1):
        return "error", note or f"pytest exit code {code}"
    if count["failures"]:
        return "fail", note
    if count["skipped"] == count["tests"]:
        return "all skipped", ""
    return "pass", ""


def _first_error(element: ET.Element) -> str:
    """The first ``E`` line of a failure's report (what pytest shows first),
    else its message's first line."""
    for line in (element.text or "").splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:300]
    message = (element.get("message") or "").strip().splitlines()
    return message[0][:300] if message else ""


class ReleaseRunner:
    """A :data:`replay.bisect.Runner`: runs ``repro`` under each release of a
    round, ``jobs`` side by side, each in its venv, with a timeout."""

    def __init__(self, repro: Repro, package: str = "distributed", *, timeout: float = 300.0,
                 jobs: int = 1, progress: Progress | None = None):
        self.repro = repro
        self.package = package
        self.timeout = timeout
        self.jobs = max(jobs, 1)
        self.progress = progress

    def __call__(self, releases: Sequence[str]) -> list[Trial]:
        if self.jobs == 1 or len(releases) == 1:
            return [self.trial(v) for v in releases]
        with ThreadPoolExecutor(self.jobs) as pool:
            return list(pool.map(self.trial, releases))

    def trial(self, version: str) -> Trial:
        start = time.perf_counter()
        reason = self.repro.usable_under(version)
        if reason is not None:
            return Trial(version, None, 0.0, reason)
        venv = Venv.of(self.package, version)
        try:
            setup = venv.ensure(project=self.repro.is_log, progress=self.progress)
        except Unusable as e:
            return Trial(version, None, time.perf_counter() - start, str(e))
        if self.progress:
            self.progress(f"running {self.repro.path.name} under {self.package} {version}")
        outcome, note = self.run_in(venv)
        if outcome == "unreadable":  # the log cannot be read under this release
            return Trial(version, None, time.perf_counter() - start, note, setup=setup)
        return Trial(version, outcome, time.perf_counter() - start, note, setup=setup)

    def run_in(self, venv: Venv) -> tuple[str, str]:
        with tempfile.TemporaryDirectory(prefix="dask-replay-bisect-") as tmp:
            if not self.repro.is_log:
                # alone in a folder: no conftest.py or ini file of its own folder applies
                test = Path(tmp) / self.repro.path.name
                shutil.copyfile(self.repro.path, test)
                ini = Path(tmp) / "pytest.ini"
                ini.write_text("[pytest]\n")
                report = Path(tmp) / "report.xml"
                cmd = [venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini),
                       "--rootdir", tmp, f"--junitxml={report}", str(test)]
                # only pytest's own plugins: what else is installed is not the reproducer's
                code, output = _run(cmd, self.timeout, _clean_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"), tmp)
                return pytest_outcome(report, code, output)
            cmd = [venv.python, "-m", "replay.releases", "probe", str(self.repro.path)]
            if self.repro.expr is not None:
                cmd += ["--expr", self.repro.expr]
            seed = self.repro.header.get("hash_seed") if self.repro.header.get("deterministic") else None
            env = _clean_env(**({"PYTHONHASHSEED": seed} if seed else {}))
            code, output = _run(cmd, self.timeout, env, tmp)
            if code is None:
                return "timeout", ""
            try:
                found = orjson.loads(output.strip().splitlines()[-1])
                return found["outcome"], found["note"]
            except (IndexError, orjson.JSONDecodeError, KeyError, TypeError):
                return "error", f"replay failed (exit code {code}): {_last_line(output)}"


# --- inside a release's venv ------------------------------------------------------------


def probe(path: str, expr: Optional[str] = None) -> dict:
    """Replay a shrunk log under the installed release and say whether its
    predicate holds: ``{"outcome": "holds" | "gone" | "unreadable", "note": ...}``."""
    from replay import shrinker
    from replay.history import open as open_history

    try:
        history = open_history(path).worker(None)
        predicate = shrinker.predicate_from_record(history.header["shrunk"], expr=expr)
        stimuli, _ = shrinker.stimuli_of(history)
    except BadInput as e:
        return {"outcome": "unreadable", "note": str(e)}
    run = shrinker.replay_stimuli(history.header, stimuli, track=True)
    fp = predicate.observe(run)
    if fp is not None:
        return {"outcome": "holds", "note": repr(fp)[:200]}
    if run.exception is not None:
        return {"outcome": "gone", "note": f"raises {type(run.exception).__name__} instead"}
    return {"outcome": "gone", "note": ""}


if __name__ == "__main__":
    # python -m replay.releases probe LOG [--expr EXPR], run by ReleaseRunner in a venv
    args = sys.argv[1:]
    if len(args) not in (2, 4) or args[0] != "probe" or (len(args) == 4 and args[2] != "--expr"):
        sys.exit("usage: python -m replay.releases probe LOG [--expr EXPR]")
    print(orjson.dumps(probe(args[1], args[3] if len(args) == 4 else None)).decode())
