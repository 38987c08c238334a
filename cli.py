"""The ``replay`` command: thin wrappers that read, call the engine, render."""
from __future__ import annotations

import sys
from typing import Any, Optional

import orjson
import typer
from rich.console import Console

from replay.log import ClusterLog, summary
from replay.logfile import LogError
from replay import render

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Record and replay the dask.distributed worker state machine.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Fail(Exception):
    """Bad input: one line on stderr, exit 2."""


def emit_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


def open_log(path: str, *, validate: bool = False) -> ClusterLog:
    log = ClusterLog.open(path, validate=validate)
    for w in log.warnings:
        err.print(render.safe(f"warning: {w}"))
    return log


@app.command()
def schema() -> None:
    """Print the JSON Schema of one log line."""
    from schemas.records import record_json_schema

    emit_json(record_json_schema())


@app.command()
def check(
    logs: list[str] = typer.Argument(..., help="Log files ('-' for stdin)."),
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate every line of LOGS and summarise each worker."""
    results = [summary(open_log(path, validate=True)) for path in logs]
    if json:
        emit_json(results[0] if len(results) == 1 else {"logs": results})
        return
    for r in results:
        out.print(render.check_summary(r))


def main() -> None:
    from replay.engine import ReplayError
    from schemas.codec import CodecError

    try:
        app(standalone_mode=False)
    except (LogError, Fail, KeyError, ReplayError, CodecError) as e:
        # CodecError: an event decoded without replay.log.decode_step, so no line to name
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        err.print(render.safe(f"error: {msg}", limit=400))
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
        raise


if __name__ == "__main__":
    main()
