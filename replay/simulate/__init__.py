"""A simulated cluster: real ``WorkerState`` objects, a scripted scheduler and peers.

Each worker is a real ``WorkerState`` recorded by a real
:class:`~replay.record.Session`, so the output is an ordinary cluster log;
everything around the state machines is simulated, from one seed, on a fake
clock. :class:`Simulation` states what such a log can and cannot contain.

- :mod:`.faults`: which faults to inject, and how often;
- :mod:`.dag`: the rolling random task graph;
- :mod:`.nodes`: the recorded workers and virtual peers, and how they answer;
- :mod:`.scheduler`: where tasks run, and the handlers of workers' messages;
- :mod:`.loop`: the discrete-event loop on the fake clock;
- :mod:`.simulation`: all of them wired into a run.
"""
from replay.logfile import ThreadedLineWriter
from replay.simulate.faults import Faults
from replay.simulate.loop import Stalled
from replay.simulate.nodes import SimulationError
from replay.simulate.simulation import Simulation, simulate

__all__ = ["Faults", "Simulation", "SimulationError", "Stalled", "ThreadedLineWriter", "simulate"]
