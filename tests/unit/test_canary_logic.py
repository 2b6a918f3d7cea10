"""The TCP canary's accounting, from synthetic echo timelines (no sockets, no namespaces)."""

from __future__ import annotations

import json

import pytest

from harness.canary.client import Gap, LineBuffer, Tracker, decode, encode, main
from harness.canary.controller import CanaryError, CanaryReport, merge_into
from harness.record import MigrationRecord

EPOCH = 1_700_000_000.0  # wall clock = EPOCH + monotonic in these timelines


class Timeline:
    """Drives a Tracker with a synthetic clock: messages sent, echoes arriving as bytes."""

    def __init__(self, threshold_ms: float = 50.0):
        self.t = Tracker(gap_threshold_ms=threshold_ms)
        self.sent: dict[int, float] = {}  # seq -> wall send time

    def send(self, at: float) -> int:
        seq = self.t.next_seq()
        self.sent[seq] = EPOCH + at
        self.t.on_sent(seq, at, EPOCH + at)
        return seq

    def line(self, seq: int) -> bytes:
        return encode(seq, self.sent[seq])

    def echo(self, at: float, *seqs: int) -> None:
        for seq in seqs:
            self.t.on_line(self.line(seq)[:-1], at, EPOCH + at)

    def steady(self, start: float, end: float, *, rate: float = 100.0, rtt: float = 0.001) -> None:
        """Send at `rate` from `start` to `end`, each echoed `rtt` later."""
        at = start
        while at < end - 1e-9:
            self.echo(at + rtt, self.send(at))
            at += 1 / rate


# -- wire format -----------------------------------------------------------------------


def test_messages_are_self_framed_lines_that_decode_back() -> None:
    line = encode(42, EPOCH + 0.25)
    assert line == b"seq=42 t=1700000000.250000\n"
    assert decode(line[:-1]) == (42, "1700000000.250000")


@pytest.mark.parametrize(
    "garbage", [b"", b"hello", b"seq=x t=1.0", b"seq=1 t=abc", b"seq=1", b"t=1.0 seq=1", b"\xff\xfe"]
)
def test_anything_else_is_no_message(garbage: bytes) -> None:
    assert decode(garbage) is None


def test_lines_are_reassembled_however_the_bytes_arrive() -> None:
    stream = b"".join(encode(i, EPOCH + i) for i in range(1, 6))
    one_by_one = LineBuffer()
    got = [line for b in stream for line in one_by_one.feed(bytes([b]))]
    assert [decode(line)[0] for line in got] == [1, 2, 3, 4, 5]  # type: ignore[index]
    coalesced = LineBuffer()
    assert len(coalesced.feed(stream[:50])) == 1
    assert len(coalesced.feed(stream[50:])) == 4


def test_an_endless_line_is_dropped_as_garbage() -> None:
    buf = LineBuffer()
    assert buf.feed(b"x" * 1000) == [b"x" * 1000]
    assert buf.feed(encode(1, EPOCH)) == [encode(1, EPOCH)[:-1]]
    tracker = Tracker()
    assert tracker.on_line(b"x" * 1000, 0.0, EPOCH) is None
    assert tracker.corrupt == 1


# -- gaps and loss ---------------------------------------------------------------------


def test_steady_state_has_no_loss_and_only_rtt_sized_gaps() -> None:
    tl = Timeline()
    tl.steady(0.0, 1.0)
    tl.t.finish(1.1, EPOCH + 1.1)
    r = tl.t.report()
    assert (r["sent"], r["echoed"], r["lost"], r["resets"]) == (100, 100, 0, 0)
    assert r["max_gap_ms"] == pytest.approx(1.0, abs=0.01)
    assert r["gaps"] == []  # none over the threshold
    assert r["max_gap"]["ms"] == r["max_gap_ms"]  # the longest one is always reported
    assert r["rtt_ms"]["p50"] == pytest.approx(1.0, abs=0.01)


def test_a_stall_is_one_gap_from_the_first_unanswered_send_to_the_next_echo() -> None:
    tl = Timeline()
    tl.steady(0.0, 0.5)  # last echo at 0.491
    stalled = [tl.send(0.5 + i * 0.01) for i in range(30)]  # 0.50 .. 0.79, nothing comes back
    tl.echo(0.8, *stalled)  # all echoes at once (TCP recovered)
    tl.steady(0.81, 1.0)
    tl.t.finish(1.1, EPOCH + 1.1)
    r = tl.t.report()
    assert r["lost"] == 0
    assert r["max_gap_ms"] == pytest.approx(300.0, abs=0.01)
    [gap] = r["gaps"]
    assert gap == {
        "start": EPOCH + 0.5,
        "end": EPOCH + 0.8,
        "ms": pytest.approx(300.0, abs=0.01),
        "open": False,
    }


def test_gap_starts_at_the_last_echo_when_messages_were_already_in_flight() -> None:
    tl = Timeline()
    a, b = tl.send(0.0), tl.send(0.01)
    tl.echo(0.1, a)  # b still outstanding: waiting for it starts at this echo
    tl.echo(0.5, b)
    assert tl.t.max_gap == Gap(start=EPOCH + 0.1, end=EPOCH + 0.5, ms=pytest.approx(400.0), open=False)


def test_unanswered_messages_are_lost_and_leave_an_open_gap() -> None:
    tl = Timeline()
    tl.steady(0.0, 0.2)
    for i in range(5):
        tl.send(0.2 + i * 0.01)
    assert tl.t.current_gap_ms(0.7) == pytest.approx(500.0)
    tl.t.finish(1.2, EPOCH + 1.2)
    r = tl.t.report()
    assert (r["sent"], r["echoed"], r["lost"]) == (25, 20, 5)
    assert r["gaps"] == [
        {"start": EPOCH + 0.2, "end": EPOCH + 1.2, "ms": pytest.approx(1000.0), "open": True}
    ]
    assert r["max_gap"]["open"] is True


def test_threshold_decides_which_gaps_are_listed() -> None:
    tl = Timeline(threshold_ms=100.0)
    at = 0.0
    for gap in (0.05, 0.2, 0.09, 0.15):
        tl.echo(at + gap, tl.send(at))
        at += 1.0
    assert [g.ms for g in tl.t.gaps] == [pytest.approx(200.0), pytest.approx(150.0)]


def test_duplicates_out_of_order_and_corrupt_echoes_are_counted_not_matched() -> None:
    tl = Timeline()
    a, b, c = tl.send(0.0), tl.send(0.01), tl.send(0.02)
    tl.echo(0.03, b)
    tl.echo(0.04, a)  # older than one already echoed
    tl.echo(0.05, a)  # again
    tl.t.on_line(b"seq=99 t=1.0", 0.06, EPOCH + 0.06)  # never sent
    tl.t.on_line(f"seq={c} t=1.0".encode(), 0.07, EPOCH + 0.07)  # our seq, someone else's content
    tl.t.on_line(b"not a canary line", 0.08, EPOCH + 0.08)
    tl.t.finish(0.1, EPOCH + 0.1)
    r = tl.t.report()
    assert (r["echoed"], r["out_of_order"], r["duplicates"], r["corrupt"], r["lost"]) == (2, 1, 1, 3, 1)


def test_a_reset_loses_what_was_in_flight_and_the_outage_runs_until_the_next_echo() -> None:
    tl = Timeline()
    tl.t.on_connected("198.19.0.5:40000", EPOCH)
    tl.steady(0.0, 0.3)
    tl.send(0.3)
    tl.send(0.31)
    tl.t.on_reset("ECONNRESET", 0.32, EPOCH + 0.32)
    assert tl.t.outstanding == {}
    tl.t.on_connected("198.19.0.5:40002", EPOCH + 0.4)
    tl.steady(0.4, 0.5)
    tl.t.finish(0.6, EPOCH + 0.6)
    r = tl.t.report()
    assert (r["resets"], r["lost"], r["same_connection"]) == (1, 2, False)
    assert r["resets_detail"] == [{"t": EPOCH + 0.32, "error": "ECONNRESET", "unanswered": 2}]
    assert r["max_gap"]["start"] == EPOCH + 0.3
    assert r["max_gap"]["ms"] == pytest.approx(101.0)
    assert [c["reason"] for c in r["connections"]] == ["ECONNRESET", "stop"]


def test_a_reset_with_nothing_in_flight_still_starts_a_gap() -> None:
    tl = Timeline()
    tl.t.on_connected("a", EPOCH)
    tl.steady(0.0, 0.1)
    tl.t.on_reset("EOF", 0.2, EPOCH + 0.2)
    tl.t.on_connected("b", EPOCH + 0.5)
    tl.steady(0.5, 0.6)
    assert tl.t.max_gap is not None
    assert (tl.t.max_gap.start, tl.t.max_gap.ms) == (EPOCH + 0.2, pytest.approx(301.0))


def test_one_connection_without_resets_is_the_same_connection() -> None:
    tl = Timeline()
    tl.t.on_connected("a", EPOCH)
    tl.steady(0.0, 0.1)
    tl.t.finish(0.2, EPOCH + 0.2)
    assert tl.t.report()["same_connection"] is True


# -- the report ------------------------------------------------------------------------

REQUIRED = {
    "sent",
    "echoed",
    "lost",
    "resets",
    "same_connection",
    "max_gap_ms",
    "gaps",
    "fresh_connection_ok",
}


def _report() -> dict:
    tl = Timeline()
    tl.t.on_connected("198.19.0.5:40000", EPOCH)
    tl.steady(0.0, 0.5)
    stalled = [tl.send(0.5 + i * 0.01) for i in range(10)]
    tl.echo(0.7, *stalled)
    tl.steady(0.7, 1.0)
    tl.t.finish(1.0, EPOCH + 1.0)
    return tl.t.report(
        target="203.0.113.10:7007", rate=100.0, gap_threshold_ms=50.0, started=EPOCH, ended=EPOCH + 1.0
    )


def test_report_is_json_with_the_documented_keys() -> None:
    doc = json.loads(json.dumps(_report()))
    assert doc.keys() >= REQUIRED
    assert doc["version"] == 1
    assert doc["fresh_connection_ok"] is None  # the harness fills it in
    for gap in doc["gaps"]:
        assert set(gap) == {"start", "end", "ms", "open"}


def test_canary_report_round_trips_and_keeps_the_required_keys() -> None:
    doc = json.loads(json.dumps(_report()))
    report = CanaryReport.from_json(doc)
    assert report.gaps == [Gap(start=EPOCH + 0.5, end=EPOCH + 0.7, ms=pytest.approx(200.0), open=False)]
    assert report.max_gap == report.gaps[0]
    report.fresh_connection_ok = True
    out = report.to_json()
    assert out.keys() >= REQUIRED
    assert out["fresh_connection_ok"] is True
    assert {k: out[k] for k in doc if k != "fresh_connection_ok"} == {
        k: v for k, v in doc.items() if k != "fresh_connection_ok"
    }
    assert CanaryReport.from_json(json.loads(json.dumps(out))) == report
    assert "lost 0" in report.summary()
    assert "fresh connection ok" in report.summary()


def test_a_report_of_another_version_is_refused() -> None:
    with pytest.raises(CanaryError, match="version 2"):
        CanaryReport.from_json({**_report(), "version": 2})


def test_merge_into_puts_the_gaps_on_the_migration_timeline() -> None:
    report = CanaryReport.from_json(_report())
    report.resets_detail = [{"t": EPOCH + 0.9, "error": "ECONNRESET", "unanswered": 0}]
    record = MigrationRecord("vm1", "203.0.113.10", "r1-n1", "r2-n1", started=EPOCH + 0.4)
    record.events.append({"t": EPOCH + 0.45, "source": "harness", "kind": "phase", "phase": "prepare"})
    merge_into(record, report)
    gap = record.first(kind="canary-gap")
    assert gap is not None
    assert gap["source"] == "canary"
    assert gap["t"] == EPOCH + 0.5
    assert gap["end"] == EPOCH + 0.7
    assert gap["gap_ms"] == pytest.approx(200.0)
    assert gap["longest"] is True
    assert record.first(kind="canary-reset", error="ECONNRESET") is not None
    events = record.to_json()["events"]
    assert [e["kind"] for e in events] == ["phase", "canary-gap", "canary-reset"]
    assert events[1]["ms"] == pytest.approx(100.0)


def test_merge_into_adds_the_longest_gap_even_under_the_threshold() -> None:
    tl = Timeline()
    tl.steady(0.0, 0.2)
    tl.t.finish(0.3, EPOCH + 0.3)
    report = CanaryReport.from_json(tl.t.report(target="x:1"))
    assert report.gaps == []
    record = merge_into(MigrationRecord("vm1", "x", "a", "b"), report)
    assert [e["kind"] for e in record.events] == ["canary-gap"]


def test_cli_refuses_a_rate_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--to", "203.0.113.10", "--port", "7007", "--rate", "0"])
    assert e.value.code == 2
    assert "--rate must be positive" in capsys.readouterr().err
