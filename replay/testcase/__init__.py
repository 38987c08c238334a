"""Write a shrunk event sequence as one pytest function in dask's own style.

The test needs only ``distributed`` and ``pytest``. Every call it makes is run
here first, through a real ``WorkerState`` set up exactly as the test will set
it up, so the instructions it asserts are the real ones and its final
assertion holds today: the test passes while the bug is there, and says which
assertion to flip once it is fixed. Where the cause is certain it also
carries, commented, what a correct worker does instead (:func:`once_fixed`
uncomments it).

Everything taken from a log (keys, addresses, stimulus ids, exception texts) is
written as a plain Python literal that is parsed back and compared before it
is emitted; the finished source is parsed once more and may only call a fixed
set of names.

- :mod:`.outcomes`: the stimuli's kinds and what a test asserts at its end;
- :mod:`.literals`: values written as checked Python literals;
- :mod:`.layout`: code nodes and how they split across lines;
- :mod:`.prose`: comments, docstrings and what each event does, in words;
- :mod:`.events`: when a written event is the recorded one;
- :mod:`.audit`: what a written test may import and call;
- :mod:`.writer`: the events run through a real ``WorkerState`` and written out.
"""
from replay.testcase.literals import checked_literal
from replay.testcase.outcomes import Expr, Invalid, InState, Narrative, Outcome, Raises, Resources, Stimulus, Stuck
from replay.testcase.writer import once_fixed, pytest_source

__all__ = ["Expr", "InState", "Invalid", "Narrative", "Outcome", "Raises", "Resources", "Stimulus", "Stuck",
           "checked_literal", "once_fixed", "pytest_source"]
