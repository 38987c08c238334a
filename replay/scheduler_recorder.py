"""Record what the scheduler decided, beside the workers' logs.

``client.register_plugin(ClusterRecorder("logs/"))`` is the one line that
records a whole cluster: it records the scheduler into ``logs/scheduler.jsonl``
through dask's public ``SchedulerPlugin`` hooks, and registers the worker
:class:`~replay.record.Recorder` on every worker, present and future, through
the scheduler (as ``client.register_plugin(Recorder(...))`` would).

A scheduler log is a log of the same format as a worker's
(:mod:`schemas.scheduler` describes its lines), written by the same
crash-safe :class:`~replay.logfile.LogWriter`:

- ``scheduler-header``: versions, the scheduler's address, when it started;
- ``transition``: one task transition as ``Scheduler.transition_log`` holds
  it (key, start, finish, recommendations, stimulus id, the scheduler's own
  time stamp), with the scheduler's view of the task after it where that
  changed: ``processing_on`` and the ``who_has`` holders;
- ``add-worker`` / ``remove-worker``: a worker joined or left;
- ``scheduler-end``: the recorder stopped cleanly.

Every record carries ``seq``, numbered from 1, so a torn or reordered log is
told from a whole one.

What it changes in the scheduler: nothing. It reads the task and the last
``transition_log`` entry in each ``transition`` hook and writes one line;
any failure stops the recording with a warning, never the scheduler.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Optional

import dask
import distributed
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

from replay.logfile import LogWriter
from replay.record import DEFAULT_DIRECTORY, Recorder
from schemas.codec import FORMAT, VERSION, encode_key, encode_resources

logger = logging.getLogger("replay.scheduler_recorder")

#: the scheduler log's file name in a recording directory (``.gz`` compressed)
SCHEDULER_LOG = "scheduler.jsonl"

#: a task's view as recorded: (processing_on, who_has holders)
View = tuple[Optional[str], tuple[str, ...]]


class ClusterRecorder(SchedulerPlugin):
    """A scheduler plugin that writes the scheduler's decisions to
    ``directory/scheduler.jsonl`` and registers a worker
    :class:`~replay.record.Recorder` (with the same options) on every worker.

    Parameters
    ----------
    directory:
        Folder for the logs, created if missing.
    deterministic, compress:
        As for :class:`~replay.record.Recorder`; ``compress`` also applies to
        the scheduler's log.
    workers:
        Also record every worker (default). False records the scheduler only.
    """

    name = "dask-replay-scheduler-recorder"
    idempotent = False

    def __init__(self, directory: str = DEFAULT_DIRECTORY, *, deterministic: bool = True,
                 compress: bool = False, workers: bool = True):
        self.directory = str(directory)
        self.deterministic = deterministic
        self.compress = compress
        self.workers = workers
        self.session: Optional[SchedulerSession] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "session": None}

    async def start(self, scheduler: Any) -> None:
        try:
            self.session = SchedulerSession(scheduler, self.directory, compress=self.compress)
        except Exception as e:  # never take the scheduler down
            logger.warning("dask-replay: not recording the scheduler: %r", e)
        if self.workers:
            recorder = Recorder(self.directory, deterministic=self.deterministic, compress=self.compress)
            await scheduler.register_worker_plugin(None, dumps(recorder), Recorder.name, idempotent=False)

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str = "",
                   **kwargs: Any) -> None:
        if self.session is not None:
            self.session.transition(key, start, finish, stimulus_id)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        if self.session is not None:
            self.session.add_worker(worker)

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str = "", **kwargs: Any) -> None:
        if self.session is not None:
            self.session.remove_worker(worker, stimulus_id)

    async def close(self) -> None:
        if self.session is not None:
            self.session.close("scheduler closed")


class SchedulerSession:
    """Recording of one scheduler."""

    def __init__(self, scheduler: Any, directory: str, *, compress: bool = False, clock: Any = time.time):
        self.scheduler = scheduler
        self.clock = clock
        self.seq = 0
        self.active = True
        #: the view last written for each key: a record carries it only when it changed
        self._views: dict[Any, View] = {}
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, SCHEDULER_LOG + (".gz" if compress else ""))
        n = 0
        while os.path.exists(path):  # a second scheduler in the same folder
            n += 1
            path = os.path.join(directory, f"scheduler-{n}.jsonl" + (".gz" if compress else ""))
        self.path = path
        self.writer = LogWriter(path, compress=compress)
        self._write({
            "kind": "scheduler-header", "format": FORMAT, "version": VERSION,
            "address": scheduler.address or "", "dask": dask.__version__,
            "distributed": distributed.__version__, "python": sys.version.split()[0],
            "pid": os.getpid(), "started": clock(),
        })
        # workers that joined before the recorder: their joining was not seen
        for address in list(scheduler.workers):
            self.add_worker(address, present=True)

    def _write(self, rec: dict) -> None:
        if rec["kind"] != "scheduler-header":
            self.seq += 1
            rec["seq"] = self.seq
        self.writer.write(rec)

    def _guarded(self, fn: Any, *args: Any) -> None:
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as e:
            logger.warning("dask-replay: recording of the scheduler stopped after record %d: %r; "
                           "the scheduler carries on unrecorded", self.seq, e)
            self.active = False
            self._close_writer()

    # --- hooks ----------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        self._guarded(self._transition, key, start, finish, stimulus_id)

    def _transition(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        log = self.scheduler.transition_log
        entry = log[-1] if log else None
        # the hook runs right after Scheduler._transition appends its entry:
        # its recommendations and time stamp are the ones Scheduler.story shows
        if entry is not None and entry[0] == key and entry[1] == start and entry[2] == finish:
            recs, stamp = entry[3], entry[5]
        else:
            recs, stamp = {}, self.clock()
        rec: dict[str, Any] = {
            "kind": "transition", "key": encode_key(key), "start": start, "finish": finish,
            "stimulus_id": stimulus_id, "time": stamp,
            "recommendations": [[encode_key(k), v] for k, v in recs.items()],
        }
        ts = self.scheduler.tasks.get(key)
        if finish == "forgotten" or ts is None:
            view: View = (None, ())
        else:
            ws = ts.processing_on
            view = (ws.address if ws is not None else None, tuple(sorted(w.address for w in ts.who_has or ())))
        if self._views.get(key, (None, ())) != view:
            rec["processing_on"], rec["who_has"] = view[0], list(view[1])
        if finish == "forgotten":
            self._views.pop(key, None)
        else:
            self._views[key] = view
        self._write(rec)

    def add_worker(self, address: str, present: bool = False) -> None:
        self._guarded(self._add_worker, address, present)

    def _add_worker(self, address: str, present: bool) -> None:
        ws = self.scheduler.workers.get(address)
        rec: dict[str, Any] = {"kind": "add-worker", "address": address, "time": self.clock(),
                               "nthreads": ws.nthreads if ws is not None else None,
                               "resources": encode_resources(ws.resources if ws is not None else {})}
        if present:
            rec["present"] = True
        self._write(rec)

    def remove_worker(self, address: str, stimulus_id: str) -> None:
        self._guarded(self._remove_worker, address, stimulus_id)

    def _remove_worker(self, address: str, stimulus_id: str) -> None:
        # the scheduler drops the worker from every who_has without a transition
        for key, (on, holders) in list(self._views.items()):
            if address in holders:
                self._views[key] = (on, tuple(h for h in holders if h != address))
        self._write({"kind": "remove-worker", "address": address, "time": self.clock(),
                     "stimulus_id": stimulus_id})

    def close(self, reason: str) -> None:
        self._guarded(self._write, {"kind": "scheduler-end", "time": self.clock(), "reason": reason})
        self.active = False
        self._close_writer()

    def _close_writer(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass
