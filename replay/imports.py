"""Replay under a patched or fixed state machine.

A maintainer checks a fix by replaying a log through the changed code:
``replay verify hang.jsonl --import myfix`` imports the module ``myfix``
(found on ``sys.path``, which includes the current directory) before anything
replays. The module changes ``distributed.worker_state_machine`` however it
likes — a replaced method, a re-registered event handler — and every replay
of the command runs through the change.

Every process that replays must see the same change: the command itself, the
process it re-executes with the recorded hash seed, ``--jobs`` children and
``--scheduler`` tasks. So the modules travel in the environment
(:data:`ENV`, with the folder they are found from in :data:`PATH_ENV`), and
each of those processes calls :func:`apply` first. The index keys itself on
the state machine's code as imported (:mod:`replay.codeid`), so a patched and
a stock replay never share one.
"""
from __future__ import annotations

import importlib
import os
import sys

from replay.errors import BadInput

#: modules to import before replaying, comma separated
ENV = "REPLAY_IMPORT"
#: folders they are found from, ``os.pathsep`` separated: the directory the
#: command was started in, for processes started elsewhere
PATH_ENV = "REPLAY_IMPORT_PATH"
#: the option, accepted anywhere on the command line
OPTION = "--import"


def requested() -> list[str]:
    """The modules :data:`ENV` names, in order."""
    return [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]


def take_options(argv: list[str]) -> list[str]:
    """Remove every ``--import M`` and ``--import=M`` from ``argv`` (in place)
    and return the modules; they may stand before or after the command."""
    found: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == OPTION:
            if i + 1 >= len(argv):
                raise BadInput(f"{OPTION} needs a module name")
            found.append(argv[i + 1])
            del argv[i:i + 2]
        elif arg.startswith(OPTION + "="):
            found.append(arg[len(OPTION) + 1:])
            del argv[i]
        else:
            i += 1
    return found


def request(modules: list[str]) -> None:
    """Add ``modules`` to :data:`ENV` for this process and every process it
    starts, found from the current directory."""
    if not modules:
        return
    os.environ[ENV] = ",".join(dict.fromkeys(requested() + modules))
    folders = os.environ.get(PATH_ENV, "").split(os.pathsep) if os.environ.get(PATH_ENV) else []
    os.environ[PATH_ENV] = os.pathsep.join(dict.fromkeys(folders + [os.getcwd()]))


def apply() -> list[str]:
    """Import every module :data:`ENV` names; returns them.

    A module that cannot be found is bad input. Anything the module itself
    raises while it is imported keeps its traceback: it is the patch's bug.
    """
    modules = requested()
    for folder in os.environ.get(PATH_ENV, "").split(os.pathsep):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):  # it, not what it imports
                raise BadInput(f"{OPTION} {name}: no module named {e.name!r} on the path "
                               f"(the current directory is searched)") from None
            raise
    return modules
