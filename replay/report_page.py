"""A :class:`~replay.report.Report` as one self-contained HTML page.

Drawn with Bokeh, the library of dask's own dashboard, as standalone output:
Bokeh's scripts and styles are inlined (``bokeh.resources.INLINE``), so the
page opens from disk or as an attachment with no network access. Each worker
gets a task stream like the dashboard's (a row per lane, time across, pan,
zoom and hover), every stream on one linked time axis. What a reader must
find without a browser running scripts (the headline, every worker's
address, each unfinished task and ``why``'s sentence, the commands) is plain
HTML around the plots.
"""
from __future__ import annotations

import html
from typing import Any

from bokeh.core.templates import get_env
from bokeh.embed import file_html
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d, Span
from bokeh.plotting import figure
from bokeh.resources import INLINE
from markupsafe import Markup

from replay.literal import key_text
from replay.report import Report, WorkerStream, describe_keys

#: fill colours by kind and outcome: executions in blues, transfers in reds as
#: on dask's task stream, anything not answered stands out
COLOURS = {
    ("execute", "success"): "#4c78a8",
    ("execute", "failure"): "#222222",
    ("execute", "rescheduled"): "#9ecae9",
    ("transfer", "success"): "#e45756",
    ("transfer", "busy"): "#f2b701",
    ("transfer", "failure"): "#7f3c8d",
    ("transfer", "network failure"): "#b279a2",
}
UNFINISHED_COLOUR = "#ff7f0e"

#: pixels per lane
ROW = 22

#: the least width, in pixel columns, of what is still open at a worker's last step
OPEN_COLUMNS = 8

TEMPLATE = get_env().from_string("""\
{% extends "file.html.jinja" %}
{% from macros import embed %}
{% block postamble %}<style>
body { font-family: sans-serif; margin: 1em 2em; color: #222; height: auto; }
pre, code { font-family: monospace; font-size: 90%; }
pre.headline { background: #f4f4f4; padding: .5em; white-space: pre-wrap; }
table.unfinished { border-collapse: collapse; margin: .5em 0 1.5em; }
table.unfinished td, table.unfinished th { border: 1px solid #ccc; padding: 2px 6px; text-align: left;
  vertical-align: top; }
.command { color: #555; }
.note { color: #555; font-size: 90%; }
</style>{% endblock %}
{% block contents %}
{{ header }}
{% for w in workers %}
{{ w.heading }}
{{ embed(docs[0].roots[loop.index0]) }}
{{ w.table }}
{% endfor %}
{% endblock %}
""")


def page(report: Report) -> str:
    """The page, as one string."""
    # a little room past the last step: what is still open there stays visible
    end = max(report.span, 1e-6) * (1 + 2 * OPEN_COLUMNS / report.width)
    x_range = Range1d(0, end, bounds=(-end * 0.01, None))
    plots = [_stream_plot(report, w, x_range) for w in report.workers]
    workers = [{"heading": Markup(_heading(report, w)), "table": Markup(_unfinished_table(report, w))}
               for w in report.workers]
    title = f"dask-replay report: {report.path}"
    return file_html(plots, resources=INLINE, title=title, template=TEMPLATE,
                     template_variables={"header": Markup(_header(report)), "workers": workers})


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _header(report: Report) -> str:
    headlines = "\n".join(w.headline for w in report.workers)
    return (
        f"<h1>dask-replay report: {_esc(report.path)}</h1>\n"
        + (f"<p class=\"command\">merged from a directory of worker logs: <code>{_esc(report.merged)}</code>"
           "</p>\n" if report.merged else "")
        + f"<pre class=\"headline\">{_esc(headlines)}</pre>\n"
        f"<p class=\"command\">in text: <code>{_esc(report.command('load'))}</code></p>\n"
        f"<p class=\"note\">Time is the recorded time each worker handled each step, in seconds since "
        f"the first step shown (each worker's clock is its own host's). An execution runs from the "
        f"<code>Execute</code> that started it to its <code>Execute*Event</code>, a transfer from its "
        f"<code>GatherDep</code> to its <code>GatherDep*Event</code>. Bars shorter than one pixel column "
        f"({_esc(_duration(report.bucket))} of recorded time, {report.width} columns) are drawn as one "
        f"bar per column, with their count on hover. An execution takes the lowest row free when it "
        f"starts: a worker uses more rows than threads while seceded or cancelled executions still run. "
        f"The headline and the unfinished tasks were "
        f"answered by the log's {_esc(report.source)} source.</p>\n"
        + _legend()
    )


def _legend() -> str:
    items = [f'<span style="background:{c};display:inline-block;width:1em">&nbsp;</span> '
             f'{_esc(kind)} {_esc(outcome)}' for (kind, outcome), c in COLOURS.items()]
    items.append(f'<span style="border:2px solid black;background:{UNFINISHED_COLOUR};display:inline-block;'
                 f'width:1em">&nbsp;</span> not finished at the end')
    return '<p class="note">' + " &nbsp; ".join(items) + "</p>\n"


def _heading(report: Report, w: WorkerStream) -> str:
    end = "clean close (end record)" if w.ended else "log ends without an end record: killed, or the recorder stopped"
    crash = f"<p class=\"note\">replay stopped early: {_esc(w.crash)}</p>" if w.crash else ""
    return (
        f"<h2 class=\"worker\">{_esc(w.address)}</h2>\n"
        f"<p class=\"note\">{w.steps} step{'s' if w.steps != 1 else ''}, {w.nthreads} thread{'s' if w.nthreads != 1 else ''}; "
        f"{_esc(end)}.</p>{crash}\n"
        f"<p class=\"command\">in text: <code>{_esc(report.command('diff', '0..' + str(w.steps), '-w', w.address))}"
        f"</code> (every step); one bar: <code>{_esc(report.command('story', 'KEY', '-w', w.address))}</code></p>\n"
    )


def _unfinished_table(report: Report, w: WorkerStream, limit: int = 200) -> str:
    command = f"<p class=\"command\">in text: <code>{_esc(report.command('why', '-w', w.address))}</code></p>"
    if not w.unfinished:
        return f"<p>{_esc(w.address)}: no task is stuck at its last step.</p>{command}\n"
    rows = "".join(
        f"<tr><td><code>{_esc(key_text(u.key))}</code></td><td>{_esc(u.state)}</td>"
        f"<td>{'step ' + str(u.since_step) if u.since_step else 'unknown'}</td>"
        f"<td class=\"why\">{_esc(u.reason)}</td></tr>"
        for u in w.unfinished[:limit]
    )
    more = f"<p>and {len(w.unfinished) - limit} more</p>" if len(w.unfinished) > limit else ""
    return (f"<h3>not finished at step {w.steps}</h3>\n<table class=\"unfinished\"><tr><th>key</th><th>state</th>"
            f"<th>since</th><th>why</th></tr>{rows}</table>{more}{command}\n")


def _rows(w: WorkerStream) -> list[str]:
    """The stream's rows, top to bottom: threads, transfers, unfinished tasks."""
    rows = [f"thread {i + 1}" for i in range(max(w.lanes.get("execute", 0), 1))]
    rows += [f"transfer {i + 1}" for i in range(w.lanes.get("transfer", 0))]
    if w.unfinished:
        rows.append("not finished")
    return rows


def _row(kind: str, lane: int) -> str:
    return f"{'thread' if kind == 'execute' else 'transfer'} {lane + 1}"


def _stream_plot(report: Report, w: WorkerStream, x_range: Range1d) -> Any:
    rows = _rows(w)
    p = figure(
        title=w.address, x_range=x_range, y_range=FactorRange(*reversed(rows)),
        frame_width=report.width, frame_height=ROW * len(rows) + 10,
        tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        x_axis_label="recorded time (s)", toolbar_location="above",
    )
    p.ygrid.grid_line_color = None
    bars = _bar_columns(report, w)
    drawn = p.hbar(y="row", left="start", right="stop", height=0.8, fill_color="colour", line_color="line",
                   line_width="line_width", source=ColumnDataSource(bars))
    p.add_tools(HoverTool(renderers=[drawn], tooltips=[("", "@what"), ("", "@detail"), ("why", "@why")]))
    buckets = _bucket_columns(report, w)
    if buckets["row"]:
        counted = p.hbar(y="row", left="start", right="stop", height=0.8, fill_color="colour", line_color=None,
                         fill_alpha="alpha", source=ColumnDataSource(buckets))
        p.add_tools(HoverTool(renderers=[counted], tooltips=[("", "@what")]))
    if w.unfinished:
        stuck = _unfinished_columns(report, w)
        marked = p.hbar(y="row", left="start", right="stop", height=0.6, fill_color=UNFINISHED_COLOUR,
                        fill_alpha=0.35, line_color="black", hatch_pattern="/", hatch_alpha=0.4,
                        source=ColumnDataSource(stuck))
        p.add_tools(HoverTool(renderers=[marked], tooltips=[("", "@what"), ("why", "@why"), ("", "@command")]))
    p.add_layout(Span(location=w.last, dimension="height", line_dash="dashed",
                      line_color="#888888" if w.ended else "#d62728", line_width=2))
    return p


def _bar_columns(report: Report, w: WorkerStream) -> dict[str, list]:
    why = {key_text(u.key): u.reason for u in w.unfinished}
    cols: dict[str, list] = {k: [] for k in ("row", "start", "stop", "colour", "line", "line_width",
                                             "what", "detail", "why")}
    for b in w.bars:
        unfinished = b.stop_step is None
        cols["row"].append(_row(b.kind, b.lane))
        cols["start"].append(b.start)
        cols["stop"].append(max(b.stop, b.start + OPEN_COLUMNS * report.bucket) if unfinished else b.stop)
        cols["colour"].append(UNFINISHED_COLOUR if unfinished else COLOURS[(b.kind, b.outcome)])
        cols["line"].append("black" if unfinished else None)
        cols["line_width"].append(2 if unfinished else 0)
        keys = describe_keys(b.keys)
        if b.kind == "execute":
            cols["what"].append(f"execute {keys}: {b.outcome}")
        else:
            cols["what"].append(f"gather {keys} from {b.peer}: {b.outcome}")
        until = f"step {b.stop_step}" if b.stop_step is not None else "not answered by the last step"
        cols["detail"].append(f"step {b.start_step} to {until}, {_duration(b.stop - b.start)}")
        cols["why"].append("; ".join(why[k] for k in map(key_text, b.keys) if k in why) if unfinished else "")
    return cols


def _bucket_columns(report: Report, w: WorkerStream) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in ("row", "start", "stop", "colour", "alpha", "what")}
    size = _duration(report.bucket)
    for b in w.buckets:
        cols["row"].append(_row(b.kind, b.lane))
        cols["start"].append(b.column * report.bucket)
        cols["stop"].append((b.column + 1) * report.bucket)
        cols["colour"].append(COLOURS[(b.kind, b.outcome)])
        cols["alpha"].append(min(1.0, 0.4 + 0.1 * b.count))
        noun = "execution" if b.kind == "execute" else "transfer"
        cols["what"].append(f"{b.count} {noun}{'s' if b.count != 1 else ''} ({b.outcome}) "
                            f"shorter than {size}, started in this {size} column")
    return cols


def _unfinished_columns(report: Report, w: WorkerStream) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in ("row", "start", "stop", "what", "why", "command")}
    for u in w.unfinished:
        start = w.first if u.since is None else u.since
        cols["row"].append("not finished")
        cols["start"].append(start)
        cols["stop"].append(max(w.last, start + OPEN_COLUMNS * report.bucket))
        since = f"since step {u.since_step}" if u.since_step else "since before the log"
        cols["what"].append(f"{key_text(u.key)}: {u.state} {since}")
        cols["why"].append(u.reason)
        cols["command"].append(report.command("story", key_text(u.key), "-w", w.address))
    return cols
