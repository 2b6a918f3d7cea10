"""The node agent's IPv6 trigger, with the netns runtime's migration stopped between its phases:
on a dual-stack mock VM a GARP activates only its IPv4 state machine, the unsolicited
neighbour advertisement for its IPv6 address the IPv6 one (RARP, QEMU's, both; see
tests/integration/test_dual_stack.py for the QEMU guest)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from labfiles import lab_data

from harness import checks, netlink
from harness.lab import Lab
from harness.runtime.netns import mockguest
from harness.wait import eventually

VM4, VM6 = "203.0.113.10/32", "2001:db8:203:113::10/128"

pytestmark = [
    pytest.mark.migration,
    pytest.mark.netns_only("stops the netns runtime's own migration between its phases and reads its agents"),
]


@pytest.fixture(scope="module")
def dual(own_lab: Callable[[dict[str, Any]], Lab]) -> Lab:
    data = lab_data("dual-stack")
    data["name"] = "ds-agent"
    for vm in data["vms"]:
        vm["backend"] = "mock"
    return own_lab(data)


def _states(lab: Lab, node: str) -> tuple[str | None, str | None]:
    w = lab.runtime.agent(node).call("status")["workloads"].get("vm1", {})  # type: ignore[attr-defined]
    return w.get("state"), w.get("state6")


def test_garp_activates_ipv4_only_and_the_na_ipv6(dual: Lab) -> None:
    lab, source, target = dual, "r1-n1", "r2-n1"
    rt: Any = lab.runtime
    w = lab.topo.workload("vm1")
    m = rt.migration("vm1", target)
    m.prepare()
    assert _states(lab, target) == ("Target", "Target")
    checks.no_kernel_route(lab, target, VM4)
    checks.no_kernel_route(lab, target, VM6)
    # the guest resumes behind the target and sends only its GARP
    rt.activate_guest("vm1", m.source_if, m.target_if, w.ip, w.mac)
    eventually(
        lambda: _states(lab, target) == ("Live", "Target"), timeout=5, what="IPv4 Live, IPv6 still Target"
    )
    checks.kernel_route(lab, target, VM4, metric=512)
    checks.no_kernel_route(lab, target, VM6)
    # then its unsolicited neighbour advertisement
    with netlink.inside(rt.ns("vm1")):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind((m.target_if, 0))
        sock.send(mockguest.na_frame(w.mac, str(w.ip6)))
    eventually(lambda: _states(lab, target) == ("Live", "Live"), timeout=5, what="IPv6 Live on the NA")
    checks.kernel_route(lab, target, VM6, metric=512, dev=w.host_ifname)
    events = rt.agent(target).call("status")["events"]
    seen = [e["what"] for e in events if e["kind"] == "seen" and e["vm"] == "vm1"]
    assert seen[-2:] == ["GARP", "NA"]
    m.activate()  # the rest of the cutover (the guest's IPv6 side plugged), then completion
    record = m.complete()
    assert record.status == "completed"
    assert lab.vm_location("vm1")["node"] == target
    # the source's own /128 is gone: it follows the target's, elevated, via its ToR (importV6)
    tor1 = str(lab.topo.tor_address6["tor1"].ip)
    eventually(
        lambda: checks.kernel_route(lab, source, VM6, metric=512, gateway=tor1),
        timeout=5,
        what="the source to route the /128 via tor1 at 512",
    )
