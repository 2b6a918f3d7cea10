"""The mock VM's "guest": what runs inside a mock VM namespace (Calico CI's MockVirt idea).

    python -m harness.runtime.netns.mockguest serve --port 7007      # TCP echo server, a thread a client
    python -m harness.runtime.netns.mockguest announce --ifname eth1 --ip 203.0.113.10 --mac 52:54:..
                                                                     #   [--rarp] [--ip6 2001:db8:..]

`announce` sends what a guest (GARP; for its IPv6 address an unsolicited neighbour
advertisement) or QEMU after a migration (RARP) sends, so the node agent on the target sees
the VM activate. The echo server listens on both families.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import struct
import sys

ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES_MAC = bytes.fromhex("333300000001")  # ff02::1 on Ethernet
ALL_NODES = socket.inet_pton(socket.AF_INET6, "ff02::1")
ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2


def garp_frame(mac: str, ip: str) -> bytes:
    """A gratuitous ARP request: sender and target IP are the VM's own."""
    hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, addr, b"\x00" * 6, addr)
    return BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp


def rarp_frame(mac: str) -> bytes:
    """A reverse-ARP request as QEMU announces a migrated NIC (opcode 3, addresses zero)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    rarp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 3, hw, b"\x00" * 4, hw, b"\x00" * 4)
    return BROADCAST + hw + struct.pack("!H", ETH_P_RARP) + rarp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: str, ip6: str) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes: the IPv6 twin of
    a GARP, which a guest sends for its address after it resumes (Override set, Solicited not)."""
    hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_pton(socket.AF_INET6, ip6)
    option = struct.pack("!BB6s", ND_OPT_TARGET_LLADDR, 1, hw)
    body = struct.pack("!I16s", NA_FLAG_OVERRIDE, addr) + option
    length = 4 + len(body)
    pseudo = addr + ALL_NODES + struct.pack("!I3xB", length, ICMPV6)
    csum = _checksum(pseudo + struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, 0) + body)
    icmp = struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, csum) + body
    ip = struct.pack("!IHBB16s16s", 6 << 28, length, ICMPV6, 255, addr, ALL_NODES)
    return ALL_NODES_MAC + hw + struct.pack("!H", ETH_P_IPV6) + ip + icmp


def announce(
    ifname: str, ip: str, mac: str, *, rarp: bool = False, count: int = 1, ip6: str | None = None
) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        frames = [rarp_frame(mac) if rarp else garp_frame(mac, ip)]
        if ip6 is not None and not rarp:
            frames.append(na_frame(mac, ip6))
        for _ in range(count):
            for frame in frames:
                s.send(frame.ljust(60, b"\x00"))


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too (mapped)
        super().server_bind()


class _Server4(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(port: int) -> None:
    try:
        srv: socketserver.ThreadingTCPServer = _Server(("::", port), _Echo)
    except OSError:  # a kernel without IPv6: IPv4 only
        srv = _Server4(("0.0.0.0", port), _Echo)
    with srv:
        print(f"mockguest listening on {port}", flush=True)
        srv.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    a = sub.add_parser("announce")
    a.add_argument("--ifname", required=True)
    a.add_argument("--ip", required=True)
    a.add_argument("--mac", required=True)
    a.add_argument("--rarp", action="store_true")
    a.add_argument("--ip6", default=None)
    a.add_argument("--count", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port)
    else:
        announce(args.ifname, args.ip, args.mac, rarp=args.rarp, count=args.count, ip6=args.ip6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
