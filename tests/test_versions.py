"""The supported range of distributed releases, under whichever is installed
(CI runs this file under the oldest and the newest)."""
from __future__ import annotations

import dataclasses

import distributed
import pytest
from distributed import worker_state_machine as wsm

import replay
from replay.errors import LogError
from schemas.convert import ERA, EVENT_FIELDS, INSTRUCTION_FIELDS, decode_event, encode_event
from schemas.versions import ERAS, NEWEST, OLDEST, era_of, release, supported

OLDEST_FIXTURE = "stuck-flight-2024.1.0.jsonl"


def test_the_installed_release_is_in_the_range_and_its_era_describes_its_classes():
    assert supported(distributed.__version__)
    assert era_of(distributed.__version__) is ERA
    for name, fields in EVENT_FIELDS.items():
        real = {f.name for f in dataclasses.fields(getattr(wsm, name))} - {"stimulus_id"}
        # the log format's fields, less those this release lacks, plus its own
        expected = set(fields) - set(ERA.log_only.get(name, ())) | set(ERA.class_only.get(name, {}))
        assert real == expected, name
    for name, fields in INSTRUCTION_FIELDS.items():
        real = {f.name for f in dataclasses.fields(getattr(wsm, name))} - {"stimulus_id"}
        assert real == set(fields) - set(ERA.log_only.get(name, ())) | set(ERA.class_only.get(name, {})), name


def test_eras_cover_the_range_without_gaps():
    assert ERAS[0].first == OLDEST and ERAS[-1].last == NEWEST
    for a, b in zip(ERAS, ERAS[1:]):
        assert release(a.last) < release(b.first)
    assert supported("2024.1.0") and supported("2026.8.0") and supported("2025.2.0+12.gabc")
    assert not supported("2023.12.1") and not supported("2026.9.0") and not supported("main")


def test_a_compute_event_has_the_same_log_form_under_every_release():
    ev = wsm.ComputeTaskEvent.dummy("x", who_has={"y": ["tcp://127.0.0.1:2"]}, stimulus_id="s1")
    enc = encode_event(ev)
    # the log format has no duration, whatever this release's class has
    assert "duration" not in enc and set(enc) == {"cls", "stimulus_id", *EVENT_FIELDS["ComputeTaskEvent"]}
    back = decode_event(enc)
    assert type(back) is wsm.ComputeTaskEvent and back.who_has == {"y": ["tcp://127.0.0.1:2"]}


@pytest.mark.parametrize("version", ["2023.12.1", "2026.9.0", "not a version"])
def test_a_log_of_a_release_outside_the_range_is_refused_at_its_header(
    version, tmp_path, task_records, jsonl, cli_run
):
    header, *rest = task_records()
    header["distributed"] = version
    path = tmp_path / "log.jsonl"
    path.write_bytes(jsonl(header, *rest))
    with pytest.raises(LogError) as e:
        replay.open(str(path))
    assert e.value.line == 1
    text = str(e.value)
    assert version in text and distributed.__version__ in text and "\n" not in text
    code, out, err = cli_run(["verify", path])
    assert code == 2 and version in err and distributed.__version__ in err


def test_every_fixture_replays_under_the_installed_release(shipped_fixture):
    history = replay.open(shipped_fixture)
    for worker in history.workers:
        recorded = worker.header["distributed"]
        if not supported(recorded):
            pytest.skip(f"recorded with distributed {recorded}, outside the supported range")
        divergence, _ = worker.verify()
        if divergence is not None:
            # another release may behave otherwise: never a corrupt log
            assert recorded != distributed.__version__, divergence
            assert divergence.cause == (
                f"behaviour change between distributed {recorded} and {distributed.__version__}"
            )


def test_the_oldest_releases_log_replays_exactly_under_this_one(fixture_path):
    """Recorded with 2024.1.0 (examples/record_oldest.py): under every supported
    release the two workers replay step for step, and the second is stuck as
    recorded: x in flight from a peer that never answers, y waiting for it."""
    history = replay.open(fixture_path(OLDEST_FIXTURE))
    assert {w.header["distributed"] for w in history.workers} == {"2024.1.0"}
    holder, stuck = sorted(history.workers, key=lambda w: -w.events)
    for worker in history.workers:
        divergence, _ = worker.verify(validate=True)
        assert divergence is None
    assert {k: ts.state for k, ts in holder.state_at(None).tasks.items()} == {"x": "memory", "s": "memory"}
    ws = stuck.state_at(None)
    assert {k: ts.state for k, ts in ws.tasks.items()} == {"x": "flight", "y": "waiting"}
    assert ws.tasks["x"].coming_from == holder.address
