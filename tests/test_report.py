"""``replay report``: the data it draws, checked against dask's semantics and
against ``replay why``; the page, checked for external URLs and in a real
headless Chromium, offline.

The expected bars are derived here from the recorded step lines themselves
(not from the replay the report walks): an execution runs from the step whose
recorded instructions hold ``Execute(key)`` to the first later step handling
that key's ``ExecuteSuccessEvent``/``ExecuteFailureEvent``/``RescheduleEvent``;
a transfer from ``GatherDep(worker=peer)`` to the first later
``GatherDep*Event`` from that peer (a worker has one transfer in flight per
peer). What is not finished is what ``replay why`` answers when replaying
(``REPLAY_INDEX=off``), while the report asks the log's index.
"""
from __future__ import annotations

import gzip
import html
import os
import re
import shutil
import subprocess


import orjson
import pytest

import replay
from replay.report import PLOT_WIDTH, UNFINISHED, build
from replay.source import INDEX_ENV, ReplayedSource, open_source
from schemas.codec import decode_collection, decode_key

EXECUTE_DONE = {"ExecuteSuccessEvent": "success", "ExecuteFailureEvent": "failure", "RescheduleEvent": "rescheduled"}
GATHER_DONE = {"GatherDepSuccessEvent": "success", "GatherDepBusyEvent": "busy", "GatherDepFailureEvent": "failure",
               "GatherDepNetworkFailureEvent": "network failure"}


def _lines(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def expected_bars(path: str) -> dict[str, dict]:
    """worker -> {"execute"/"transfer": {(keys, start step, stop step, outcome)}, "handled": {step: time}},
    from the recorded lines."""
    out: dict[str, dict] = {}
    steps: dict[str, list[dict]] = {}
    for rec in _lines(path):
        if rec.get("kind") == "step":
            steps.setdefault(rec["worker"], []).append(rec)
    for worker, recs in steps.items():
        recs.sort(key=lambda r: r["seq"])
        execs, transfers = set(), set()
        for i, rec in enumerate(recs):
            for inst in rec.get("instructions") or ():
                if inst["cls"] == "Execute":
                    key = decode_key(inst["key"])
                    answer = next(((r["seq"], EXECUTE_DONE[r["event"]["cls"]]) for r in recs[i + 1:]
                                   if r["event"]["cls"] in EXECUTE_DONE and decode_key(r["event"]["key"]) == key),
                                  (None, UNFINISHED))
                    execs.add(((key,), rec["seq"], *answer))
                elif inst["cls"] == "GatherDep":
                    keys = frozenset(decode_collection(inst["to_gather"]))
                    answer = next(((r["seq"], GATHER_DONE[r["event"]["cls"]]) for r in recs[i + 1:]
                                   if r["event"]["cls"] in GATHER_DONE and r["event"]["worker"] == inst["worker"]),
                                  (None, UNFINISHED))
                    transfers.add((keys, inst["worker"], rec["seq"], *answer))
        out[worker] = {"execute": execs, "transfer": transfers, "handled": {r["seq"]: r["handled"] for r in recs}}
    return out


@pytest.fixture
def copied(tmp_path):
    """A fixture log copied where its index can be written."""
    def copy(path: str) -> str:
        dest = str(tmp_path / os.path.basename(path))
        shutil.copy(path, dest)
        return dest
    return copy


def _report(path: str, width: int = PLOT_WIDTH):
    history = replay.open(path)
    return build(history, open_source(path, history=lambda: history), width=width), history


def test_bars_are_requests_and_their_answers(shipped_fixture, copied, monkeypatch):
    path = copied(shipped_fixture)
    # a width where no bar is shorter than a column: every bar is drawn one by one
    report, history = _report(path, width=10**12)
    assert report.source == "indexed"  # the index answered, not a second replay
    expected = expected_bars(path)
    assert [w.address for w in report.workers] == [w.address for w in history.workers]
    for w in report.workers:
        exp = expected.get(w.address, {"execute": set(), "transfer": set(), "handled": {}})
        assert not w.buckets
        execs = {(b.keys, b.start_step, b.stop_step, b.outcome) for b in w.bars if b.kind == "execute"}
        transfers = {(frozenset(b.keys), b.peer, b.start_step, b.stop_step, b.outcome)
                     for b in w.bars if b.kind == "transfer"}
        assert execs == exp["execute"]
        assert transfers == exp["transfer"]
        handled = exp["handled"]
        for b in w.bars:
            assert b.start == pytest.approx(handled[b.start_step] - report.origin)
            end = handled[b.stop_step] if b.stop_step is not None else max(handled.values())
            assert b.stop == pytest.approx(end - report.origin)
        # a lane holds one bar at a time, as a thread runs one task
        for kind in ("execute", "transfer"):
            for lane in range(w.lanes[kind]):
                spans = sorted((b.start, b.stop) for b in w.bars if b.kind == kind and b.lane == lane)
                assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_unfinished_are_what_why_names(shipped_fixture, copied, monkeypatch):
    path = copied(shipped_fixture)
    report, history = _report(path)
    monkeypatch.setenv(INDEX_ENV, "off")
    replayed = open_source(path, history=lambda: replay.open(path))
    assert isinstance(replayed, ReplayedSource)
    for w in report.workers:
        answers = replayed.worker(w.address)
        verdicts = answers.why(answers.events).tasks
        assert [(u.key, u.state, u.reason) for u in w.unfinished] == [(v.key, v.state, v.reason) for v in verdicts]
        # an execution or transfer still open at the end is a task the worker has not finished
        open_keys = {k for b in w.bars if b.stop_step is None for k in b.keys}
        assert open_keys <= {u.key for u in w.unfinished}
        states = {u.key: u.state for u in w.unfinished}
        for b in w.bars:
            if b.stop_step is None and b.kind == "execute":
                assert states[b.keys[0]] in {"executing", "long-running", "cancelled", "resumed"}
            if b.stop_step is None and b.kind == "transfer":
                assert {states[k] for k in b.keys} <= {"flight", "cancelled", "resumed"}
    # the fixture that hangs shows it
    if "stuck" in shipped_fixture:
        assert any(w.unfinished for w in report.workers)


def test_buckets_count_every_short_bar(copied, fixture_path):
    path = copied(fixture_path("cluster-log.jsonl.gz"))
    coarse, _ = _report(path, width=50)
    fine, _ = _report(path, width=10**12)
    for c, f in zip(coarse.workers, fine.workers):
        assert c.buckets, "a 50-column page buckets some of the cluster's short tasks"
        for kind in ("execute", "transfer"):
            counted = sum(1 for b in c.bars if b.kind == kind) + sum(b.count for b in c.buckets if b.kind == kind)
            assert counted == sum(1 for b in f.bars if b.kind == kind)
        assert all(b.stop - b.start >= coarse.bucket or b.outcome == UNFINISHED for b in c.bars)


def test_json_is_the_data(cli_run, copied, fixture_path):
    path = copied(fixture_path("stuck-flight.jsonl"))
    code, out, err = cli_run(["report", path, "--json"])
    assert code == 0, err
    report, _ = _report(path)
    assert orjson.loads(out) == orjson.loads(orjson.dumps(report.to_json()))


def test_a_directory_of_worker_logs(cli_run, tmp_path, fixture_path):
    # one worker log per file, as the recorder writes a directory: split a cluster log
    folder = tmp_path / "logs"
    folder.mkdir()
    by_worker: dict[str, list[bytes]] = {}
    for rec in _lines(fixture_path("stuck-flight.jsonl")):
        by_worker.setdefault(rec["worker"], []).append(orjson.dumps(rec))
    for i, lines in enumerate(by_worker.values()):
        (folder / f"w{i}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = cli_run(["report", folder, "-o", tmp_path / "r.html"])
    assert code == 0, err
    text = (tmp_path / "r.html").read_text()
    assert "replay merge" in text
    for address in by_worker:
        assert address in text


def test_bad_input_is_one_line(cli_run, tmp_path, fixture_path):
    code, out, err = cli_run(["report", fixture_path("stuck-flight.jsonl"), "-w", "nosuchworker", "--json"])
    assert code == 2 and "nosuchworker" in err and "Traceback" not in err


# --- the page -------------------------------------------------------------------------

#: an attribute that makes a browser fetch something
EXTERNAL = re.compile(rb"""(?:src|href|action|poster|data|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
SCRIPT = re.compile(rb"(<script\b[^>]*>)(.*?)(</script>)", re.S | re.I)
URL = re.compile(rb"https?://[^\s\"'`)<>]+")


def _page(cli_run, log: str, out: str) -> bytes:
    code, _, err = cli_run(["report", log, "-o", out])
    assert code == 0, err
    with open(out, "rb") as f:
        return f.read()


def test_page_needs_no_network(cli_run, shipped_fixture, copied, tmp_path):
    from bokeh.resources import INLINE

    page = _page(cli_run, copied(shipped_fixture), str(tmp_path / "r.html"))
    scripts = [body for _, body, _ in SCRIPT.findall(page)]
    assert scripts and any(b"Bokeh" in s for s in scripts)
    markup = SCRIPT.sub(rb"\1\3", page)  # the tags stay, with their attributes
    # nothing outside the scripts fetches: no <script src>, <link href>, <img src>, CSS url() or @import
    assert not EXTERNAL.findall(markup), EXTERNAL.findall(markup)[:5]
    assert not re.search(rb"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=", markup, re.I)
    assert not re.search(rb"url\(\s*[\"']?\s*(?:https?:)?//|@import", markup, re.I)
    # the scripts hold no URL beyond the ones in Bokeh's own inlined library (its
    # optional MathJax-from-CDN, used only for TeX labels this page never draws)
    library = set(URL.findall("".join(INLINE.js_raw + INLINE.css_raw).encode()))
    assert set(URL.findall(b"".join(scripts))) <= library


# --- in a real browser, offline -------------------------------------------------------


def _chromium() -> str:
    """Debian's chromium, installed as ``.ci/run`` installs it when missing."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                              timeout=900)
        found = shutil.which("chromium")
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
    else:
        why = "not root, or no apt-get"
    if found is None:
        pytest.skip(f"chromium is not installed and `apt-get install -y chromium` cannot install it here ({why})")
    return found


def _offline() -> list[str]:
    """A prefix that runs a command with no network at all, where the kernel lets us."""
    try:
        if subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0:
            return ["unshare", "-n"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return []  # the browser's own switches below still resolve and proxy nothing


def _browse(page: str, *args: str, folder: str) -> str:
    command = [*_offline(), _chromium(), "--headless", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={folder}/profile", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--proxy-server=127.0.0.1:9", "--virtual-time-budget=10000", "--hide-scrollbars",
               *(["--no-sandbox"] if os.geteuid() == 0 else []), *args, "file://" + os.path.abspath(page)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name", ["stuck-flight.jsonl", "cluster-log.jsonl.gz"])
def test_page_in_headless_chromium(cli_run, copied, fixture_path, tmp_path, name):
    from PIL import Image

    from replay.report_page import COLOURS

    log = copied(fixture_path(name))
    out = str(tmp_path / "r.html")
    _page(cli_run, log, out)
    report, _ = _report(log)
    dom = _browse(out, "--dump-dom", folder=str(tmp_path))
    # Bokeh's scripts ran: the workers' lanes, then a column per worker (its stream, task counts, slider)
    assert dom.count('class="bk-Figure"') == 1 and dom.count('class="bk-Column"') == len(report.workers)
    for w in report.workers:
        assert f'<h2 class="worker">{w.address}</h2>' in dom
        for u in w.unfinished:
            assert f'<td class="why">{html.escape(u.reason, quote=False)}</td>' in dom
    # nothing the scripts added fetches from outside
    assert not EXTERNAL.findall(SCRIPT.sub(rb"\1\3", dom.encode()))
    if name.startswith("stuck"):
        assert any(u.key == "x" for w in report.workers for u in w.unfinished)

    shot = str(tmp_path / "r.png")
    _browse(out, f"--screenshot={shot}", "--window-size=1400,1000", folder=str(tmp_path))
    pixels = Image.open(shot).convert("RGB")
    colours = pixels.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "a blank or text-only page"
    # the canvas holds executions drawn in their colour, not only the HTML around them
    assert dict((c, n) for n, c in colours).get(_rgb(COLOURS[("execute", "success")]), 0) > 100


def _rgb(colour: str) -> tuple:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


# --- paused spans, the worker's end, task counts, a window ---------------------------


def _steps(path: str) -> dict[str, list[dict]]:
    steps: dict[str, list[dict]] = {}
    for rec in _lines(path):
        if rec.get("kind") == "step":
            steps.setdefault(rec["worker"], []).append(rec)
    return {w: sorted(recs, key=lambda r: r["seq"]) for w, recs in steps.items()}


def test_paused_spans_and_the_end(copied, fixture_path):
    for name in ("cluster-log.jsonl.gz", "stuck-flight.jsonl"):
        path = copied(fixture_path(name))
        report, _ = _report(path, width=10**12)
        ends = {rec["worker"]: rec for rec in _lines(path) if rec.get("kind") == "end"}
        for w in report.workers:
            recs = _steps(path).get(w.address, [])
            # a PauseEvent to the first UnpauseEvent after it, as the recorded lines have them
            expected, since = [], None
            for rec in recs:
                cls = rec["event"]["cls"]
                if cls == "PauseEvent" and since is None:
                    since = rec["seq"]
                elif cls == "UnpauseEvent" and since is not None:
                    expected.append((since, rec["seq"]))
                    since = None
            if since is not None:
                expected.append((since, None))
            assert [(p.start_step, p.stop_step) for p in w.paused] == expected
            # a paused worker starts no execution: dask's _ensure_computing waits for running
            for start, stop in expected:
                assert not [b for b in w.bars if b.kind == "execute" and start < b.start_step
                            and (stop is None or b.start_step < stop)]
            # Worker.close pauses the state machine, then the teardown writes the end record
            closing = ends.get(w.address, {}).get("reason") == "teardown" and since is not None
            assert w.ended == (w.address in ends)
            assert w.closed_at == (since if closing else None)
        if name.startswith("cluster"):
            assert all(w.closed_at for w in report.workers) and any(w.paused[:-1] for w in report.workers)
        else:  # the recorder stopped while the stuck worker still ran
            assert all(w.ended and w.closed_at is None and w.status == "running" for w in report.workers)


def test_task_counts_are_the_state_machines(shipped_fixture, copied, monkeypatch):
    """The counts the report keeps from each step's transitions == the index's
    count of every task by state at the same steps (what a replay observed)."""
    path = copied(shipped_fixture)
    report, history = _report(path, width=10)  # a short log is sampled at every call
    source = open_source(path, history=lambda: history)
    assert source.kind == "indexed"
    for w in report.workers:
        answers = source.worker(w.address)
        assert w.counts.steps and w.counts.steps[-1] == w.steps
        for i, step in enumerate(w.counts.steps):
            expected = {s: n for s, n in answers.state(step).task_states.items() if n and s != "forgotten"}
            assert w.counts.at(i) == expected, (w.address, step)
    # a long log keeps one sample per pixel column, the last call's of the column
    coarse, _ = _report(path, width=2)
    for c, f in zip(coarse.workers, report.workers):
        if f.steps > 2 * 2:
            assert len(c.counts.steps) <= 3 and c.counts.steps[-1] == f.steps
            assert c.counts.at(len(c.counts.steps) - 1) == f.counts.at(len(f.counts.steps) - 1)


def test_a_window_shows_what_overlaps_it(copied, fixture_path, monkeypatch):
    path = copied(fixture_path("cluster-log.jsonl.gz"))
    expected = expected_bars(path)
    firsts = [min(e["handled"].values()) for e in expected.values()]
    t0, t1 = min(firsts) + 2.0, min(firsts) + 4.0
    history = replay.open(path)
    report = build(history, open_source(path, history=lambda: history), width=10**12, start=t0, stop=t1)
    assert report.origin == t0 and report.span == pytest.approx(t1 - t0)
    monkeypatch.setenv(INDEX_ENV, "off")
    replayed = open_source(path, history=lambda: replay.open(path))
    for w in report.workers:
        handled = expected[w.address]["handled"]
        stop = max((s for s, t in handled.items() if t <= t1), default=0)
        assert w.stop_step == stop
        want = set()
        for keys, start, end, outcome in expected[w.address]["execute"]:
            if start > stop:
                continue  # asked for after the window
            if end is None or end > stop:
                end, outcome = None, UNFINISHED  # not answered by the window's end
            if handled[end if end is not None else stop] < t0:
                continue  # over before the window
            want.add((keys, start, end, outcome))
        got = {(b.keys, b.start_step, b.stop_step, b.outcome) for b in w.bars if b.kind == "execute"}
        assert got == want
        assert not w.buckets  # no bar is shorter than a column that wide: nothing else is drawn
        assert all(b.start >= 0 and b.stop <= t1 - t0 + 1e-9 for b in w.bars)
        # unfinished: what why says at the window's last step, by a replay
        verdicts = replayed.worker(w.address).why(stop).tasks
        assert [(u.key, u.state, u.reason) for u in w.unfinished] == [(v.key, v.state, v.reason) for v in verdicts]
    # somewhere in that window the cluster was busy
    assert any(w.bars for w in report.workers)


def test_window_options(cli_run, copied, fixture_path, tmp_path):
    path = copied(fixture_path("stuck-flight.jsonl"))
    code, out, err = cli_run(["report", path, "--json", "--from", "+0", "--to", "+0.0001"])
    assert code == 0, err
    data = orjson.loads(out)
    first = min(w.wlog.first_handled for w in replay.open(path).workers)
    assert data["start"] == first and data["stop"] == pytest.approx(first + 0.0001)
    # a stimulus id is the time its last step was handled
    recs = [r for recs in _steps(path).values() for r in recs]
    sid = recs[0]["event"]["stimulus_id"]
    code, out, err = cli_run(["report", path, "--json", "--to", sid])
    assert code == 0, err
    assert orjson.loads(out)["stop"] == max(r["handled"] for r in recs if r["event"]["stimulus_id"] == sid)
    for args, words in ((["--from", "soon"], "--from: not a time (seconds since the epoch, or +S) nor a stimulus id"), (["--from", "+1", "--to", "+0"], "before"),
                        (["--from", "+1000"], "nothing recorded")):
        code, out, err = cli_run(["report", path, "-o", tmp_path / "r.html", *args])
        assert code == 2 and words in err and "Traceback" not in err, err


# --- a LocalCluster recorded here ------------------------------------------------------


def inc(x):
    return x + 1


def _hold_get_data(dask_worker):
    """``get_data`` waits until released: a peer's transfer from this worker stays in flight."""
    import asyncio

    held = asyncio.Event()
    answer = dask_worker.handlers["get_data"]

    async def get_data(comm, **kwargs):
        await held.wait()
        return await answer(comm, **kwargs)

    dask_worker._report_test_held = held
    dask_worker.handlers["get_data"] = get_data


def _release_get_data(dask_worker):
    dask_worker._report_test_held.set()


def _in_flight(dask_worker):
    return sorted(ts.key for ts in dask_worker.state.in_flight_tasks)


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """Two workers and the scheduler, recorded here: ``y`` stuck on b with
    ``x`` in flight from a (a's ``get_data`` holds), and ``victim`` dropped by a
    behind the scheduler's back (the scheduler still has it processing there).
    The recording stops while both hold."""
    import time

    import dask
    from distributed import Client, LocalCluster, WorkerPlugin, wait
    from distributed import worker_state_machine as wsm

    from replay.merge import merge
    from replay.record import Recorder
    from replay.scheduler_recorder import ClusterRecorder

    class DropVictim(WorkerPlugin):
        name = "drop-victim"

        def setup(self, worker):
            self.worker = worker

        def transition(self, key, start, finish, **kwargs):
            if key == "victim" and finish == "waiting":  # on the worker's loop, not inside handle_stimulus
                event = wsm.FreeKeysEvent(keys=["victim"], stimulus_id="drop-victim")
                self.worker.loop.add_callback(self.worker.handle_stimulus, event)

    logdir = str(tmp_path_factory.mktemp("fresh"))
    with dask.config.set({"distributed.scheduler.worker-ttl": None}):
        with LocalCluster(n_workers=0, processes=False, threads_per_worker=1,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            client.register_plugin(ClusterRecorder(logdir))
            cluster.scale(2)
            client.wait_for_workers(2, timeout=30)
            a, b = sorted(client.scheduler_info()["workers"])
            client.register_plugin(DropVictim())
            x = client.submit(inc, 1, key="x", workers=[a])
            dep = client.submit(inc, 10, key="dep", workers=[b])
            wait([x, dep], timeout=30)
            client.run(_hold_get_data, workers=[a])
            y = client.submit(inc, x, key="y", workers=[b])
            victim = client.submit(inc, dep, key="victim", workers=[a])
            deadline = time.monotonic() + 20
            while client.run(_in_flight, workers=[b])[b] != ["x"]:
                assert time.monotonic() < deadline, "x never went in flight"
                time.sleep(0.05)
            time.sleep(1.5)  # longer than the disagreements' grace
            assert not y.done() and not victim.done()
            client.unregister_worker_plugin(Recorder.name)  # the workers' end records, while stuck
            client.run(_release_get_data, workers=[a])
            del x, y, dep, victim
    path = os.path.join(logdir, "cluster.jsonl")
    merge([logdir], path)
    assert os.path.exists(os.path.join(logdir, "scheduler.jsonl"))
    return path, a, b


def test_a_fresh_cluster_run_in_headless_chromium(fresh_run, cli_run, tmp_path):
    from PIL import Image

    from replay.report_page import STATE_COLOURS, UNFINISHED_COLOUR

    path, a, b = fresh_run
    report, _ = _report(path)
    assert [w.address for w in report.workers] == [a, b] and report.scheduler
    stuck = {w.address: {u.key: u for u in w.unfinished} for w in report.workers}
    # dask's semantics: y waits on b for x, which b is fetching from a
    assert stuck[b]["x"].state == "flight" and stuck[b]["y"].state == "waiting"
    assert any("x" in line for line in stuck[b]["y"].story)
    # the scheduler has victim processing on a, which dropped it
    dropped = [link for link in report.links if link.kind == "scheduler and worker" and link.key == "victim"]
    assert [(link.worker, link.peer) for link in dropped] == [(a, None)]
    out = str(tmp_path / "r.html")
    page = _page(cli_run, path, out)
    assert not EXTERNAL.findall(SCRIPT.sub(rb"\1\3", page))
    dom = _browse(out, "--dump-dom", folder=str(tmp_path))
    assert dom.count('class="bk-Figure"') == 1 and dom.count('class="bk-Column"') == len(report.workers)
    for w in report.workers:
        assert f'<h2 class="worker">{w.address}</h2>' in dom
    why_y = html.escape(stuck[b]["y"].reason, quote=False)
    assert f'<td class="why">{why_y}</td>' in dom
    assert "victim" in "".join(re.findall(r'<li class="disagreement">(.*?)</li>', dom))
    # y's story, which a click on its bar opens, is in the page as plain HTML
    stories = dict(re.findall(r'<details id="(story-\d+-\d+)"><summary>.*?</summary><pre>(.*?)</pre>', dom, re.S))
    assert html.escape("\n".join(stuck[b]["y"].story), quote=False) in stories.values()
    shot = str(tmp_path / "r.png")
    _browse(out, f"--screenshot={shot}", "--window-size=1450,2400", folder=str(tmp_path))
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "a blank or text-only page"
    # the canvases drew: x's open transfer in the unfinished colour; x, held in memory on a from the
    # start, fills a's counts over the run
    pixels = {c: n for n, c in colours}
    assert pixels.get(_rgb(UNFINISHED_COLOUR), 0) > 20
    assert pixels.get(_rgb(STATE_COLOURS["memory"]), 0) > 1000


def test_the_step_slider_in_headless_chromium(cli_run, copied, fixture_path, tmp_path):
    """The page opened at ``#w0=N&w2=M`` moves those sliders (their script runs
    in the browser): the counts it shows are the index's at the step it names."""
    log = copied(fixture_path("cluster-log.jsonl.gz"))
    out = str(tmp_path / "r.html")
    _page(cli_run, log, out)
    source = open_source(log, history=lambda: replay.open(log))
    asked = {0: 600, 2: 35}
    dom = _browse(out + "#" + "&".join(f"w{i}={n}" for i, n in asked.items()), "--dump-dom", folder=str(tmp_path))
    shown = dict(re.findall(r'<p class="at" id="at-(\d+)">(.*?)</p>', dom))
    assert len(shown) == len(source.workers)
    for i, w in enumerate(source.workers):
        m = re.fullmatch(r"step (\d+): as of step (\d+) \(([\d.]+) s\), (.*)", html.unescape(shown[str(i)]))
        assert m, shown[str(i)]
        step, sample = int(m[1]), int(m[2])
        assert step == asked.get(i, w.events) and sample <= step
        counts = {} if m[4] == "no tasks" else {s: int(n) for s, n in (p.rsplit(" ", 1) for p in m[4].split(", "))}
        assert counts == {s: n for s, n in w.state(sample).task_states.items() if n and s != "forgotten"}
        # the last sample at or before the step: no call of the worker ended between them
        assert not [s for s in range(sample + 1, step + 1) if w.step_times()[s - 1] != w.step_times()[sample - 1]]


def test_links_are_the_disagreements_a_replay_finds(shipped_fixture, copied, monkeypatch):
    """Between workers, at each one's last step: the report (asking the index)
    draws what ``find`` says when every worker is replayed."""
    path = copied(shipped_fixture)
    report, _ = _report(path)
    monkeypatch.setenv(INDEX_ENV, "off")
    replayed = open_source(path, history=lambda: replay.open(path))
    found = replayed.disagreements({w.address: w.events for w in replayed.workers})
    between = [link for link in report.links if link.kind == "between workers"]
    assert [(link.worker, link.peer, link.key, link.text) for link in between] == \
        [(f.worker, f.peer, f.key, f.text()) for f in found if hasattr(f, "peer")]
    by_address = {w.address: w for w in report.workers}
    for link in between:  # drawn from the worker's last step to the peer's step at that time
        assert link.time == by_address[link.worker].last
        assert link.peer_time <= link.time + 1e-9 or by_address[link.peer].last < link.time
    if "stuck-flight" in shipped_fixture:  # b waits on x from a, whose log ended
        assert [link.key for link in between] == ["x"]
