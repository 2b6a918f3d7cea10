"""The mock VM's "guest": what runs inside a mock VM namespace (Calico CI's MockVirt idea).

    python -m harness.runtime.netns.mockguest serve --port 7007      # TCP echo server, a thread a client
    python -m harness.runtime.netns.mockguest announce --ifname eth1 --ip 203.0.113.10 --mac 52:54:..
                                                                     #   [--rarp]

`announce` sends what a guest (GARP) or QEMU after a migration (RARP) sends, so the node
agent on the target sees the VM activate.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import struct
import sys

ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
BROADCAST = b"\xff" * 6


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


def announce(ifname: str, ip: str, mac: str, *, rarp: bool = False, count: int = 1) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        frame = rarp_frame(mac) if rarp else garp_frame(mac, ip)
        for _ in range(count):
            s.send(frame.ljust(60, b"\x00"))


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(port: int) -> None:
    with _Server(("0.0.0.0", port), _Echo) as srv:
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
    a.add_argument("--count", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port)
    else:
        announce(args.ifname, args.ip, args.mac, rarp=args.rarp, count=args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
