"""The TCP canary: one connection ext1 -> vm1 through a steady state and a live migration
across racks, resets, and the stand-alone client. Scenario tests: they run on every runtime
(`--runtime`). (The negative control that stalls a migration on purpose drives the netns
runtime's migration phase by phase: tests/netns/test_migration_phases.py.)"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from harness import checks
from harness.canary.controller import Canary, CanaryReport, merge_into
from harness.lab import Lab


def other_rack_node(lab: Lab, vm: str) -> str:
    """A node in another rack than the one `vm` runs in."""
    racks = {n.name: n.rack for _, n in lab.spec.all_nodes()}
    here = racks[lab.vm(vm).node]
    return next(node for node, rack in sorted(racks.items()) if rack != here)


def show(report: CanaryReport) -> None:
    print(f"\n{report.summary()}\n{json.dumps(report.to_json(), indent=1)}")


def test_steady_state_one_connection_no_loss(migration_lab: Lab) -> None:
    with migration_lab.canary("ext1", "vm1") as c:
        c.wait_sent(100)
    report = c.stop()
    show(report)
    assert report.sent >= 100
    assert (report.lost, report.resets, report.same_connection) == (0, 0, True)
    assert (report.duplicates, report.out_of_order, report.corrupt) == (0, 0, 0)
    assert report.max_gap_ms < 200, report.summary()
    assert report.fresh_connection_ok is True


@pytest.mark.migration
def test_live_migration_across_racks_keeps_the_connection(migration_lab: Lab) -> None:
    lab = migration_lab
    target = other_rack_node(lab, "vm1")
    with lab.canary("ext1", "vm1") as c:
        c.wait_sent(50)
        record = lab.migrate("vm1", target)
        assert record.status == "completed"
        after = c.progress["echoed"]
        c.wait_for(lambda p: p["echoed"] >= after + 50, timeout=10, what="echoes to flow after the migration")
    report = c.stop()  # stopped on leaving the block; this is its report
    show(report)
    assert (report.resets, report.lost, report.same_connection) == (0, 0, True), report.summary()
    assert report.max_gap_ms < 1000, report.summary()
    assert report.fresh_connection_ok is True, report.fresh_connection_error
    merge_into(record, report)
    gap = record.first(kind="canary-gap", source="canary", longest=True)
    assert gap is not None
    assert gap["gap_ms"] == report.max_gap_ms
    # Same clock as the record: the migration lies within the canary's run, and so does its gap.
    assert report.started is not None
    assert report.ended is not None
    assert report.started <= record.started <= (record.ended or 0) <= report.ended
    assert report.started <= gap["t"] <= gap["end"] <= report.ended
    assert any(e["kind"] == "canary-gap" for e in record.to_json()["events"])


_RESETTING_ECHO = r"""
import random, socket, struct, sys, threading, time
port, every, lifetime = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(8)
print("listening", flush=True)
end = time.monotonic() + lifetime  # it goes by itself: killing `docker exec` leaves it running

def serve(c):
    # Echo in ragged pieces (1-7 bytes, each its own segment); after `every` lines, swallow what
    # comes for 250 ms (messages in flight, never answered), then reset (RST).
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = 0
    while lines < every and (data := c.recv(4096)):
        while data:
            n = random.randint(1, 7)
            c.sendall(data[:n]); lines += data[:n].count(b"\n"); data = data[n:]
    deadline = time.monotonic() + 0.25
    while (left := deadline - time.monotonic()) > 0:
        c.settimeout(left)
        try:
            c.recv(4096)
        except TimeoutError:
            break
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()

while (left := end - time.monotonic()) > 0:
    srv.settimeout(left)
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        break
    conn.settimeout(None)
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
SERVER_LIFETIME = 60.0  # seconds; far beyond the test's 10 s wait for three resets


def test_resets_are_counted_and_the_client_reconnects(migration_lab: Lab) -> None:
    """A server that resets every connection after 40 lines (run on a router: every runtime
    has Python there, not in every guest); the canary counts each reset and reconnects."""
    lab, port, server_host = migration_lab, 7017, "tor2"
    server = lab.popen(
        server_host,
        [sys.executable, "-c", _RESETTING_ECHO, str(port), "40", str(SERVER_LIFETIME)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server_ip = checks.link_address(lab, server_host, "spine1")
    try:
        assert server.stdout is not None
        assert "listening" in server.stdout.readline(), server.stderr.read() if server.stderr else ""
        # No fresh-connection check: this server answers a one-shot client in pieces.
        with Canary(lab, "ext1", server_ip, port=port, gap_threshold_ms=10, fresh_check=False) as c:
            c.wait_for(lambda p: p["resets"] >= 3, timeout=10, what="three resets")
    finally:
        server.kill()
        server.wait(timeout=5)
    report = c.stop()  # stopped on leaving the block; this is its report
    show(report)
    assert report.resets >= 3
    assert report.same_connection is False
    assert len(report.connections) == report.resets + 1
    assert (report.duplicates, report.out_of_order, report.corrupt) == (0, 0, 0)  # ragged echoes reassembled
    # What was in flight at each reset is lost, nothing else.
    assert all(r["unanswered"] > 0 for r in report.resets_detail), report.resets_detail
    assert report.lost == sum(r["unanswered"] for r in report.resets_detail)
    # Each reset ends an outage (250 ms swallowed) that lasts until the first echo on the next
    # connection; the last echoes before it may reach the client late on a loaded machine, so the
    # bound keeps a wide margin below the swallowed time.
    assert len(report.gaps_over(100)) >= 3, report.gaps
    assert {r["error"] for r in report.resets_detail} <= {"ECONNRESET", "EPIPE", "EOF"}


def test_the_client_stands_alone_with_a_deadline_and_a_report_file(migration_lab: Lab) -> None:
    out = f"/tmp/kvlab-canary-{secrets.token_hex(4)}.json"  # in ext1's file system, read back through it
    argv = [sys.executable, "-m", "harness.canary.client", "--to", migration_lab.vm("vm1").ip,
            "--port", "7007", "--rate", "200", "--duration-max", "0.5", "--report-file", out]  # fmt: skip
    res = migration_lab.run("ext1", argv, timeout=10)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["event"] for e in events] == ["connected", "ready", "done"]
    report = migration_lab.run("ext1", ["cat", out])
    migration_lab.run("ext1", ["rm", "-f", out])
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["stop_reason"] == "duration"
    assert 80 <= doc["sent"] <= 101
    assert (doc["lost"], doc["resets"], doc["same_connection"]) == (0, 0, True)
