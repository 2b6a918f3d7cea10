"""What the nested-cluster scenario modules (IPv4: integration/test_nested_clusters.py, IPv6:
integration/test_nested_dual_stack.py) ask a lab the same way, through the Lab interface only:
a speaker's best route and session states, a session's errors while it is down, an interface's
addresses, a canary's clean run, and another pool for a changed copy of a lab."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from labfiles import cluster_of

from harness.birdc import BirdError, Route
from harness.lab import Lab


def best(lab: Lab, speaker: str, prefix: str, family: int = 4) -> Route:
    """`speaker`'s best route (its BIRD of `family`) for exactly `prefix`; fails the test if none."""
    route = lab.speaker(speaker, family).best_route(prefix)
    assert route is not None, f"{speaker} (IPv{family}) has no route for {prefix}"
    return route


def sessions(lab: Lab, speaker: str, family: int = 4) -> dict[str, str]:
    """BGP session name -> state of `speaker`'s BIRD of `family`."""
    return {s.name: s.state for s in lab.speaker(speaker, family).sessions()}


@contextlib.contextmanager
def session_errors(lab: Lab, node: str, family: int = 4, interval: float = 0.1) -> Iterator[list[str]]:
    """Every distinct `Last error` BIRD (of `family`) shows for `node`'s BGP sessions while they
    are not Established, watched from another thread until the block ends (BIRD clears it once a
    session is back): 'Received: ...' for a NOTIFICATION, 'Socket: ...' for a reset."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(BirdError, OSError):
                for s in lab.speaker(node, family).sessions():
                    if s.state != "Established" and s.last_error and s.last_error not in seen:
                        seen.append(s.last_error)
            done.wait(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join(timeout=30)


def addresses(lab: Lab, entity: str, dev: str, family: int = 4) -> list[str]:
    """The addresses of `family` (`addr/len`) on `dev` inside a lab entity."""
    res = lab.run(entity, ["ip", "-j", f"-{family}", "addr", "show", "dev", dev])
    assert res.returncode == 0, res.stderr
    links = json.loads(res.stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]]


def assert_canary_clean(lab: Lab, source: str, target: str, family: int = 4) -> None:
    """A TCP canary from `source` to `target` (over `family`) sends, every message is echoed,
    on one connection."""
    with lab.canary(source, target, family=family) as probe:
        probe.wait_sent(5)
        report = probe.stop()
    assert report.sent > 0, report.summary()
    assert report.echoed == report.sent, report.summary()
    assert report.same_connection, report.summary()


def add_pool(data: dict[str, Any], cluster: str, cidr: str) -> None:
    """Lab data (resources inline) with another pool for `cluster`: in `pools` (IPv4, /26 blocks)
    or `pools6` (IPv6, /120 blocks), and its IPPool resource '<cluster>-extra[-v6]'."""
    c = cluster_of(data, cluster)
    if ":" in cidr:
        c["pools6"].append(cidr)
        spec = {"cidr": cidr, "blockSize": 120, "vxlanMode": "Never"}
    else:
        c["pools"].append(cidr)
        spec = {"cidr": cidr, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"}
    name = f"{cluster}-extra" + ("-v6" if ":" in cidr else "")
    c["resources"].append(
        {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
    )
