"""Draw ``examples/step-stuck-flight.svg``: ``replay step`` on
``fixtures/stuck-flight.jsonl`` at 80×24, stopped where ``x`` reached flight.

Re-run from the repository root::

    .venv/bin/python examples/step_screenshot.py
"""
from __future__ import annotations

import asyncio
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import replay  # noqa: E402
from replay.step import Stepper  # noqa: E402
from replay.stepui import StepApp  # noqa: E402


async def main() -> None:
    stepper = Stepper(replay.open(os.path.join(ROOT, "fixtures", "stuck-flight.jsonl")), "43731")
    app = StepApp(stepper)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            # the keys a user presses: a breakpoint where x reaches flight, continue
            await pilot.press("b", *"state:x=flight", "enter", "c")
            app.save_screenshot("step-stuck-flight.svg", path=os.path.join(ROOT, "examples"))
    finally:
        stepper.close()


if __name__ == "__main__":
    asyncio.run(main())
