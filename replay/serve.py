"""Keep one log's replays warm in a server, so that every later command is quick.

``replay serve LOG`` replays each worker once, leaving forked snapshots
behind (:mod:`replay.seek`), and answers ``state`` and ``diff`` questions on
a Unix socket. The CLI finds the socket by the log's path, size and
modification time, asks it, and falls back to replaying by itself when there
is none. The socket lives in a directory only this user can enter.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import traceback
from collections.abc import Callable, Iterator

import orjson

from replay.errors import BadInput
from replay.history import ClusterHistory, WorkerHistory
from replay.reader import Progress
from replay.seek import Seeker
from replay.views import state_of, steps_between
from schemas.codec import decode_key

#: longest request a client may send
MAX_REQUEST = 1 << 16


def socket_path(log: str) -> str:
    """Where the server for ``log``, as it is on disk now, listens."""
    st = os.stat(log)
    ident = f"{os.path.realpath(log)}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    folder = os.path.join(tempfile.gettempdir(), f"dask-replay-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, hashlib.sha256(ident).hexdigest()[:24] + ".sock")


class Server:
    """Answers views of one log from warm snapshots."""

    def __init__(self, history: ClusterHistory):
        self.history = history
        self.seekers: list[Seeker] = []

    def prepare(self, worker: WorkerHistory, progress: Progress | None = None) -> None:
        """Replay one worker once, leaving its snapshots behind."""
        s = Seeker(worker)
        s.prepare(progress)
        worker.seeker = s
        self.seekers.append(s)

    def answer(self, request: dict) -> dict:
        """``{"ok": view}``, ``{"error": line}`` for bad input, or ``{"bug":
        traceback}`` for a failure of this server, which the client raises."""
        try:
            w = self.history.worker(request.get("worker"))
            op = request.get("op")
            if op == "state":
                keys = [decode_key(k) for k in request.get("keys") or ()]
                view = w.view(request.get("at"), state_of, request.get("states") or (), keys,
                              bool(request.get("detail")))
                return {"ok": view.to_json()}
            if op == "diff":
                first, last = w.position(request.get("from")), w.position(request.get("to"))
                if first > last:
                    return {"error": f"step {first} comes after step {last}"}
                steps, total = steps_between(w.calls(first + 1, last, instructions=False))
                return {"ok": {
                    "before": w.view(first, state_of).to_json(),
                    "after": w.view(last, state_of).to_json(),
                    "steps": [s.to_json() for s in steps],
                    "steps_total": total,
                }}
            return {"error": f"unknown request {op!r}"}
        except BadInput as e:
            return {"error": str(e)}
        except Exception:
            return {"bug": traceback.format_exc()}

    def serve(self, path: str, ready: Callable[[], None] | None = None) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(8)
            if ready is not None:
                ready()
            while True:
                conn, _ = sock.accept()
                with conn:
                    self._one(conn)
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.close()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            data = b"".join(_recv_line(conn))
            request = orjson.loads(data)
            reply = self.answer(request) if isinstance(request, dict) else {"error": "bad request"}
        except (OSError, orjson.JSONDecodeError, ValueError):
            return
        with contextlib.suppress(OSError):
            conn.sendall(orjson.dumps(reply, option=orjson.OPT_NON_STR_KEYS) + b"\n")

    def close(self) -> None:
        for s in self.seekers:
            s.close()
        self.seekers.clear()


def _recv_line(conn: socket.socket) -> Iterator[bytes]:
    size = 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ValueError("request too long")
        yield chunk
        if chunk.endswith(b"\n"):
            return


def ask(log: str, request: dict, timeout: float = 120.0) -> dict | None:
    """The server's answer for ``log``, or None if no server is running for it."""
    try:
        path = socket_path(log)
    except OSError:
        return None
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(orjson.dumps(request) + b"\n")
        data = b"".join(_recv_all(sock))
    except OSError:
        return None  # a stale socket: the server is gone
    finally:
        sock.close()
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return reply if isinstance(reply, dict) else None


def _recv_all(sock: socket.socket) -> Iterator[bytes]:
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        yield chunk
