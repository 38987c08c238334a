"""A :class:`~replay.report.Report` as one self-contained HTML page.

Drawn with Bokeh, the library of dask's own dashboard, as standalone output:
Bokeh's scripts and styles are inlined (``bokeh.resources.INLINE``), so the
page opens from disk or as an attachment with no network access. Each worker
gets a task stream like the dashboard's (a row per lane, time across, pan,
zoom and hover), every stream on one linked time axis. What a reader must
find without a browser running scripts (the headline, every worker's
address, each unfinished task and ``why``'s sentence, the commands) is plain
HTML around the plots.

Above the streams, one lane per worker (and the scheduler's, when its log is
recorded) shows each worker's span, paused spans and end, with the
disagreements drawn as links between lanes. Below each stream, its tasks
counted by state over time (stacked), and a step slider moving a marker over
both, on the same linked time axis; clicking an unfinished task opens its
story in the table.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
from bokeh.core.templates import get_env
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.events import DocumentReady
from bokeh.layouts import column
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    FactorRange,
    HoverTool,
    Label,
    Range1d,
    Slider,
    Span,
    TapTool,
)
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
PAUSED_COLOUR = "#f2b701"
LINK_COLOUR = "#d62728"

#: task states' colours in the stacked counts
STATE_COLOURS = {
    "released": "#c7c7c7", "waiting": "#9edae5", "constrained": "#dbdb8d", "ready": "#aec7e8",
    "executing": "#1f77b4", "long-running": "#17becf", "fetch": "#ffbb78", "flight": "#d62728",
    "missing": "#8c564b", "cancelled": "#7f7f7f", "resumed": "#e377c2", "memory": "#2ca02c", "error": "#000000",
}
OTHER_STATE_COLOUR = "#bcbd22"

#: room for the rows' names left of every plot: the frames line up over the shared time axis
LEFT = 150

#: the height of the stacked counts, in pixels
COUNTS_HEIGHT = 120

#: the scheduler's lane in the cluster overview
SCHEDULER = "scheduler"

#: moves every marker to the slider's step: the counts as of the last sample at or before it
SLIDER_JS = """
const v = cb_obj.value, steps = src.data.step, times = src.data.time;
let lo = 0, hi = steps.length - 1;
while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (steps[mid] <= v) lo = mid; else hi = mid - 1; }
for (const m of markers) m.location = times[lo];
const parts = [];
for (const s of states) { const n = src.data[s][lo]; if (n) parts.push(s + " " + n); }
const at = document.getElementById(anchor);
if (at) at.textContent = "step " + v + ": as of step " + steps[lo] + " (" + times[lo].toFixed(3) + " s), "
  + (parts.length ? parts.join(", ") : "no tasks");
"""

#: ``report.html#w0=600&w2=35`` opens with worker 0's slider at step 600, worker 2's at 35
HASH_JS = """
const asked = new URLSearchParams(location.hash.slice(1));
for (let i = 0; i < names.length; i++) {
  const v = asked.get(names[i]);
  if (v === null || isNaN(Number(v))) continue;
  sliders[i].value = Math.max(sliders[i].start, Math.min(sliders[i].end, Math.round(Number(v))));
}
"""

#: opens the clicked unfinished task's story in the table
TAP_JS = """
const i = src.selected.indices[0];
if (i === undefined) return;
const el = document.getElementById(src.data.anchor[i]);
if (el) { el.open = true; el.scrollIntoView(); }
"""

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
details pre { background: #f4f4f4; padding: .3em; max-height: 30em; overflow: auto; }
</style>{% endblock %}
{% block contents %}
{{ header }}
{{ embed(docs[0].roots[0]) }}
{{ links }}
{% for w in workers %}
{{ w.heading }}
{{ embed(docs[0].roots[loop.index0 + 1]) }}
{{ w.at }}
{{ w.table }}
{% endfor %}
{% endblock %}
""")


def page(report: Report) -> str:
    """The page, as one string."""
    # a little room past the last step: what is still open there stays visible
    end = max(report.span, 1e-6) * (1 + 2 * OPEN_COLUMNS / report.width)
    x_range = Range1d(0, end, bounds=(-end * 0.01, None))
    doc = Document()
    doc.add_root(_overview_plot(report, x_range))
    sliders = {}
    for i, w in enumerate(report.workers):
        root, slider = _worker_plots(report, i, w, x_range)
        doc.add_root(root)
        if slider is not None:
            sliders[f"w{i}"] = slider
    doc.js_on_event(DocumentReady, CustomJS(args={"names": list(sliders), "sliders": list(sliders.values())},
                                            code=HASH_JS))
    workers = [{"heading": Markup(_heading(report, w)), "at": Markup(_at(i, w)),
                "table": Markup(_unfinished_table(report, i, w))} for i, w in enumerate(report.workers)]
    title = f"dask-replay report: {report.path}"
    return file_html(doc, resources=INLINE, title=title, template=TEMPLATE,
                     template_variables={"header": Markup(_header(report)), "workers": workers,
                                         "links": Markup(_links_list(report))})


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
        f"Paused spans (<code>PauseEvent</code> to <code>UnpauseEvent</code>) are shaded; the dashed line "
        f"is each worker's last step, grey when its log has its end record, red without one (killed, or the recorder stopped). Under each "
        f"stream, its tasks by state after each column's last step, and a step slider moving a marker "
        f"over both. Disagreements about a key, between workers at their last step shown"
        f"{' and between the scheduler and a worker over the run' if report.scheduler else ''}, are links "
        f"between the lanes of the first plot. Clicking a task not finished opens its story. "
        f"The headline, the unfinished tasks, their stories and the disagreements were "
        f"answered by the log's {_esc(report.source)} source.</p>\n"
        + _window(report)
        + _legend()
    )


def _window(report: Report) -> str:
    if report.start is None and report.stop is None:
        return ""
    shown = (f"from {report.start:.6f}" if report.start is not None else "from the first step") + " " + \
            (f"to {report.stop:.6f}" if report.stop is not None else "to the last step")
    return (f"<p class=\"note window\">Only {_esc(shown)} (recorded time, seconds since the epoch) is shown: "
            f"bars begun before it start at its left edge, and what is not finished is what was not "
            f"finished at each worker's last step by its end. The headline is the whole log's.</p>\n")


def _legend() -> str:
    items = [f'<span style="background:{c};display:inline-block;width:1em">&nbsp;</span> '
             f'{_esc(kind)} {_esc(outcome)}' for (kind, outcome), c in COLOURS.items()]
    items.append(f'<span style="border:2px solid black;background:{UNFINISHED_COLOUR};display:inline-block;'
                 f'width:1em">&nbsp;</span> not finished at the end')
    items.append(f'<span style="background:{PAUSED_COLOUR};opacity:.5;display:inline-block;width:1em">&nbsp;</span>'
                 f' paused')
    items.append(f'<span style="background:{LINK_COLOUR};display:inline-block;width:1em;height:3px"></span>'
                 f' disagreement')
    return '<p class="note">' + " &nbsp; ".join(items) + "</p>\n"


def _heading(report: Report, w: WorkerStream) -> str:
    end = _end(w)
    if w.paused:
        end += f"; paused {len(w.paused)} time{'s' if len(w.paused) != 1 else ''}"
    crash = f"<p class=\"note\">replay stopped early: {_esc(w.crash)}</p>" if w.crash else ""
    return (
        f"<h2 class=\"worker\">{_esc(w.address)}</h2>\n"
        f"<p class=\"note\">{w.steps} step{'s' if w.steps != 1 else ''}, {w.nthreads} thread{'s' if w.nthreads != 1 else ''}; "
        f"{_esc(end)}.</p>{crash}\n"
        f"<p class=\"command\">in text: <code>{_esc(report.command('diff', '0..' + str(w.steps), '-w', w.address))}"
        f"</code> (every step); one bar: <code>{_esc(report.command('story', 'KEY', '-w', w.address))}</code></p>\n"
    )


def _anchor(index: int, n: int) -> str:
    return f"story-{index}-{n}"


def _unfinished_table(report: Report, index: int, w: WorkerStream, limit: int = 200) -> str:
    command = f"<p class=\"command\">in text: <code>{_esc(report.command('why', '-w', w.address, '--at', str(w.stop_step)))}</code></p>"
    if not w.unfinished:
        return f"<p>{_esc(w.address)}: no task is stuck at step {w.stop_step}.</p>{command}\n"
    rows = []
    for n, u in enumerate(w.unfinished[:limit]):
        story = ""
        if u.story:
            story = (f"<details id=\"{_anchor(index, n)}\"><summary>story (last {len(u.story)} lines)</summary>"
                     f"<pre>{_esc(chr(10).join(u.story))}</pre><p class=\"command\"><code>"
                     f"{_esc(report.command('story', key_text(u.key), '-w', w.address, '--at', str(w.stop_step)))}"
                     f"</code></p></details>")
        rows.append(f"<tr><td><code>{_esc(key_text(u.key))}</code></td><td>{_esc(u.state)}</td>"
                    f"<td>{'step ' + str(u.since_step) if u.since_step else 'unknown'}</td>"
                    f"<td class=\"why\">{_esc(u.reason)}</td><td>{story}</td></tr>")
    more = f"<p>and {len(w.unfinished) - limit} more</p>" if len(w.unfinished) > limit else ""
    return (f"<h3>not finished at step {w.stop_step}</h3>\n<table class=\"unfinished\"><tr><th>key</th><th>state</th>"
            f"<th>since</th><th>why</th><th>story</th></tr>{''.join(rows)}</table>{more}{command}\n")


def _links_list(report: Report) -> str:
    if not report.links:
        between = "between the workers at the end" + (" or with the scheduler" if report.scheduler else "")
        return f"<p class=\"note\">no disagreement {between}.</p>\n"
    items = "".join(f"<li class=\"disagreement\">{_esc(link.text)}"
                    + ("" if link.resolved is None else f" (until {link.resolved:.3f} s)") + "</li>"
                    for link in report.links)
    return (f"<h3>disagreements</h3><ul>{items}</ul><p class=\"command\">in text: <code>"
            f"{_esc(report.command('disagreements'))}</code> (the scheduler's), "
            f"<code>{_esc(report.command('why'))}</code> (between workers)</p>\n")


def _overview_plot(report: Report, x_range: Range1d) -> Any:
    """One lane per worker (and the scheduler's): its span, paused spans and
    end; disagreements as links between lanes."""
    rows = [w.address for w in report.workers] + ([SCHEDULER] if report.scheduler else [])
    p = figure(
        title="workers: recorded span, paused, end; disagreements as links", x_range=x_range,
        y_range=FactorRange(*reversed(rows)), frame_width=report.width, frame_height=ROW * len(rows) + 10,
        tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom", toolbar_location="above",
        min_border_left=LEFT,
    )
    p.ygrid.grid_line_color = None
    spans = {"row": [], "start": [], "stop": [], "what": []}
    for w in report.workers:
        spans["row"].append(w.address)
        spans["start"].append(w.first)
        spans["stop"].append(w.last)
        spans["what"].append(f"{w.address}: steps to {w.stop_step} of {w.steps}; "
                             f"{len(w.unfinished)} not finished; {_end(w)}")
    drawn = p.hbar(y="row", left="start", right="stop", height=0.3, fill_color="#bbbbbb", line_color=None,
                   source=ColumnDataSource(spans))
    tips = [drawn]
    paused = {"row": [], "start": [], "stop": [], "what": []}
    for w in report.workers:
        for ps in w.paused:
            paused["row"].append(w.address)
            paused["start"].append(ps.start)
            paused["stop"].append(max(ps.stop, ps.start + report.bucket))
            until = f"step {ps.stop_step}" if ps.stop_step is not None else "the end"
            closing = " (closing)" if ps.start_step == w.closed_at else ""
            paused["what"].append(f"paused{closing} from step {ps.start_step} to {until}")
    if paused["row"]:
        tips.append(p.hbar(y="row", left="start", right="stop", height=0.7, fill_color=PAUSED_COLOUR,
                           fill_alpha=0.6, line_color=None, source=ColumnDataSource(paused)))
    ends = {"row": [w.address for w in report.workers], "x": [w.last for w in report.workers],
            "colour": ["#888888" if w.ended else "#d62728" for w in report.workers],
            "what": [_end(w) for w in report.workers]}
    tips.append(p.scatter(x="x", y="row", marker="square_x", size=12, fill_color="white", line_color="colour",
                          line_width=2, source=ColumnDataSource(ends)))
    p.add_tools(HoverTool(renderers=tips, tooltips=[("", "@what")]))
    if report.links:
        links = {"x0": [], "y0": [], "x1": [], "y1": [], "what": []}
        for link in report.links:
            links["x0"].append(link.time)
            links["y0"].append(link.worker)
            links["x1"].append(link.peer_time)
            links["y1"].append(link.peer if link.peer is not None else SCHEDULER)
            links["what"].append(link.text)
        source = ColumnDataSource(links)
        drawn_links = p.segment(x0="x0", y0="y0", x1="x1", y1="y1", line_color=LINK_COLOUR, line_width=3,
                                source=source)
        heads = p.scatter(x="x0", y="y0", marker="circle", size=9, fill_color=LINK_COLOUR, line_color=None,
                          source=source)
        renderers = [drawn_links, heads]
        lasting = [link for link in report.links if link.peer is None]
        if lasting:  # the scheduler's: along the worker's lane, for as long as it lasted
            ends = {w.address: w.last for w in report.workers}
            spans = ColumnDataSource({
                "row": [link.worker for link in lasting], "start": [link.time for link in lasting],
                "stop": [max(link.resolved if link.resolved is not None else ends[link.worker],
                             link.time + report.bucket) for link in lasting],
                "what": [link.text for link in lasting]})
            renderers.append(p.hbar(y="row", left="start", right="stop", height=0.15, fill_color=LINK_COLOUR,
                                    fill_alpha=0.6, line_color=None, source=spans))
        p.add_tools(HoverTool(renderers=renderers, tooltips=[("disagreement", "@what")]))
    return p


def _end(w: WorkerStream) -> str:
    if w.stop_step < w.steps:
        return f"window ends at step {w.stop_step} of {w.steps}"
    if w.closed_at is not None:
        return f"clean close from step {w.closed_at}"
    if w.ended:
        return f"recording stopped, worker {w.status}"
    return "no end record: killed, or the recorder stopped"


def _rows(w: WorkerStream) -> list[str]:
    """The stream's rows, top to bottom: threads, transfers, unfinished tasks."""
    rows = [f"thread {i + 1}" for i in range(max(w.lanes.get("execute", 0), 1))]
    rows += [f"transfer {i + 1}" for i in range(w.lanes.get("transfer", 0))]
    if w.unfinished:
        rows.append("not finished")
    return rows


def _row(kind: str, lane: int) -> str:
    return f"{'thread' if kind == 'execute' else 'transfer'} {lane + 1}"


def _at_anchor(index: int) -> str:
    return f"at-{index}"


def _at(index: int, w: WorkerStream) -> str:
    """Plain HTML under the slider: the step it is at and the task counts there."""
    if not w.counts.steps:
        return ""
    last = len(w.counts.steps) - 1
    now = ", ".join(f"{s} {n}" for s, n in w.counts.at(last).items()) or "no tasks"
    return (f"<p class=\"at\" id=\"{_at_anchor(index)}\">step {w.stop_step}: as of step {w.counts.steps[last]} "
            f"({w.counts.times[last]:.3f} s), {_esc(now)}</p>\n")


def _worker_plots(report: Report, index: int, w: WorkerStream, x_range: Range1d) -> tuple[Any, Any]:
    """The worker's stream, its task counts by state, and the step slider
    moving a marker over both (None: nothing to slide over)."""
    stream, marker = _stream_plot(report, index, w, x_range)
    if not w.counts.steps:
        return column(stream), None
    counts, counts_marker, source = _counts_plot(report, w, x_range)
    if w.stop_step <= 1:
        return column(stream, counts), None
    slider = Slider(start=1, end=w.stop_step, value=w.stop_step, step=1, title=f"{w.address}: step",
                    width=report.width)
    slider.js_on_change("value", CustomJS(args={"src": source, "markers": [marker, counts_marker],
                                                "states": w.counts.states, "anchor": _at_anchor(index)},
                                          code=SLIDER_JS))
    return column(stream, counts, slider), slider


def _stream_plot(report: Report, index: int, w: WorkerStream, x_range: Range1d) -> tuple[Any, Span]:
    rows = _rows(w)
    p = figure(
        title=w.address, x_range=x_range, y_range=FactorRange(*reversed(rows)),
        frame_width=report.width, frame_height=ROW * len(rows) + 10,
        tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        x_axis_label="recorded time (s)", toolbar_location="above", min_border_left=LEFT,
    )
    p.ygrid.grid_line_color = None
    if w.paused:  # behind the bars, the whole height: the worker started nothing new then
        # one glyph for every span (an annotation each costs the browser far more on a long run);
        # a categorical axis puts its rows at 0..len(rows)
        p.quad(left=[ps.start for ps in w.paused],
               right=[max(ps.stop, ps.start + report.bucket) for ps in w.paused],
               bottom=0, top=len(rows), fill_color=PAUSED_COLOUR, fill_alpha=0.25, line_color=None,
               level="underlay")
    bars = _bar_columns(report, w)
    drawn = p.hbar(y="row", left="start", right="stop", height=0.8, fill_color="colour", line_color="line",
                   line_width="line_width", source=ColumnDataSource(bars))
    p.add_tools(HoverTool(renderers=[drawn], tooltips=[("", "@what"), ("", "@detail"), ("why", "@why")]))
    buckets = _bucket_columns(report, w)
    if len(buckets["row"]):
        counted = p.hbar(y="row", left="start", right="stop", height=0.8, fill_color="colour", line_color=None,
                         fill_alpha="alpha", source=ColumnDataSource(buckets))
        p.add_tools(HoverTool(renderers=[counted], tooltips=[("", "@count @noun (@outcome) shorter than "
                                                                   + _duration(report.bucket)
                                                                   + ", started in this column")]))
    if w.unfinished:
        stuck = ColumnDataSource(_unfinished_columns(report, index, w))
        marked = p.hbar(y="row", left="start", right="stop", height=0.6, fill_color=UNFINISHED_COLOUR,
                        fill_alpha=0.35, line_color="black", hatch_pattern="/", hatch_alpha=0.4, source=stuck)
        p.add_tools(HoverTool(renderers=[marked], tooltips=[("", "@what"), ("why", "@why"), ("story", "@story"),
                                                            ("", "@command")]))
        p.add_tools(TapTool(renderers=[marked], callback=CustomJS(args={"src": stuck}, code=TAP_JS)))
    p.add_layout(Span(location=w.last, dimension="height", line_dash="dashed",
                      line_color="#888888" if w.ended else "#d62728", line_width=2))
    p.add_layout(Label(x=w.last, y=0, y_units="screen", x_offset=-4, text=_end(w), text_font_size="9pt",
                       text_align="right", text_color="#555555" if w.ended else "#d62728"))
    marker = Span(location=w.last, dimension="height", line_color="#2ca02c", line_width=1)
    p.add_layout(marker)
    return p, marker


def _counts_plot(report: Report, w: WorkerStream, x_range: Range1d) -> tuple[Any, Span, ColumnDataSource]:
    """Tasks by state over time, stacked, as a step function of the samples."""
    c = w.counts
    data: dict[str, Any] = {"step": np.asarray(c.steps, dtype=np.int64), "time": np.asarray(c.times)}
    below = np.zeros(len(c.steps))
    p = figure(
        title=f"{w.address}: tasks by state", x_range=x_range, frame_width=report.width,
        frame_height=COUNTS_HEIGHT, tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        toolbar_location="above", min_border_left=LEFT,
    )
    for state in c.states:
        counts = np.asarray(c.counts[state], dtype=np.int64)
        data[state] = counts
        data[f"{state} lo"], data[f"{state} hi"] = below, below + counts
        below = below + counts
    source = ColumnDataSource(data)
    p.y_range = Range1d(0, max(1.0, float(below.max(initial=0)) * 1.1))  # stacked: the total is the top
    for state in c.states:
        p.varea_step(x="time", y1=f"{state} lo", y2=f"{state} hi", step_mode="after", source=source,
                     fill_color=STATE_COLOURS.get(state, OTHER_STATE_COLOUR), legend_label=state)
    legend = p.legend[0]
    legend.orientation = "horizontal"
    legend.label_text_font_size = "8pt"
    legend.glyph_width = legend.glyph_height = 12
    legend.margin = legend.padding = 2
    p.add_layout(legend, "above")  # beside the data, not over it
    p.yaxis.axis_label = "tasks"
    marker = Span(location=w.last, dimension="height", line_color="#2ca02c", line_width=1)
    p.add_layout(marker)
    return p, marker, source


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


def _bucket_columns(report: Report, w: WorkerStream) -> dict[str, Any]:
    """One glyph per bucket: numbers as arrays (sent as binary), the hover's words from few columns."""
    n = len(w.buckets)
    columns = np.fromiter((b.column for b in w.buckets), dtype=np.float64, count=n)
    counts = np.fromiter((b.count for b in w.buckets), dtype=np.int64, count=n)
    return {
        "row": [_row(b.kind, b.lane) for b in w.buckets],
        "start": columns * report.bucket, "stop": (columns + 1) * report.bucket,
        "colour": [COLOURS[(b.kind, b.outcome)] for b in w.buckets],
        "alpha": np.minimum(1.0, 0.4 + 0.1 * counts), "count": counts,
        "noun": ["executions" if b.kind == "execute" else "transfers" for b in w.buckets],
        "outcome": [b.outcome for b in w.buckets],
    }


def _unfinished_columns(report: Report, index: int, w: WorkerStream) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in ("row", "start", "stop", "what", "why", "story", "command", "anchor")}
    for n, u in enumerate(w.unfinished):
        start = w.first if u.since is None else u.since
        cols["row"].append("not finished")
        cols["start"].append(start)
        cols["stop"].append(max(w.last, start + OPEN_COLUMNS * report.bucket))
        since = f"since step {u.since_step}" if u.since_step else "since before the log"
        cols["what"].append(f"{key_text(u.key)}: {u.state} {since}")
        cols["why"].append(u.reason)
        cols["story"].append(" | ".join(u.story[-4:]) + ("  (click: the whole story)" if u.story else ""))
        cols["command"].append(report.command("story", key_text(u.key), "-w", w.address, "--at", str(w.stop_step)))
        cols["anchor"].append(_anchor(index, n))
    return cols
