#!/usr/bin/env python3
"""Capture real BIRD 1.6 control-socket replies into tests/data/birdc/.

Builds a throwaway lab of four network namespaces (``kvcap-<tag>-r1..r4``) joined by veth
pairs, runs one BIRD per namespace and records the raw socket replies of r1 (every line
exactly as received, reply codes included) for the parser tests in tests/unit/test_birdc.py.

Topology (links from 198.18.0.0/15, prefixes from 203.0.113.0/24 and 198.51.100.0/24)::

    r4 (AS65004) --198.18.3.0/24-- r2 (AS65002) --198.18.1.0/24-- r1 (AS65001)
                                                                  |
                                   r3 (AS65003) --198.18.2.0/24---+
                                   "ghost" 198.18.1.99 (AS65099, does not exist)

Nothing is routed into the root namespace; everything is removed in a ``finally`` (also
on Ctrl-C / SIGTERM).  Needs root and ``bird`` (BIRD 1.6).  Usage::

    sudo .venv/bin/python scripts/capture_birdc.py [--out tests/data/birdc] [--keep-tmp]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.birdc import BirdClient, BirdError, parse_reply_lines  # noqa: E402

BIRD = shutil.which("bird") or "/usr/sbin/bird"
IP = shutil.which("ip") or "/usr/sbin/ip"
NS_PREFIX = "kvcap-"

ROUTERS = {
    # name: (router id, AS)
    "r1": ("198.18.1.1", 65001),
    "r2": ("198.18.1.2", 65002),
    "r3": ("198.18.2.2", 65003),
    "r4": ("198.18.3.4", 65004),
}
# (router a, if a, addr a, router b, if b, addr b, prefix length)
LINKS = [
    ("r1", "kc-r1r2", "198.18.1.1", "r2", "kc-r2r1", "198.18.1.2", 24),
    ("r1", "kc-r1r3", "198.18.2.1", "r3", "kc-r3r1", "198.18.2.2", 24),
    ("r2", "kc-r2r4", "198.18.3.2", "r4", "kc-r4r2", "198.18.3.4", 24),
]

COMMON = """\
router id {rid};
log "{log}" all;
protocol device {{ scan time 10; }}
"""

CONFIGS = {
    "r1": """\
protocol direct direct1 {{ interface "kc-*"; }}
protocol kernel kernel1 {{
  learn;            # import alien kernel routes (added with `ip route ... metric 512`)
  scan time 5;
  merge paths on;   # ECMP to the kernel
  import all;
  export all;
}}
protocol static static1 {{
  route 203.0.113.64/26 multipath via 198.18.1.2 weight 1 via 198.18.2.2 weight 2;
  route 198.51.100.0/25 unreachable;
  route 198.51.100.128/26 blackhole;
  route 198.51.100.192/27 prohibit;
}}
filter from_r2 {{
  if net = 203.0.113.0/26 then bgp_local_pref = 150;
  accept;
}}
filter from_r3 {{
  bgp_local_pref = 80;
  accept;
}}
protocol bgp r2_peer {{
  description "r2 (AS65002) via kc-r1r2";
  local 198.18.1.1 as 65001;
  neighbor 198.18.1.2 as 65002;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import filter from_r2;
  export none;
}}
protocol bgp r3_peer {{
  local 198.18.2.1 as 65001;
  neighbor 198.18.2.2 as 65003;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import filter from_r3;
  export none;
}}
protocol bgp ghost {{
  description "peer that does not exist";
  local 198.18.1.1 as 65001;
  neighbor 198.18.1.99 as 65099;
  connect delay time 1;
  connect retry time 2;
  import all;
  export none;
}}
""",
    "r2": """\
protocol static static1 {{ route 203.0.113.128/25 blackhole; }}
protocol bgp r1 {{
  local 198.18.1.2 as 65002;
  neighbor 198.18.1.1 as 65001;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import none;
  export filter {{ bgp_med = 50; accept; }};
}}
protocol bgp r4 {{
  local 198.18.3.2 as 65002;
  neighbor 198.18.3.4 as 65004;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import all;
  export none;
}}
""",
    "r3": """\
protocol static static1 {{ route 203.0.113.128/25 blackhole; }}
protocol bgp r1 {{
  local 198.18.2.2 as 65003;
  neighbor 198.18.2.1 as 65001;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import none;
  export filter {{ bgp_path.prepend(65003); bgp_origin = ORIGIN_INCOMPLETE; accept; }};
}}
""",
    "r4": """\
protocol static static1 {{ route 203.0.113.0/26 blackhole; }}
protocol bgp r2 {{
  local 198.18.3.4 as 65004;
  neighbor 198.18.3.2 as 65002;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import none;
  export filter {{
    bgp_path.prepend(64512);
    bgp_community.add((65000,100));
    bgp_community.add((65000,200));
    bgp_large_community.add((65000,1,2));
    accept;
  }};
}}
""",
}

# r1 reconfiguration variants
R1_EXTRA_STATIC = """\
protocol static static2 {{ route 198.51.100.224/28 blackhole; }}
"""
R1_BAD = "router id 198.18.1.1;\nprotocol static broken {\n  route 198.51.100.0/24 frobnicate;\n}\n"

KERNEL_ROUTE = "198.51.100.240/28"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def wait_for(what: str, cond: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    """Poll ``cond`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
            last_exc = None
        except (BirdError, OSError) as e:
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f" ({last_exc})" if last_exc else "")
    )


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tag = secrets.token_hex(3)
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def ns(self, router: str) -> str:
        return f"{NS_PREFIX}{self.tag}-{router}"

    def sock(self, router: str) -> Path:
        return self.tmp / f"{router}.ctl"

    def conf(self, router: str) -> Path:
        return self.tmp / f"{router}.conf"

    def config_text(self, router: str, extra: str = "") -> str:
        rid, _asn = ROUTERS[router]
        body = COMMON + CONFIGS[router] + extra
        return body.format(rid=rid, log=self.tmp / f"{router}.log")

    # -- build ----------------------------------------------------------------
    def build(self) -> None:
        for r in ROUTERS:
            name = self.ns(r)
            run(IP, "netns", "add", name)
            self.namespaces.append(name)
            run(IP, "-n", name, "link", "set", "lo", "up")
        for ra, ia, aa, rb, ib, ab, plen in LINKS:
            # both ends are created inside the lab namespaces, never in the root namespace
            run(IP, "-n", self.ns(ra), "link", "add", "name", ia, "type", "veth",
                "peer", "name", ib, "netns", self.ns(rb))  # fmt: skip
            run(IP, "-n", self.ns(ra), "addr", "add", f"{aa}/{plen}", "dev", ia)
            run(IP, "-n", self.ns(rb), "addr", "add", f"{ab}/{plen}", "dev", ib)
            run(IP, "-n", self.ns(ra), "link", "set", ia, "up")
            run(IP, "-n", self.ns(rb), "link", "set", ib, "up")
        # an "alien" route for r1's kernel protocol to learn (proto boot, metric 512)
        run(IP, "-n", self.ns("r1"), "route", "add", KERNEL_ROUTE, "via", "198.18.1.2", "metric", "512")

    def start(self) -> None:
        for r in ROUTERS:
            self.conf(r).write_text(self.config_text(r))
            check = run(BIRD, "-p", "-c", str(self.conf(r)), check=False)
            if check.returncode != 0:
                raise RuntimeError(f"bird -p rejected {r}.conf: {check.stderr.strip()}")
        for r in ROUTERS:
            cmd = [IP, "netns", "exec", self.ns(r), BIRD, "-f", "-c", str(self.conf(r)),
                   "-s", str(self.sock(r)), "-P", str(self.tmp / f"{r}.pid")]  # fmt: skip
            self.procs[r] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        for r in ROUTERS:
            wait_for(f"{r} control socket", lambda r=r: self._alive(r) and self.sock(r).exists(), 10)

    def _alive(self, router: str) -> bool:
        p = self.procs[router]
        if p.poll() is not None:
            raise RuntimeError(f"bird for {router} exited with {p.returncode}; see {self.tmp}/{router}.log")
        return True

    # -- teardown ---------------------------------------------------------------
    def teardown(self) -> None:
        for r, p in self.procs.items():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    print(f"bird {r} (pid {p.pid}) ignored SIGTERM, killing", file=sys.stderr)
                    p.kill()
                    p.wait(timeout=5)
        for name in self.namespaces:
            res = run(IP, "netns", "del", name, check=False)
            if res.returncode != 0:
                print(f"warning: could not delete netns {name}: {res.stderr.strip()}", file=sys.stderr)


def write_transcript(
    out: Path, name: str, command: str, lines: list[str], note: str, version: str | None
) -> None:
    parse_reply_lines(lines)  # sanity: every line must be well framed
    header = [
        f"# command: {command}",
        f"# bird: {version}",
        f"# note: {note}",
        "# captured by scripts/capture_birdc.py; lines below are the raw socket reply",
    ]
    (out / name).write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"  {name}: {len(lines)} lines")


def capture(lab: Lab, out: Path) -> None:
    r1 = BirdClient(lab.sock("r1"), timeout=5)
    r1.connect()

    def ready() -> bool:
        protos = {p.name: p for p in r1.protocols()}
        if not (protos["r2_peer"].established() and protos["r3_peer"].established()):
            return False
        if not protos["ghost"].last_error:
            return False
        routes = r1.routes()
        prefixes = [r.prefix for r in routes]
        return (
            "203.0.113.0/26" in prefixes
            and prefixes.count("203.0.113.128/25") == 2
            and KERNEL_ROUTE in prefixes
        )

    def r2_ready() -> bool:
        with BirdClient(lab.sock("r2")) as c:
            return c.protocol("r4").established()

    wait_for("r2<->r4 session", r2_ready, 30)
    wait_for("r1 sessions, routes and ghost peer error", ready, 45)

    def cap(name: str, command: str, note: str, client: BirdClient = r1) -> list[str]:
        lines = client.raw(command)
        write_transcript(out, name, command, lines, note, client.version)
        return lines

    greeting = BirdClient(lab.sock("r1"))
    greeting.connect()
    write_transcript(
        out,
        "greeting.txt",
        "(connect)",
        [f"0001 {greeting.greeting}"],
        "greeting on connect",
        greeting.version,
    )
    greeting.close()

    cap(
        "show_protocols_all.txt",
        "show protocols all",
        "r1: BGP r2_peer/r3_peer Established, ghost not established, device/direct/kernel/static",
    )
    cap("show_protocols.txt", "show protocols", "r1: short protocol list (no details)")
    cap("show_protocols_all_ghost.txt", "show protocols all ghost", "r1: single non-established BGP peer")
    cap("show_protocols_all_nomatch.txt", 'show protocols all "nosuch*"', "pattern matching nothing")
    cap(
        "show_route_all.txt",
        "show route all",
        "r1: BGP (as_path, communities, large community, med, local_pref), two alternatives "
        "for 203.0.113.128/25, multipath static, unreachable/blackhole/prohibit, kernel-learned, direct",
    )
    cap(
        "show_route_prefix_alternatives.txt",
        "show route 203.0.113.128/25 all",
        "r1: exact prefix with two BGP alternatives (r2 best, r3 not)",
    )
    cap(
        "show_route_for_multipath.txt",
        "show route for 203.0.113.70 all",
        "r1: longest match lookup hitting the static multipath route",
    )
    cap("show_route_primary_all.txt", "show route primary all", "r1: best routes only")
    cap("show_route_protocol_kernel.txt", "show route protocol kernel1 all", "r1: kernel-learned route")
    cap(
        "show_route_protocol_ghost.txt",
        "show route protocol ghost all",
        "r1: protocol with no routes: empty table answer",
    )
    cap("show_route_empty.txt", "show route 198.51.100.77/32 all", "r1: exact prefix not in table")
    with BirdClient(lab.sock("r2")) as r2:
        cap("r2_show_route_all.txt", "show route all", "r2: eBGP from r4, static origin", client=r2)
    cap("error_unknown_command.txt", "frobnicate", "unknown command")
    cap("error_syntax.txt", "show route 203.0.113.0/33 all", "bad prefix length")
    cap("error_not_a_protocol.txt", "show protocols all nosuch", "symbol that is not a protocol")

    # reconfiguration: same file, a changed file, a broken file
    cap("configure_ok.txt", "configure", "r1: reconfigure with the unchanged file")
    changed = lab.tmp / "r1-changed.conf"
    changed.write_text(lab.config_text("r1", R1_EXTRA_STATIC))
    cap("configure_changed.txt", f'configure "{changed}"', "r1: new file adding a static protocol")
    bad = lab.tmp / "r1-bad.conf"
    bad.write_text(R1_BAD)
    cap("configure_syntax_error.txt", f'configure "{bad}"', "r1: file with a syntax error (8002)")
    missing = lab.tmp / "does-not-exist.conf"
    cap("configure_missing_file.txt", f'configure "{missing}"', "r1: file that does not exist")
    # changing a BGP neighbour restarts the protocol -> "Reconfiguration in progress"?
    restart = lab.tmp / "r1-restart.conf"
    restart.write_text(lab.config_text("r1", R1_EXTRA_STATIC).replace("as 65099;", "as 65098;"))
    cap("configure_restart.txt", f'configure "{restart}"', "r1: changed BGP neighbor AS (protocol restart)")
    r1.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "birdc")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs for debugging")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="kvcap-"))
    os.chmod(tmp, 0o755)
    lab = Lab(tmp)
    args.out.mkdir(parents=True, exist_ok=True)
    ok = interrupted = False
    try:
        print(f"lab tag {lab.tag}, tmp {tmp}")
        lab.build()
        lab.start()
        capture(lab, args.out)
        ok = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        lab.teardown()  # also runs on Ctrl-C / SIGTERM and on errors
        failed = not ok and not interrupted
        if failed:
            for log in sorted(tmp.glob("*.log")):
                print(f"--- {log.name} (tail)", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        if args.keep_tmp or failed:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        print("interrupted; lab torn down", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
