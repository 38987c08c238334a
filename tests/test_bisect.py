"""``replay bisect``: the release where a reproducer's outcome changes.

The search (``replay.bisect``) is tested with a runner that answers from a
table: every boundary position, fixes and regressions, skipped releases,
side-by-side rounds, and the binary search against the full table of
``--keep-going``, which must agree whenever the outcome changes once. The
runner at the edge (``replay.releases``) is tested on what it reads: real
pytest reports, a real timeout, a shrunk log's predicate replayed in a
subprocess. One test installs real releases (marked ``releases``: CI runs
it once, with ``REPLAY_TEST_RELEASES=1``): a reproducer that depends on a
field ``LongRunningMsg`` gained, bisected over five releases with venvs
cached between runs.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from distributed import worker_state_machine as wsm
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import releases as r
from replay.bisect import Trial, search
from replay.errors import BadInput
from schemas.versions import ERAS

RELEASES = ["2024.11.0", "2024.12.0", "2024.12.1", "2025.1.0", "2025.2.0", "2025.3.0", "2025.3.1",
            "2025.4.0", "2025.4.1", "2025.5.0", "2025.5.1", "2025.7.0"]


class TableRunner:
    """A runner answering from ``outcomes`` (release -> outcome, None:
    skipped), keeping the rounds it was asked."""

    def __init__(self, outcomes: dict[str, str | None]):
        self.outcomes = outcomes
        self.rounds: list[list[str]] = []

    def __call__(self, releases: Sequence[str]) -> list[Trial]:
        self.rounds.append(list(releases))
        return [Trial(v, self.outcomes[v], 0.5, "cannot be installed" if self.outcomes[v] is None else "")
                for v in releases]

    @property
    def tried(self) -> list[str]:
        return [v for rnd in self.rounds for v in rnd]


def flips_at(boundary: str, before: str = "fail", after: str = "pass", skipped=()) -> dict:
    """Outcomes that change once, at ``boundary``."""
    i = RELEASES.index(boundary)
    return {v: None if v in skipped else before if k < i else after for k, v in enumerate(RELEASES)}


@pytest.mark.parametrize("boundary", RELEASES[1:])
def test_a_fix_is_found_at_every_position(boundary):
    run = TableRunner(flips_at(boundary))
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=run)
    assert b.kind == "fix" and b.found
    assert b.first == boundary and b.last == RELEASES[RELEASES.index(boundary) - 1]
    assert b.answer() == f"first good: {boundary} (last bad: {b.last})"
    # a binary search: both ends, then one release per halving of 12
    assert len(run.tried) <= 2 + 4 and all(len(rnd) <= 1 for rnd in run.rounds[1:])


@pytest.mark.parametrize("boundary", RELEASES[1:])
def test_a_regression_is_found_at_every_position(boundary):
    run = TableRunner(flips_at(boundary, before="pass", after="fail"))
    b = search(RELEASES, good=RELEASES[0], bad=RELEASES[-1], run=run)
    assert b.kind == "regression"
    assert b.answer() == f"first bad: {boundary} (last good: {RELEASES[RELEASES.index(boundary) - 1]})"


def test_the_range_is_between_the_two_releases_given():
    run = TableRunner(flips_at("2025.2.0"))
    b = search(RELEASES, good="2025.4.0", bad="2024.12.1", run=run)
    assert b.releases == RELEASES[2:8]
    assert set(run.tried) <= set(b.releases) and run.rounds[0] == ["2024.12.1", "2025.4.0"]
    assert (b.last, b.first) == ("2025.1.0", "2025.2.0")


def test_skipped_releases_are_stepped_over():
    # the midpoint and its neighbour cannot be installed; the boundary is elsewhere
    outcomes = flips_at("2025.4.1", skipped={"2025.3.1", "2025.4.0"})
    run = TableRunner(outcomes)
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=run)
    assert (b.last, b.first, b.unresolved) == ("2025.3.0", "2025.4.1", ["2025.3.1", "2025.4.0"])
    assert "2025.3.1" in run.tried or "2025.4.0" in run.tried  # it did try one
    assert b.answer() == ("first good: 2025.4.1 (last bad: 2025.3.0); skipped between them, "
                          "so it may be any of: 2025.3.1, 2025.4.0")


def test_a_boundary_next_to_a_skipped_release_is_exact_when_the_other_side_ran():
    outcomes = flips_at("2025.2.0", skipped={"2025.3.0"})
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=TableRunner(outcomes))
    assert (b.last, b.first, b.unresolved) == ("2025.1.0", "2025.2.0", [])


def test_an_end_that_cannot_be_used_is_bad_input():
    outcomes = flips_at("2025.2.0", skipped={RELEASES[0]})
    with pytest.raises(BadInput, match="--bad 2024.11.0 cannot be used: cannot be installed"):
        search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=TableRunner(outcomes))


def test_releases_not_in_the_index_are_bad_input():
    with pytest.raises(BadInput, match=r"--good 2025.6.0: not a release in the package index \(it has 2025"):
        search(RELEASES, good="2025.6.0", bad=RELEASES[0], run=TableRunner({}))
    with pytest.raises(BadInput, match="the same release"):
        search(RELEASES, good=RELEASES[0], bad=RELEASES[0], run=TableRunner({}))


def test_the_same_outcome_at_both_ends_is_no_answer():
    run = TableRunner({v: "fail" for v in RELEASES})
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=run)
    assert not b.found and run.tried == [RELEASES[0], RELEASES[-1]]
    assert b.answer() == "every release tried gives fail: no boundary between 2024.11.0 and 2025.7.0"
    run = TableRunner({v: "fail" for v in RELEASES})
    assert not search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=run, keep_going=True).found
    assert sorted(run.tried) == sorted(RELEASES)


def test_an_outcome_other_than_the_good_one_counts_as_bad():
    # good passes, bad fails; in between a release errors: that is not good
    outcomes = flips_at("2025.3.0")
    outcomes.update({"2025.3.0": "error", "2025.3.1": "error"})
    b = search(RELEASES, good=RELEASES[0], bad=RELEASES[-1],
               run=TableRunner({v: {"fail": "pass", "pass": "fail"}.get(o, o) for v, o in outcomes.items()}))
    assert (b.kind, b.first, b.last) == ("regression", "2025.3.0", "2025.2.0")
    # and in a fix, an error after the bad releases is not the fix yet
    outcomes = flips_at("2025.4.0")
    outcomes.update({"2025.3.0": "error", "2025.3.1": "error"})
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=TableRunner(outcomes))
    assert (b.kind, b.first, b.last) == ("fix", "2025.4.0", "2025.3.1")


def test_keep_going_runs_everything_and_answers_the_last_change():
    # fixed, broken again, fixed for good at 2025.5.0
    outcomes = {v: "fail" for v in RELEASES}
    outcomes.update({"2025.1.0": "pass", "2025.2.0": "pass", "2025.5.0": "pass", "2025.5.1": "pass",
                     "2025.7.0": "pass"})
    run = TableRunner(outcomes)
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=run, keep_going=True, jobs=3)
    assert sorted(run.tried) == sorted(RELEASES) and all(len(rnd) <= 3 for rnd in run.rounds)
    assert [t.release for t in b.tried()] == RELEASES
    assert (b.last, b.first) == ("2025.4.1", "2025.5.0")


def test_jobs_try_several_releases_a_round_and_need_fewer_rounds():
    one, three = TableRunner(flips_at("2025.4.1")), TableRunner(flips_at("2025.4.1"))
    b1 = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=one)
    b3 = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=three, jobs=3)
    assert (b1.first, b1.last) == (b3.first, b3.last) == ("2025.4.1", "2025.4.0")
    assert max(len(rnd) for rnd in three.rounds) == 3
    assert len(three.rounds) < len(one.rounds)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 40),
    data=st.data(),
    jobs=st.integers(1, 4),
    fix=st.booleans(),
)
def test_binary_search_and_the_full_table_agree(n, data, jobs, fix):
    """On outcomes that change once, with any releases skipped, the search
    brackets the true boundary between two releases that ran, with only
    skipped ones between them, and keep-going's full table gives the same."""
    releases = [f"{2000 + i}.1.0" for i in range(n)]
    boundary = data.draw(st.integers(1, n - 1), label="boundary")
    skipped = data.draw(st.sets(st.integers(1, n - 2)), label="skipped") if n > 2 else set()
    before, after = ("fail", "pass") if fix else ("pass", "fail")
    outcomes = {v: None if i in skipped else before if i < boundary else after for i, v in enumerate(releases)}
    good, bad = (releases[-1], releases[0]) if fix else (releases[0], releases[-1])
    b = search(releases, good, bad, TableRunner(outcomes), jobs=jobs)
    full = search(releases, good, bad, TableRunner(outcomes), jobs=jobs, keep_going=True)
    last, first = releases.index(b.last), releases.index(b.first)
    assert last < boundary <= first
    assert outcomes[b.last] == before and outcomes[b.first] == after
    assert all(i in skipped for i in range(last + 1, first))
    assert (full.last, full.first, full.unresolved) == (b.last, b.first, b.unresolved)


def test_the_table_and_json_name_every_trial():
    from rich.console import Console

    outcomes = flips_at("2025.2.0", skipped={"2025.1.0"})
    b = search(RELEASES, good=RELEASES[-1], bad=RELEASES[0], run=TableRunner(outcomes))
    console = Console(width=200, record=True, color_system=None)
    console.print(b)
    text = console.export_text()
    assert "2024.11.0 (bad)" in text and "2025.7.0 (good)" in text
    assert "skipped" in text and "cannot be installed" in text
    assert text.rstrip().endswith(b.answer())
    j = b.to_json()
    assert [t["release"] for t in j["trials"]] == [t.release for t in b.tried()]
    assert j["kind"] == "fix" and j["first"] == "2025.2.0" and j["answer"] == b.answer()


# --- the runner's edge: the package index, pytest's report, a shrunk log ----------------------


def test_index_listing_keeps_final_releases_oldest_first():
    # as `pip index versions distributed` prints it (abridged)
    text = ("distributed (2026.8.0)\n"
            "Available versions: 2026.8.0, 2025.10.0, 2025.9.0, 2025.2.0, 2023.3.2.1, 2023.3.2, 2.30.1, "
            "1.6.1.linux-x86_64, 1.0.0\n")
    assert r.parse_index(text) == ["1.0.0", "2.30.1", "2023.3.2", "2023.3.2.1", "2025.2.0", "2025.9.0",
                                   "2025.10.0", "2026.8.0"]
    assert r.parse_index("WARNING: nothing\n") == []


@pytest.fixture
def this_venv() -> r.Venv:
    """The venv running the tests, as if it were a release's (nothing installed)."""
    import distributed

    return r.Venv("distributed", distributed.__version__, Path(sys.prefix))


def run_test_source(tmp_path, this_venv, source: str, *, timeout: float = 60) -> tuple[str, str]:
    test = tmp_path / "test_repro.py"
    test.write_text(source)
    runner = r.ReleaseRunner(r.load_repro(str(test)), timeout=timeout)
    return runner.run_in(this_venv)


def test_a_test_files_outcome_is_pytests_report(tmp_path, this_venv):
    # the file's own folder has a conftest that would break every run: it must not apply
    (tmp_path / "conftest.py").write_text("raise RuntimeError('not this conftest')\n")
    assert run_test_source(tmp_path, this_venv, "def test_ok():\n    assert 1\n") == ("pass", "")
    outcome, note = run_test_source(tmp_path, this_venv, "def test_no():\n    assert 1 == 2, 'one is not two'\n")
    assert outcome == "fail" and "one is not two" in note
    outcome, note = run_test_source(tmp_path, this_venv, "import no_such_module\n\ndef test_x():\n    pass\n")
    assert outcome == "error" and "no_such_module" in note
    outcome, note = run_test_source(
        tmp_path, this_venv, "import pytest\n\n@pytest.fixture\ndef f():\n    raise OSError('x')\n\n"
        "def test_x(f):\n    pass\n")
    assert outcome == "error"
    assert run_test_source(tmp_path, this_venv, "X = 1\n") == ("error", "no tests collected")


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path, this_venv):
    pidfile = tmp_path / "child.pid"
    source = (
        "import subprocess, sys, time\n\n"
        "def test_hangs():\n"
        f"    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"    open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "    time.sleep(600)\n"
    )
    start = time.monotonic()
    assert run_test_source(tmp_path, this_venv, source, timeout=8) == ("timeout", "")
    assert time.monotonic() - start < 60
    child = int(pidfile.read_text())
    for _ in range(50):  # the kill is delivered; the child may take a moment to be reaped
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                break
        time.sleep(0.1)
    else:
        pytest.fail("the test's child process outlived the timeout")


@pytest.fixture
def shrunk_log(tmp_path, record_log, gather_failure, cli_run):
    """``(path, key)``: a log shrunk by ``replay shrink --state KEY=error`` (dask #6705: y waits forever)."""
    peer = "tcp://127.0.0.1:1299"
    log = record_log(tmp_path / "full.jsonl", [
        wsm.ComputeTaskEvent.dummy("y", who_has={"x": [peer]}, stimulus_id="s1"),
        wsm.ComputeTaskEvent.dummy("z", stimulus_id="s2"),
        gather_failure(peer, 1, "s3"),
    ])
    out = tmp_path / "min.jsonl"
    code, _, err = cli_run(["shrink", log, "--state", "x=error", "-o", out])
    assert code == 0, err
    return out


def test_a_shrunk_log_keeps_its_predicate_in_its_header(shrunk_log):
    header = orjson.loads(shrunk_log.read_bytes().splitlines()[0])
    assert header["shrunk"] == {"predicate": "state", "text": "--state x=error", "key": "x", "state": "error"}
    repro = r.load_repro(str(shrunk_log))
    assert repro.is_log and repro.usable_under("2023.12.1") is not None and repro.usable_under("2025.1.0") is None


def test_a_shrunk_logs_outcome_is_its_predicate_replayed_in_a_subprocess(shrunk_log, this_venv, tmp_path):
    assert r.probe(str(shrunk_log))["outcome"] == "holds"  # in this process
    runner = r.ReleaseRunner(r.load_repro(str(shrunk_log)))
    outcome, note = runner.run_in(this_venv)  # `python -m replay.releases probe` in the venv's python
    assert outcome == "holds" and "'error'" in note
    # the same log, the predicate asking for another state: gone, in both paths
    lines = shrunk_log.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    header["shrunk"] = {**header["shrunk"], "state": "memory", "text": "--state x=memory"}
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
    assert r.probe(str(other))["outcome"] == "gone"
    assert r.ReleaseRunner(r.load_repro(str(other))).run_in(this_venv)[0] == "gone"


def test_an_expression_is_never_taken_from_the_log(tmp_path, record_log, cli_run):
    full = record_log(tmp_path / "full.jsonl", [wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"),
                                                 wsm.ComputeTaskEvent.dummy("z", stimulus_id="s2")])
    log = tmp_path / "min.jsonl"
    code, _, err = cli_run(["shrink", full, "--expr", "ws.tasks['x'].state == 'executing'", "-o", log])
    assert code == 0, err
    header = orjson.loads(log.read_bytes().splitlines()[0])
    assert header["shrunk"]["predicate"] == "expr"
    code, _, err = cli_run(["bisect", log, "--good", "2025.2.0", "--bad", "2025.1.0"])
    assert code == 2 and "never evaluated from a log" in err and len(err.splitlines()) == 1
    # given again by the user, it is the user's: evaluated
    assert r.probe(str(log), expr="len(ws.tasks) == 0")["outcome"] == "gone"
    assert r.probe(str(log), expr="ws.tasks['x'].state == 'executing'")["outcome"] == "holds"


def test_what_bisect_cannot_use_is_one_line_exit_2(tmp_path, cli_run, fixture_path):
    code, _, err = cli_run(["bisect", tmp_path / "nope.py", "--good", "2025.2.0", "--bad", "2025.1.0"])
    assert (code, err) == (2, f"error: {tmp_path / 'nope.py'}: cannot open: No such file or directory\n")
    code, _, err = cli_run(["bisect", fixture_path("stuck-6705.jsonl"), "--good", "2025.2.0", "--bad", "2025.1.0"])
    assert code == 2 and "not a pytest file (.py) or a log written by `replay shrink -o`" in err
    code, _, err = cli_run(["bisect", fixture_path("stuck-6705.jsonl"), "--good", "1", "--bad", "2",
                            "--package", "numpy"])
    assert code == 2 and "--package" in err


# --- real releases --------------------------------------------------------------------------

#: a reproducer that depends on a field dask added: a seceded task's
#: ``LongRunningMsg`` names its run
RUN_ID_TEST = '''\
from distributed.worker_state_machine import (
    ComputeTaskEvent, Execute, LongRunningMsg, SecedeEvent, WorkerState,
)


def test_long_running_msg_names_the_run():
    ws = WorkerState(nthreads=1, address="127.0.0.1:1", validate=True)
    instructions = ws.handle_stimulus(ComputeTaskEvent.dummy("x", run_id=7, stimulus_id="s1"))
    assert instructions == [Execute(key="x", stimulus_id="s1")]
    instructions = ws.handle_stimulus(SecedeEvent(key="x", compute_duration=1.0, stimulus_id="s2"))
    assert len(instructions) == 1 and isinstance(instructions[0], LongRunningMsg)
    assert instructions[0].run_id == 7
'''

real_releases = pytest.mark.skipif(
    not os.environ.get("REPLAY_TEST_RELEASES"),
    reason="installs dask releases into cached venvs; set REPLAY_TEST_RELEASES=1 (.ci/run does, once)",
)


@real_releases
def test_bisect_finds_the_release_that_added_a_field(tmp_path, cli_run):
    # the first release whose LongRunningMsg has run_id, from the release tags (schemas/versions.py)
    added = next(e.first for e in ERAS if "run_id" not in e.log_only.get("LongRunningMsg", ()))
    test = tmp_path / "test_run_id.py"
    test.write_text(RUN_ID_TEST)
    args = ["bisect", test, "--bad", "2024.12.0", "--good", "2025.3.0", "--json"]
    code, out, err = cli_run(args, timeout=1800)
    assert code == 0, err
    first = orjson.loads(out)
    assert first["releases"] == ["2024.12.0", "2024.12.1", "2025.1.0", "2025.2.0", "2025.3.0"]
    assert first["kind"] == "fix" and first["first"] == added
    by = {t["release"]: t for t in first["trials"]}
    assert by["2024.12.0"]["outcome"] == "fail" and "run_id" in by["2024.12.0"]["note"]
    assert by[added]["outcome"] == "pass"
    assert first["last"] == first["releases"][first["releases"].index(added) - 1]
    # a second run makes no venv: every one is reused
    code, out, err = cli_run(args, timeout=600)
    again = orjson.loads(out)
    assert code == 0 and again["answer"] == first["answer"]
    assert [t["release"] for t in again["trials"]] == [t["release"] for t in first["trials"]]
    assert all(t["setup_seconds"] == 0 for t in again["trials"])


@real_releases
def test_bisect_replays_a_shrunk_log_under_each_release(tmp_path, record_log, cli_run):
    # TaskState.duration went with ComputeTaskEvent.duration (schemas/versions.py): a
    # log's predicate over the final state that holds only without it
    gone = next(e.first for e in ERAS if "ComputeTaskEvent" not in e.class_only)
    full = record_log(tmp_path / "full.jsonl", [wsm.ComputeTaskEvent.dummy("x", stimulus_id="s1"),
                                                 wsm.ComputeTaskEvent.dummy("z", stimulus_id="s2")])
    expr = "not hasattr(ws.tasks['x'], 'duration')"
    log = tmp_path / "min.jsonl"
    code, _, err = cli_run(["shrink", full, "--expr", expr, "-o", log])
    assert code == 0, err
    code, out, err = cli_run(["bisect", log, "--expr", expr, "--bad", "2025.1.0", "--good", gone, "--json"],
                             timeout=1800)
    assert code == 0, err
    found = orjson.loads(out)
    by = {t["release"]: t["outcome"] for t in found["trials"]}
    assert (found["first"], by[found["first"]], by["2025.1.0"]) == (gone, "holds", "gone")
