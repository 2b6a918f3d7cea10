"""The TCP canary: one long-lived TCP connection to a VM, sequence-numbered messages at a fixed
rate, and an account of what a user needs to judge a live migration.

The client runs inside a lab entity's namespace (an external host) as its own process:

    python -m harness.canary.client --to 203.0.113.10 --port 7007 --rate 100 \\
        [--gap-threshold-ms 50] [--drain 1.0] [--duration-max 600] \\
        [--progress-interval 0.1] [--control-stdin] [--report-file PATH|-]

It talks to any echo server (the mock guest, a QEMU guest): every message is one self-framed
line `seq=<N> t=<wall-clock send time>\\n`; echoes are matched to sequence numbers whatever
way the bytes arrive (split, coalesced), and duplicates, out-of-order and mangled echoes are
counted. A reset (ECONNRESET, EPIPE, EOF, ...) is counted and the client reconnects, so the
run goes on and the report says the connection did not stay the same.

It stops on SIGTERM/SIGINT, on a `stop` line (or EOF) on stdin with `--control-stdin`, or after
`--duration-max` seconds; then it waits up to `--drain` seconds for outstanding echoes and
writes one report. stdout is a stream of JSON lines: `{"event": "ready", ...}` after the first
echo, `{"event": "progress", ...}` every `--progress-interval` seconds (0: never), `{"event":
"connected", ...}`, `{"event": "connect-failed", ...}` (once per kind of error), `{"event":
"reset", ...}`, and at the end `{"event": "report", "report":
{...}}` (or, with `--report-file PATH`, the report in that file and `{"event": "done"}`).

A *gap* is a stretch of time during which at least one message was waiting for its echo and
no echo arrived (it starts when the oldest unanswered message was sent or at the last echo,
whichever is later, and ends at the next echo). Gaps are measured on a monotonic clock; their
`start`/`end` are wall-clock epoch seconds, like a MigrationRecord's. Gaps longer than the
threshold are listed; the longest one is always reported. A gap still open at the end (no echo
came back) is listed with `"open": true`. The client acknowledges every echo at once
(TCP_QUICKACK): an echo server with Nagle's algorithm on (the guests' `nc -e cat`) holds an echo
while its previous one is unacknowledged, and the client's delayed ACK would otherwise show up as
gaps no network caused (one send interval on every echo, 40 ms on the last one before a stop).

The report (`CanaryReport.to_json()`, schema version 1):

    {"version": 1, "target": "203.0.113.10:7007", "rate": 100.0, "gap_threshold_ms": 50.0,
     "started": 1.7e9, "ended": 1.7e9, "duration_s": 3.2, "stop_reason": "stdin",
     "sent": 320, "echoed": 320, "lost": 0, "resets": 0, "same_connection": true,
     "max_gap_ms": 84.1, "max_gap": {"start": ..., "end": ..., "ms": 84.1, "open": false},
     "gaps": [{"start": ..., "end": ..., "ms": 84.1, "open": false}],
     "out_of_order": 0, "duplicates": 0, "corrupt": 0, "drained": true,
     "rtt_ms": {"min": .., "avg": .., "p50": .., "p99": .., "max": ..},
     "connections": [{"local": "198.19.0.5:40112", "opened": ..., "closed": ..., "reason": "stop"}],
     "resets_detail": [{"t": ..., "error": "ECONNRESET", "unanswered": 3}],
     "fresh_connection_ok": true}

`lost` = `sent` - `echoed` after the drain. `fresh_connection_ok` is filled in by the harness
(`Canary.stop()`: a new connection's round trip from the same namespace); the client leaves it null.

Its parts: `client` (the program that runs inside the lab: the standard library only, since it
also runs with a container image's bare python3) and `controller` (the harness side: starts the
client through a runtime, reads its report, adds its gaps to a migration record):

    with lab.canary("ext1", "vm1") as c:            # waits for the first echo
        lab.migrate("vm1", "r2-n1")
    report = c.report                               # CanaryReport
    merge_into(record, report)                      # "canary-gap" events in the MigrationRecord
"""
