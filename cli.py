"""The ``replay`` command: thin wrappers that read, call the engine, render.

What needs the state machine or the schemas (``distributed``, pydantic) is
imported inside the command that needs it: an answer from a log's index
loads neither (``tests/test_index.py`` holds it to that). So is what only a
replay or another command reads (the log's records, local processes): a
fresh process that answers from an index imports what answering needs.
"""
from __future__ import annotations

import gzip
import io
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Optional

import orjson
import typer
from rich.console import Console
from typer.core import TyperGroup

from replay import imports, render
from replay.diagnosis import WHY_MAX_STEPS, ClusterWhy
from replay.disagreements import over_run
from replay.errors import BadInput, NotFound
from replay.index import background_failure, build, index_in_background, index_path
from replay.literal import key_text
from replay.logfile import STDIN_COPY_ENV, as_log, iter_lines, log_name, spool_stdin, write_records
from replay.scheduler_log import SchedulerLog
from replay.source import open_source
from replay.story import Story
from replay.summary import LoadSummary, VerifyResult, verify_worker
from schemas.codec import parse_key


class _Commands(TyperGroup):
    """``replay``'s commands, with help a person reads.

    typer names each option's value by its Python type (``--json <bool>``,
    ``<list[str]>``, ``<int range> [x>=1]``): here a value is named by its
    metavar (``--at POS``; by default the option's own name, ``--worker
    WORKER``), a flag by nothing, and a bound is said in words at the end of
    the option's help. The values are checked as declared, bounds included.
    """

    def get_params(self, ctx: Any) -> list:
        return [_named(p) for p in super().get_params(ctx)]

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            for p in [*command.params, command.get_help_option(ctx)]:
                if p is not None:
                    _named(p)
        return command


#: what an option's value is, where its name does not say it
_VALUES = {"--at": "POS", "--to": "POS", "--output": "FILE", "--pytest": "FILE", "--jump": "N", "--jobs": "N"}


def _named(p: Any) -> Any:
    """``p`` shown by name, never by type (what :class:`_Commands` promises)."""
    if getattr(p, "is_flag", False):
        p.metavar = ""
    elif p.param_type_name == "argument":
        p.metavar = p.metavar or p.name.upper()
        # typer has no setting for an argument's type column: an argument says
        # what it is in its name and help
        p.display_type_rich = lambda ctx: None
    elif p.metavar is None:
        long = max(p.opts, key=len)
        p.metavar = _VALUES.get(long) or long.lstrip("-").upper().replace("-", "_")
    low, high = getattr(p, "min", None), getattr(p, "max", None)
    if low is not None or high is not None:
        bound = f"{low} to {high}" if low is not None and high is not None else \
            f"at least {low}" if low is not None else f"at most {high}"
        p.help = f"{(p.help or '').rstrip('.')} ({bound})."
        # the bound lives in the value's type; these two only print it
        p.min = p.max = None
    return p


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version  # ~50 ms: only for --version

        out.print(f"dask-replay {version('dask-replay')} (distributed {version('distributed')})")
        raise typer.Exit()


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # docstrings wrap at 110 columns: markdown joins their lines into sentences
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Record and replay the dask.distributed worker state machine.",
)

#: piped output is plain text, one long line per row, never cut at 80 columns
out = Console(highlight=False, soft_wrap=True, **({} if sys.stdout.isatty() else {"width": 100_000}))
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


def open_log(path: str, *, validate: bool = False) -> Any:
    from replay.log import ClusterLog

    log = ClusterLog.open(path, validate=validate)
    for w in log.warnings:
        err.print(render.safe(f"warning: {w}"))
    return log


@app.command()
def schema(
    scheduler: bool = typer.Option(False, "--scheduler", help="The scheduler's log (scheduler.jsonl) instead."),
) -> None:
    """Print the JSON Schema of one log line."""
    if scheduler:
        from schemas.scheduler import scheduler_json_schema

        emit_json(scheduler_json_schema())
        return
    from schemas.records import record_json_schema

    emit_json(record_json_schema())


def is_scheduler_log(path: str) -> bool:
    """Does the log at ``path`` start with a scheduler's header? (A directory
    is a cluster log, standard input a worker's.)"""
    if path == "-" or os.path.isdir(path):
        return False
    for _, rec in iter_lines(path):
        return rec.get("kind") == "scheduler-header"
    return False


@app.command()
def check(
    logs: list[str] = typer.Argument(..., help="Log files ('-' for stdin)."),
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate every line of LOGS and summarise each worker."""
    from replay.log import summary

    results = []
    for path in logs:
        if is_scheduler_log(path):
            sched = SchedulerLog.open(path, validate=True)
            for w in sched.warnings:
                err.print(render.safe(f"warning: {w}"))
            results.append({"path": path, "scheduler": sched.summary().to_json()})
        else:
            results.append(summary(open_log(path, validate=True)))
    if json:
        emit_json(results[0] if len(results) == 1 else {"logs": results})
        return
    for r in results:
        if "scheduler" in r:
            sched = r["scheduler"]
            out.print(render.safe(f"{r['path']}: the scheduler's log ({sched['address']}): {sched['transitions']} "
                                  f"transitions, {len(sched['workers_seen'])} workers seen"
                                  + ("" if sched["ended"] else "; no end record")))
        else:
            out.print(render.check_summary(r))


@app.command()
def merge(
    logs: list[str] = typer.Argument(..., help="Worker logs, or directories of them."),
    output: str = typer.Option(..., "-o", "--output", help="Cluster log to write (.gz compresses)."),
) -> None:
    """Merge per-worker logs into one cluster log, interleaved by time."""
    from replay.merge import merge as merge_logs

    n = merge_logs(logs, output, warn=lambda w: err.print(render.safe(f"warning: {w}")))
    err.print(render.safe(f"{output}: {n} records"))


@app.command("import-dump")
def import_dump(
    dump: str = typer.Argument(..., help="A Client.dump_cluster_state file: .msgpack.gz or .yaml."),
    output: str = typer.Option(..., "-o", "--output", help="Log to write (.gz compresses)."),
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Convert a cluster dump to a log: each worker's recorded stimuli, its final
    state and the scheduler's view, tuple keys restored; nothing is unpickled."""
    from replay.dump import import_dump as convert

    report = convert(dump, output)
    if json:
        emit_json(report.to_json())
        return
    for line in report.lines():
        (err if line.startswith("warning:") else out).print(render.safe(line))


# --- replaying commands ------------------------------------------------------

WORKER = typer.Option(None, "--worker", "-w", help="Worker: address, unique part of one, or index.")
#: a log: a file, '-', or a recording directory (its worker logs read as one cluster log)
LOG = typer.Argument(..., help="Log file ('-' for stdin), or a recording directory.")
#: several files are one cluster log too, where LOG is the only argument
LOGS = typer.Argument(..., metavar="LOG...", help="Log file ('-' for stdin), a recording directory, "
                                                  "or several worker logs read as one.")
#: the same, for a command that reads its log more than once
FILES = typer.Argument(..., metavar="LOG...", help="Log file, a recording directory, or several worker "
                                                   "logs read as one.")


def one_log(logs: list[str]) -> Any:
    """The log the command line names (:func:`replay.logfile.as_log`)."""
    return as_log(logs)

JSON = typer.Option(False, "--json", help="Print one JSON object.")


def ensure_recorded_seed(path: Any) -> None:
    """Re-execute this command with the ``PYTHONHASHSEED`` the log was recorded with.

    String hashing orders the state machine's sets; replay is exact only with
    the worker's seed (see :mod:`replay.determinism`). Standard input is
    copied to a file first, which the re-executed command reads instead.
    """
    from replay.determinism import reexec_with_seed
    from replay.merge import records_of

    source = None
    if path == "-":
        source = spool_stdin()
        os.environ[STDIN_COPY_ENV] = source  # for the re-executed command, or this one's reader
    for _, _, rec in records_of(path, source=source):
        if rec.get("kind") == "header":
            if rec.get("deterministic"):
                # a seed Python refuses is reported when the log is opened
                reexec_with_seed(rec.get("hash_seed"))
            return


def open_history(path: Any, *, quiet: bool = False) -> Any:
    """Read a log to replay it, re-executed with its recorded hash seed;
    ``quiet`` leaves the log's warnings to the caller."""
    import replay
    from replay.determinism import prepare_replay

    ensure_recorded_seed(path)
    # the command line accepts an inexact replay, and says so (verify exits 1)
    history = replay.open(path, inexact=True)  # reads '-' from its spooled copy, named <stdin>
    if not quiet:
        for w in history.warnings:
            err.print(render.safe(f"warning: {w}"))
    for wh in history.workers:
        if wh.header.get("history") == "partial":
            continue  # never replayed: what would make a replay depart does not apply
        for w in prepare_replay(wh.header):
            err.print(render.safe(f"warning: {wh.address}: {w}"))
    return history


def open_answers(log: Any) -> Any:
    """The :class:`~replay.source.Source` that answers for ``log``: its index,
    a replay, or a partial history (the policy is :func:`replay.source.open_source`)."""

    source = open_source(log, history=lambda: open_history(log, quiet=True), progress=progress_bar,
                         index_progress=index_progress, index_later=index_afterwards)
    for w in source.warnings:
        err.print(render.safe(f"warning: {w}"))
    return source


#: what runs once the command has answered: the indexer of a log answered by replaying
_afterwards: list[Callable[[], None]] = []


def index_afterwards(log: Any) -> None:
    """Once this command has answered, index ``log`` in the background."""

    def start() -> None:
        failed = background_failure(log)
        if failed is not None:
            err.print(render.safe(f"warning: the last background indexing of {log_name(log)} stopped without "
                                  f"writing its index: {failed}; `replay index` on the log shows why"))
        pid = index_in_background(log)
        if pid is not None:
            err.print(render.safe(f"note: indexing {log_name(log)} in the background (pid {pid}); "
                                  "later commands answer from its index"))

    if not _afterwards:
        _afterwards.append(start)


@contextmanager
def index_progress(history: Any):
    total = sum(w.events for w in history.workers)
    done: dict[str, int] = {}
    with progress_bar(f"indexing {history.path}", total) as cb:
        if cb is None:
            yield None
            return

        def update(worker: str, step: int) -> None:
            done[worker] = step
            cb(sum(done.values()))

        yield update


class progress_bar:
    """A progress callback for replays: a bar on stderr once a replay has
    taken a second, only on a terminal."""

    #: seconds before the bar appears: shorter replays show nothing
    DELAY = 1.0

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.bar: Any = None
        self.task: Any = None
        self.started = 0.0
        self.last = 0

    def __enter__(self) -> Any:
        if self.total < 1000 or not err.is_terminal:
            return None
        self.started = time.monotonic()
        return self.update

    def update(self, step: int) -> None:
        if step - self.last < 500 and step < self.total:
            return
        self.last = step
        if self.bar is None:

            if time.monotonic() - self.started < self.DELAY:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=err, transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(render.safe(self.label).plain, total=self.total)
        self.bar.update(self.task, completed=step)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


SVG = typer.Option(None, "--svg", metavar="FILE", help="Also save the answer as an SVG picture.")
HTML = typer.Option(None, "--html", metavar="FILE", help="Also save the answer as an HTML page.")


def emit(view: Any, *, json: bool = False, svg: Optional[str] = None, html: Optional[str] = None) -> None:
    """Print a view: its JSON with ``--json``, else itself; and its picture."""
    if json:
        emit_json(view.to_json())
    elif out.is_terminal:
        out.print(view)
    else:
        # plain text: without the padding of table cells to the widest row
        with out.capture() as captured:
            out.print(view)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()
    if svg or html:

        # a terminal-like console of its own, so that piped output stays plain
        rec = Console(record=True, width=120, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", highlight=False)
        rec.print(view)
        try:
            if svg:
                rec.save_svg(svg, title="dask-replay", clear=False)
            if html:
                rec.save_html(html, clear=False)
        except OSError as e:
            raise BadInput(f"{e.filename}: cannot write: {e.strerror}") from None


def parse_keys(texts: list[str]) -> list[Any]:
    return [parse_key(t) for t in texts]


JOBS = typer.Option(None, "--jobs", "-j", min=1, help="Replay the workers in N local processes.")
SCHEDULER = typer.Option(None, "--scheduler", metavar="ADDRESS",
                         help="Replay each worker as a task on this dask cluster (the log's path must be "
                              "readable there).")


def side_by_side(jobs: Optional[int], scheduler: Optional[str], log: Any = None) -> bool:
    if jobs is not None and scheduler is not None:
        raise BadInput("give --jobs or --scheduler, not both")
    if scheduler and isinstance(log, tuple):
        raise BadInput("--scheduler reads one path: give the recording's directory, or merge the files")
    return bool(scheduler) or (jobs or 1) > 1


@app.command()
def load(
    logs: list[str] = LOGS,
    jobs: Optional[int] = JOBS,
    scheduler: Optional[str] = SCHEDULER,
    detail: bool = typer.Option(False, "--detail", help="Every task on its own row, keys in full."),
    json: bool = JSON,
) -> None:
    """Replay every worker to its end: running, paused or closed, what is stuck and why (tasks
    that wait for the same reason on one row), the events, and the log in one line."""
    log = one_log(logs)

    if side_by_side(jobs, scheduler, log):
        from replay.parallel import load_one, map_workers  # local processes: only when asked for

        if log == "-":
            raise BadInput("--jobs and --scheduler need a file: standard input cannot be read again")
        history = open_history(log)
        workers = map_workers(load_one, log, [w.address for w in history.workers],
                              jobs=jobs, scheduler=scheduler, history=history)
        emit(LoadSummary(history.path, _detailed(workers, detail)), json=json)
        return
    source = open_answers(log)
    sched = source.scheduler_log
    emit(LoadSummary(source.path, _detailed([w.summary() for w in source.workers], detail),
                     None if sched is None else sched.summary()), json=json)


def _detailed(views: list, detail: bool) -> list:
    """Views that show keys in full (``--detail``), or shortened."""
    for v in views:
        v.detail = detail
    return views


@app.command()
def state(
    logs: list[str] = LOGS,
    at: Optional[str] = typer.Option(None, "--at", help="Step number or stimulus id (default: the end)."),
    worker: Optional[str] = WORKER,
    states: list[str] = typer.Option([], "--state", help="Only tasks in this state (repeatable)."),
    keys: list[str] = typer.Option([], "--key", help="Only this task, with its detail (repeatable)."),
    detail: bool = typer.Option(False, "--detail", help="Per task: who_has, dependencies, priority, nbytes…"),
    json: bool = JSON,
    svg: Optional[str] = SVG,
    html: Optional[str] = HTML,
) -> None:
    """The worker's state at a step: tasks by state, queues, transfers, counters."""
    log = one_log(logs)
    wanted = parse_keys(keys)
    w = open_answers(log).worker(worker)
    emit(w.state(w.position(at), states, wanted, detail), json=json, svg=svg, html=html)


@app.command()
def diff(
    log: str = LOG,
    span: str = typer.Argument(..., metavar="FROM..TO",
                               help="Two positions (steps or stimulus ids), e.g. 371..400."),
    worker: Optional[str] = WORKER,
    json: bool = JSON,
) -> None:
    """The steps between two positions, then what they changed in the worker."""
    from_, sep, to = span.partition("..")
    if not sep or not from_ or not to:
        raise BadInput(f"expected FROM..TO, e.g. 371..400, got {span!r}")
    w = open_answers(log).worker(worker)
    first, last = w.position(from_), w.position(to)
    if first > last:
        raise BadInput(f"{from_}..{to}: step {first} comes after step {last}")
    emit(w.diff(first, last), json=json)


def each_worker(workers: list, answer: Any, *, chosen_by_user: bool) -> list:
    """``answer(worker)`` for every worker that has what was asked.

    A stimulus id, a step or a key often belongs to some workers of a cluster
    log only: their answers are the answer. Nothing found anywhere, or on the
    one worker the user chose, is the one-line error, naming every worker.
    """

    answers, missed = [], []
    for w in workers:
        try:
            answers.append(answer(w))
        except NotFound as e:
            if chosen_by_user or len(workers) == 1:
                raise
            missed.append(str(e))
    if not answers:
        raise NotFound("; ".join(dict.fromkeys(missed)))
    return answers


@app.command()
def story(
    log: str = LOG,
    key_or_stimulus: str = typer.Argument(..., metavar="KEY_OR_STIMULUS",
                                          help="A stimulus id, or a key: x, or a tuple like \"('x-1', 0)\"."),
    at: Optional[str] = typer.Option(None, "--at", help="Stop at this step or stimulus id."),
    worker: Optional[str] = WORKER,
    json: bool = JSON,
    svg: Optional[str] = SVG,
    html: Optional[str] = HTML,
) -> None:
    """Every event, transition and instruction about a key, or of a stimulus id,
    with the recorded time of each; across every worker of a cluster log unless
    --worker chooses one."""

    source = open_answers(log)
    chosen = source.workers if worker is None else [source.worker(worker)]

    def one(w: Any) -> Any:
        stop = w.position(at)
        not_an_id: Optional[NotFound] = None
        if not key_or_stimulus.isdigit():
            try:
                sid_step = w.position(key_or_stimulus)
            except NotFound as e:
                not_an_id = e  # its closest ids are looked for only if the key has no story either
            else:
                return w.stimulus_story(min(stop, sid_step), key_or_stimulus)
        key = parse_keys([key_or_stimulus])[0]
        try:
            return w.key_story(stop, key)
        except NotFound as e:
            close_ids = "" if not_an_id is None else str(not_an_id).partition("; closest: ")[2]
            nor = f"nor is it a stimulus id; closest: {close_ids}" if close_ids else "nor is it a stimulus id"
            raise NotFound(f"{log}: {e} ({nor})") from None

    sched = source.scheduler_log if worker is None else None
    try:
        stories = each_worker(chosen, one, chosen_by_user=worker is not None)
    except NotFound:
        if sched is not None and scheduler_story_of(sched, key_or_stimulus):
            stories = []  # a key only the scheduler's recording knew
        else:
            held = None if worker is not None else source.scheduler_task(parse_keys([key_or_stimulus])[0])
            if held is None:
                raise
            emit(held, json=json, svg=svg, html=html)  # only the scheduler's view (a dump's) knows it
            return
    if sched is not None:
        # cut where the workers' stories stop, when --at stops them
        until = max((ln.handled for s in stories for ln in s.lines), default=None) if at else None
        theirs = scheduler_story_of(sched, key_or_stimulus, until)
        if theirs is not None:
            stories.append(theirs)
    emit(stories[0] if len(stories) == 1 else Story.merge(stories), json=json, svg=svg, html=html)


def scheduler_story_of(sched: Any, key_or_stimulus: str, until: Optional[float] = None) -> Any:
    """The scheduler's story of a stimulus id or a key, or None if it has no line of it."""
    lines = sched.story_lines(key_or_stimulus, until=until)
    if lines and all(ln.stimulus_id == key_or_stimulus for ln in lines):
        return Story(f"stimulus {key_or_stimulus}", lines, lines[0].handled, stimulus_id=key_or_stimulus)
    key = parse_keys([key_or_stimulus])[0]
    lines = sched.story_lines(key, until=until)
    if not lines:
        return None
    return Story(key_text(key), lines, lines[0].handled, keys=[key])


@app.command()
def why(
    log: str = LOG,
    key: Optional[str] = typer.Argument(None, help="Only this key, e.g. x or \"('x-1', 0)\"."),
    at: Optional[str] = typer.Option(None, "--at", help="Step number or stimulus id (default: the end)."),
    worker: Optional[str] = typer.Option(None, "--worker", "-w",
                                         help="Worker: address, unique part of one, or index (default: every worker)."),
    detail: bool = typer.Option(False, "--detail", help="Keys in full."),
    json: bool = JSON,
    svg: Optional[str] = SVG,
    html: Optional[str] = HTML,
) -> None:
    """Why tasks are not finished at a step: what each waits for, since when, in recorded time."""
    source = open_answers(log)
    chosen = source.workers if worker is None else [source.worker(worker)]
    wanted = None if key is None else parse_keys([key])[0]
    try:
        views = each_worker(chosen, lambda w: w.why(w.position(at), wanted), chosen_by_user=worker is not None)
    except NotFound:
        held = None if wanted is None or worker is not None else source.scheduler_task(wanted)
        if held is None:
            raise
        emit(held, json=json, svg=svg, html=html)  # only the scheduler's view (a dump's) knows it
        return
    findings = source.disagreements({v.worker: v.step for v in views}) if wanted is None else []
    short = [v for v in views if v.tasks and source.worker(v.worker).events <= WHY_MAX_STEPS]
    if wanted is None and short and source.kind != "partial":
        # a continuation replays with the state machine: imported only for a short log
        from replay.continuation import short_verdict
        from replay.history import open as replay_open

        # one line from a short continuation: is the hang inside the worker? It
        # replays, so with the recorded seed, as a replayed answer is: the same
        # line whichever source answered the rest
        if source.kind == "replayed":  # opened under the recorded seed already
            history = source.history
        else:
            ensure_recorded_seed(log)
            history = replay_open(log, inexact=True)
        for v in short:
            v.continued = short_verdict(history.worker(v.worker), v.step)
    emit(ClusterWhy(_detailed(views, detail), findings), json=json, svg=svg, html=html)


@app.command("continue")
def continue_(
    log: str = typer.Argument(..., help="Log file ('-' for stdin)."),
    worker: Optional[str] = typer.Option(None, "--worker", "-w",
                                         help="Worker: address, unique part of one, or index (default: every worker)."),
    at: Optional[str] = typer.Option(None, "--at", help="Continue from this step or stimulus id (default: the end)."),
    peers: str = typer.Option("answer", "--peers", help="Peers answer each gather from the keys the log says "
                              "they hold, answer busy, or stay silent: answer, busy or silent."),
    events: int = typer.Option(10_000, "--events", min=0, help="Stimuli to hand the worker at most."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Write the continued run as a log (recorded steps, then simulated ones)."),
    json: bool = JSON,
) -> None:
    """Continue a worker from a step as a live worker would go on: exit 0 if every
    task finished, 1 if one still waits (and on what). Without --at, the replay
    goes as far as the instructions match the recording (under --import, the
    patched state machine's) and continues from there."""
    # a continuation replays with the state machine: imported only when continue runs
    from replay.continuation import PEERS, ContinuedWorkers, continue_worker, write_continued

    if peers not in PEERS:
        raise BadInput(f"--peers: {peers!r} is not one of {', '.join(PEERS)}")
    history = open_history(log)
    chosen = history.workers if worker is None else [history.worker(worker)]
    runs: list = []

    def one(wh: Any) -> Any:
        step = wh.position(at)
        with progress_bar(f"replaying {wh.address}", step) as cb:
            # from the end: replay only as far as the instructions match the recording
            c = continue_worker(wh, step, peers=peers, events=events, progress=cb,
                                until_divergence=at is None, patched=bool(imports.requested()))
        runs.append((wh, c))
        return c

    view = ContinuedWorkers(each_worker(chosen, one, chosen_by_user=worker is not None))
    if output is not None:
        lines = write_continued(output, runs)
        err.print(render.safe(f"{output}: {lines} lines, {sum(c.events for _, c in runs)} simulated steps"))
    emit(view, json=json)
    if view.exit_code:
        raise typer.Exit(view.exit_code)


@app.command()
def report(
    log: str = typer.Argument(..., help="Log file, a directory of worker logs, or '-' for stdin."),
    output: str = typer.Option("report.html", "--output", "-o", help="The HTML page to write."),
    workers: list[str] = typer.Option([], "--worker", "-w",
                                      help="Only this worker: address, unique part of one, or index (repeatable)."),
    json: bool = typer.Option(False, "--json", help="Print the data the page draws as one JSON object instead."),
    start: Optional[str] = typer.Option(None, "--from", metavar="TIME",
                                        help="Show from this recorded time: seconds since the epoch, +S "
                                             "seconds since the recording's first record, or a stimulus id "
                                             "(when the last step carrying it was handled)."),
    stop: Optional[str] = typer.Option(None, "--to", metavar="TIME",
                                       help="Show up to this recorded time (same forms): what is not finished "
                                            "is what was not finished then."),
) -> None:
    """One self-contained HTML page of the run: each worker's task stream over
    recorded time, what is not finished at the end and why, load's headline."""
    import shlex
    import tempfile

    from replay.merge import merge as merge_logs
    from replay.report import build  # pairs requests and answers: needs the state machine
    from replay.report_page import page  # Bokeh, only to draw

    with tempfile.TemporaryDirectory(prefix="replay-report-") as tmp:
        path = log
        if log != "-" and os.path.isdir(log):  # a recorder's directory: one cluster log, as `merge` writes
            path = os.path.join(tmp, "cluster.jsonl")
            merge_logs([log], path, warn=lambda w: err.print(render.safe(f"warning: {w}")))
        history = open_history(path)
        source = open_source(path, history=lambda: history, progress=progress_bar, index_progress=index_progress)
        window = {name: None if text is None else _report_time(text, source, option)
                  for name, option, text in (("start", "--from", start), ("stop", "--to", stop))}
        data = build(history, source, workers, **window)
        if path != log:  # the page's commands name the cluster log `merge` writes
            data.path, data.merged = "cluster.jsonl", shlex.join(["replay", "merge", log, "-o", "cluster.jsonl"])
    if json:
        emit_json(data.to_json())
        return
    text = page(data)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise BadInput(f"{output}: cannot write: {e.strerror}") from None
    err.print(render.safe(f"{output}: {len(data.workers)} worker{'s' if len(data.workers) != 1 else ''}, "
                          f"{len(text.encode()):,} bytes"))


def _report_time(text: str, source: Any, option: str) -> float:
    """A time (:func:`parse_time`), or a stimulus id: when the last step carrying it was handled."""
    try:
        float(text)
    except ValueError:
        if not text.startswith("+"):
            times = []
            for w in source.workers:
                try:
                    step = w.position(text)
                except BadInput:  # not this worker's
                    continue
                if step and w.step_times()[step - 1] is not None:
                    times.append(w.step_times()[step - 1])
            if not times:
                raise BadInput(f"{option}: not a time (seconds since the epoch, or +S) nor a stimulus id "
                               f"of any worker: {text!r}") from None
            return max(times)
    return parse_time(text, source.scheduler_log, source.workers, option)


@app.command()
def disagreements(
    log: str = typer.Argument(..., help="Log file ('-' for stdin), with the scheduler's log (scheduler.jsonl) "
                                        "beside it."),
    at: Optional[str] = typer.Option(None, "--at", metavar="TIME",
                                     help="Only those standing at this recorded time: seconds since the "
                                          "epoch, or +S seconds since the recording's first record."),
    grace: float = typer.Option(1.0, "--grace", min=0.0, metavar="SECONDS",
                                help="Over the run, leave out those resolved sooner (messages in flight)."),
    json: bool = JSON,
) -> None:
    """Where the scheduler and a worker disagree about a task, over the whole
    recording (when each began, whether it resolved) or at one time."""
    source = open_answers(log)
    sched = source.scheduler_log
    t = None if at is None else parse_time(at, sched, source.workers)
    emit(over_run(source.path, sched, source.workers, at=t, grace=grace), json=json)


def parse_time(text: str, sched: Any, workers: list, option: str = "--at") -> float:
    """A recorded time: seconds since the epoch, or ``+S`` since the first record."""
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{option}: not a time: {text!r} (seconds since the epoch, or +S)") from None
    if not text.startswith("+"):
        return value
    firsts = [t for w in workers for t in w.step_times()[:1] if t is not None]
    if sched is not None:
        firsts += [r.time for r in sched.transitions[:1]] + [c.time for c in sched.worker_changes[:1]]
    if not firsts:
        raise BadInput(f"{option} +S: the recording has no recorded time to count from")
    return min(firsts) + value


@app.command()
def index(
    logs: list[str] = FILES,
) -> None:
    """Replay LOG once and write its index: later load, state, diff, story and
    why answer from it without replaying."""
    log = one_log(logs)

    if log == "-":
        raise BadInput("index needs a file: standard input cannot be read again")
    history = open_history(log)
    try:
        with index_progress(history) as cb:
            path = build(history, progress=cb)
    except OSError as e:
        raise BadInput(f"{index_path(log)}: cannot write: {e.strerror or e}") from None
    err.print(render.safe(f"{history.path}: indexed {sum(w.events for w in history.workers)} steps into {path} "
                          f"({os.path.getsize(path):,} bytes)"))


@app.command()
def verify(
    logs: list[str] = LOGS,
    validate: bool = typer.Option(False, "--validate", help="Also check the state machine's invariants after every step."),
    worker: Optional[str] = WORKER,
    jobs: Optional[int] = JOBS,
    scheduler: Optional[str] = SCHEDULER,
    json: bool = JSON,
) -> None:
    """Replay and compare with the recording; exit 1 at the first divergence."""
    from replay.segments import departures  # a replay's reading: not the index's query path

    log = one_log(logs)
    history = open_history(log)
    chosen = history.workers if worker is None else [history.worker(worker)]
    result = VerifyResult([])
    if side_by_side(jobs, scheduler, log):
        from replay import parallel  # local processes: only when asked for

        if log == "-":
            raise BadInput("--jobs and --scheduler need a file: standard input cannot be read again")
        fn = parallel.verify_one_validating if validate else parallel.verify_one
        chosen = []  # every worker replayed side by side instead
        result.workers = parallel.map_workers(fn, log, [w.address for w in (
            history.workers if worker is None else [history.worker(worker)])], jobs=jobs, scheduler=scheduler,
            history=history)
    for wh in chosen:
        with progress_bar(f"verifying {wh.address}", wh.events) as cb:
            result.workers.append(verify_worker(wh, validate=validate, progress=cb))
        # a bounded recording: every kept segment from its own snapshot too
        notes = departures(wh.log.file_of(wh.wlog))
        if notes:
            result.workers[-1].inexact += notes
    emit(result, json=json)
    if not result.faithful:
        raise typer.Exit(1)


class _OptionalValues(typer.core.TyperCommand):
    """``--stuck`` and ``--raises`` take a value only when one follows: the
    next word is theirs unless it is an option, wherever they stand."""

    optional = ("--stuck", "--raises")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in self.optional:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and nxt != "--" and not (nxt.startswith("-") and len(nxt) > 1):
                    out.append(f"{a}={nxt}")
                    i += 2
                    continue
                out.append(f"{a}=")  # the flag alone
            else:
                out.append(a)
            i += 1
        return super().parse_args(ctx, out)


@app.command(cls=_OptionalValues)
def shrink(
    log: str = LOG,
    worker: Optional[str] = WORKER,
    stuck: Optional[str] = typer.Option(
        None, "--stuck", metavar="[KEY]",
        help="KEY (or --key, or alone: the task that best explains the others) ends not finished, "
        "in the same kind of wait, with the same evidence, as in the log.",
    ),
    key: Optional[str] = typer.Option(None, "--key", help="The key --stuck is about."),
    state: Optional[str] = typer.Option(None, "--state", metavar="KEY=STATE", help="KEY ends in STATE."),
    raises: Optional[str] = typer.Option(
        None, "--raises", metavar="[NAME]",
        help="Replaying raises the same failure (class NAME, if given), as in the log.",
    ),
    invalid: bool = typer.Option(False, "--invalid", help="WorkerState.validate_state() fails at the same assert."),
    expr: Optional[str] = typer.Option(None, "--expr", help="A Python expression over the final WorkerState `ws`."),
    until: Optional[str] = typer.Option(
        None, "--until", metavar="POS",
        help="Cut the log after this position first (a step, or the last step of a stimulus id).",
    ),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write the shrunk log here."),
    pytest_file: Optional[str] = typer.Option(None, "--pytest", help="Write the reproducer as a pytest file."),
    dask_style: bool = typer.Option(False, "--dask-style", help="Use dask's own `ws` fixture, for dask's test suite."),
    json: bool = JSON,
) -> None:
    """Shrink a worker's log to a minimal event sequence that still shows the bug."""
    import time

    from replay import shrinker as s

    start = time.perf_counter()
    if key is not None and stuck is None:
        stuck = ""
    if key is not None and stuck:
        raise BadInput("give the key once: --stuck KEY or --stuck --key KEY")
    stuck_key = key if key is not None else stuck
    chosen = [p for p in (stuck is not None, state is not None, raises is not None, invalid, expr is not None) if p]
    if len(chosen) > 1:
        raise BadInput("give one of --stuck, --state, --raises, --invalid, --expr")
    predicate: Any = None
    if stuck_key:
        predicate = s.StuckPredicate(parse_key(stuck_key), text=f"--stuck {stuck_key}")
    elif stuck is not None:
        predicate = s.StuckPredicate()
    elif state is not None:
        skey, eq, value = state.rpartition("=")
        if not eq or not skey or not value:
            raise BadInput(f"--state: expected KEY=STATE, got {state!r}")
        predicate = s.StatePredicate(parse_key(skey), value, text=f"--state {state}")
    elif raises is not None:
        predicate = s.RaisesPredicate(raises or None, text=f"--raises {raises}".strip())
    elif invalid:
        predicate = s.InvalidPredicate()
    elif expr is not None:
        predicate = s.ExprPredicate(expr, text=f"--expr {expr}")

    history = open_history(log)
    candidates = history.workers if worker is None else [history.worker(worker)]
    note = (lambda m: err.print(render.safe(m))) if err.is_terminal else None
    result = None
    misses = []
    for wh in candidates:
        try:
            result = s.shrink(wh, predicate=predicate, dask_style=dask_style, progress=note, until=until,
                              hash_check=pytest_file is not None or output is None)
            break
        except s.NotReproduced as e:
            misses.append(f"{wh.address}: {e}")
    if result is None:
        for m in misses:
            err.print(render.safe(m))
        raise typer.Exit(1)
    if output is not None:
        write_records(output, iter(result.records))
    # the test is written (and checked in fresh processes) only when asked for
    source = result.test_source if pytest_file is not None or output is None else None
    if pytest_file is not None:
        with open(pytest_file, "w") as f:
            f.write(source)
    seconds = time.perf_counter() - start
    summary = {
        "worker": wh.address,
        "predicate": result.narrative.predicate,
        "fingerprint": repr(result.fingerprint),
        "events_before": result.original_events,
        "events_after": result.narrative.shrunk_events,
        "passes": result.passes,
        "replays": result.replays,
        "seconds": round(seconds, 3),
        "output": output,
        "pytest": pytest_file,
    }
    if json:
        emit_json(summary)
        return
    out.print(render.safe(
        f"{wh.address}: {result.original_events} events -> {summary['events_after']} "
        f"({result.narrative.predicate}: {result.fingerprint!r}); {result.passes} passes, "
        f"{result.replays} replays, {seconds:.1f} s", limit=1000
    ))
    if output is None and pytest_file is None:
        # our own source: every value from the log in it is a checked literal
        out.print(render.Text(source), end="")


@app.command()
def bisect(
    log: str = typer.Argument(..., metavar="REPRO", help="A pytest file, or a log written by `replay shrink -o`."),
    good: str = typer.Option(..., "--good", help="A release where the reproducer gives the good outcome."),
    bad: str = typer.Option(..., "--bad", help="A release where it gives the bad one."),
    package: str = typer.Option("distributed", "--package", help="Whose releases to list: distributed or dask."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Releases installed and run side by side."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Run every release: a full table."),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds one run may take (then: timeout)."),
    expr: Optional[str] = typer.Option(None, "--expr", help="The expression of a log shrunk with --expr."),
    json: bool = JSON,
) -> None:
    """Find the release where a reproducer's outcome changes: the first good one
    (a fix: --bad older than --good) or the first bad one (a regression)."""
    from replay import bisect as b
    from replay import releases as r

    if package not in ("distributed", "dask"):
        raise BadInput(f"--package: distributed or dask, not {package!r}")
    repro = r.load_repro(log, expr, warn=lambda w: err.print(render.safe(f"warning: {w}")))
    runner = r.ReleaseRunner(
        repro, package, timeout=timeout, jobs=jobs,
        progress=(lambda m: err.print(render.safe(m))) if err.is_terminal else None,
    )
    found = b.search(r.available(package), good, bad, runner, jobs=jobs, keep_going=keep_going)
    if json:
        emit_json(found.to_json())
    else:
        out.print(found)
    if not found.found:
        raise typer.Exit(1)


@app.command()
def simulate(
    output: str = typer.Option(..., "--output", "-o", help="Log to write; gzip if it ends with .gz."),
    events: int = typer.Option(100_000, "--events", min=1, help="Stimuli to handle, over all workers."),
    seed: int = typer.Option(0, "--seed", help="Seeds the graph, the timings and the faults."),
    workers: int = typer.Option(2, "--workers", min=1, help="Simulated (and recorded) WorkerStates."),
    peers: int = typer.Option(2, "--peers", min=0, help="Virtual peers that compute and serve data, not recorded."),
    faults: str = typer.Option(
        "default", "--faults",
        help="'default' or 'none', then NAME=RATE overrides, comma separated; NAME is one of "
        "busy, network, missing, fail, reschedule, secede, steal, pause, retire, replicate, drop.",
    ),
    level: int = typer.Option(6, "--level", min=1, max=9, help="gzip level of a .gz log."),
    json: bool = JSON,
) -> None:
    """Write a cluster log of real WorkerStates driven by a simulated scheduler and peers."""

    from replay.determinism import NANNY_SEED, hash_seed, reexec_with_seed

    if hash_seed() is None:
        # the state machine's sets iterate in string-hash order: with a fixed
        # seed the log replays exactly and the same --seed writes the same bytes
        reexec_with_seed(NANNY_SEED)

    from replay.simulate import Faults, SimulationError, Stalled, ThreadedLineWriter
    from replay.simulate import simulate as run

    try:
        spec = Faults.parse(faults)
    except ValueError as e:
        raise BadInput(f"--faults: {e}") from None
    try:
        raw = open(output, "wb")
    except OSError as e:
        raise BadInput(f"{output}: cannot write: {e.strerror or e}") from None
    stream: Any = raw
    if output.endswith(".gz"):
        stream = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=level, mtime=0)
    start = time.perf_counter()
    failure = None
    writer = ThreadedLineWriter(stream)
    try:
        counts = run(writer, events=events, seed=seed, workers=workers, peers=peers, faults=spec)
    except (SimulationError, Stalled) as e:
        failure = e
    finally:
        try:
            writer.close()
            if stream is not raw:
                stream.close()
        finally:
            raw.close()
    if failure is not None:
        raise BadInput(f"{failure}; the log up to there is in {output}")
    elapsed = time.perf_counter() - start
    counts = {"output": output, "bytes": os.path.getsize(output), "seconds": round(elapsed, 3), **counts}
    if json:
        emit_json(counts)
    else:
        out.print(render.safe(
            f"{output}: {counts['events']} events of {len(counts['workers'])} workers, "
            f"{counts['bytes']} bytes, {elapsed:.1f} s ({counts['events'] / elapsed:.0f} events/s)"
        ))


@app.command()
def step(
    log: str = LOG,
    worker: Optional[str] = typer.Option(
        None, "--worker", "-w",
        help="Worker: address, unique part of one, or index (default: the first that has --to's "
        "stimulus id, else the first that ends with a task not finished, else the first)."),
    to: Optional[str] = typer.Option(None, "--to", help="Start at this step or stimulus id (default: step 0)."),
    breaks: list[str] = typer.Option([], "--break", metavar="SPEC",
                                     help="Stop where state:KEY=STATE, stimulus:ID, event:CLASS, instruction:CLASS, "
                                     "raised or invalid (repeatable)."),
    validate: bool = typer.Option(False, "--validate", help="Check the invariants after every step (for invalid)."),
    print_: bool = typer.Option(False, "--print", help="Print the screen once as text and exit; with --break, "
                                "at the first hit after --to (exit 1 if none)."),
    states: list[str] = typer.Option([], "--state", help="Only tasks in this state (repeatable)."),
    keys: list[str] = typer.Option([], "--key", help="Only this task (repeatable)."),
    jump: int = typer.Option(100, "--jump", min=1, help="Steps of a jump ([ and ] in the UI)."),
    memory: int = typer.Option(2048, "--memory", min=64, metavar="MB", help="Bound on the snapshots' memory."),
    json: bool = JSON,
) -> None:
    """Step through a worker forwards and backwards, with breakpoints: a full-screen UI
    (? lists the keys), or one screen as text with --print."""
    from replay.step import Stepper

    if not sys.stdout.isatty():  # piped: a full screen has nowhere to go, its text does
        print_ = True
    history = open_history(log)
    if worker is None and to is not None and not to.isdigit():
        for wh in history.workers:  # the first worker that has the stimulus id
            try:
                wh.position(to)
            except NotFound:
                continue
            worker = wh.address
            break
    stepper = Stepper(history, worker, validate=validate, budget_mb=memory,
                      progress=lambda wh: progress_bar(f"replaying {wh.address}", wh.events))
    if not print_ and log != "-" and os.environ.get("REPLAY_INDEX", "auto") in ("auto", "later") \
            and stepper.indexed() is None:
        # far jumps answer from the index once it is written: the stepper looks for it again
        index_in_background(log)
    try:
        if not print_:  # the UI moves between workers: every first pass now, not under the screen
            for i in range(len(history.workers)):
                stepper.open_worker(i)
        try:
            stepper.states, stepper.keys = tuple(states), tuple(parse_keys(keys))
            for spec in breaks:
                stepper.add_break(spec)
            stepper.go(stepper.position(to) if to is not None else 0)
        except BadInput as e:  # a position or breakpoint this log does not have
            raise BadInput(f"{log}: {e}") from None
        hit = None
        if breaks and print_:
            hit = stepper.next_hit(True)
            if hit is not None:
                stepper.go(hit[0])
        if not print_:
            from replay.stepui import StepApp

            StepApp(stepper, jump=jump).run()
            return
        view = stepper.view()
        if breaks and hit is None:
            view.note = f"no breakpoint hit after step {stepper.pos}"
        emit(view, json=json)
        if breaks and hit is None:
            raise typer.Exit(1)
    finally:
        stepper.close()


@app.callback()
def _options(
    imports: list[str] = typer.Option(
        [], "--import", metavar="MODULE",
        help="Import MODULE before anything replays: a patched or fixed state machine (repeatable; "
        "also after the command, or REPLAY_IMPORT=m1,m2).",
    ),
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                      help="Print the version of dask-replay and of distributed, and exit."),
) -> None:
    # main() has taken every --import already, wherever it stood: see replay.imports
    pass


def main() -> None:
    try:
        imports.request(imports.take_options(sys.argv))
        imports.apply()
        # without standalone mode, click returns typer.Exit's code instead of raising
        _afterwards.clear()
        code = app(standalone_mode=False)
        # a finding's exit code too: the answer is given
        while _afterwards:
            _afterwards.pop(0)()
        if isinstance(code, int) and code:
            sys.exit(code)
    except BadInput as e:
        err.print(render.safe(f"error: {e}", limit=400))
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as e:
        # usage errors of typer's click; duck-typed because typer vendors click
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            err.print(render.safe(f"error: {e.format_message()}"))
            sys.exit(2)
        # anything else is a bug of ours: keep its traceback
        err.print("dask-replay failed with the error below; this is a bug, please report it "
                  "with this output", highlight=False, markup=False)
        raise


if __name__ == "__main__":
    main()
