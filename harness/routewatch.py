"""A probe for migrations: watch routers' BIRD (and their kernels' FIB) for one prefix in a
thread and record every change of what they hold, on any runtime (BIRD's control socket and the
entity's network namespace are what `Runtime.bird_socket` and `Runtime.netns_path` give)."""

from __future__ import annotations

import threading
import time
from typing import Any

from pyroute2 import IPRoute

from harness import netlink
from harness.birdc import BirdClient, BirdError
from harness.kernel import address_family, routes_from
from harness.speakers import Probed
from harness.wait import eventually


class RouteWatcher:
    """Polls routers' BIRD for one prefix in a thread and records every change of what they hold."""

    def __init__(self, runtime: Probed, routers: list[str], prefix: str, interval: float = 0.005):
        self.runtime, self.routers, self.prefix, self.interval = runtime, routers, prefix, interval
        self.family = 6 if ":" in prefix else 4  # an IPv6 prefix is bird6's and the kernel's IPv6 table
        self.events: list[dict[str, Any]] = []
        self.cycles = 0
        self._sockets: dict[str, IPRoute] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvlab-route-watcher", daemon=True)

    def __enter__(self) -> RouteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _fib(self, router: str) -> str | None:
        """The gateway the router's kernel uses for exactly `prefix` (lowest metric), if any."""
        sock = self._sockets.get(router)
        if sock is None:
            path = self.runtime.netns_path(router)
            if path is None:
                return None
            with netlink.inside(path):
                sock = self._sockets[router] = IPRoute()
        routes = routes_from(sock, self.prefix, family=address_family(self.prefix), devices=False)
        return min(routes, key=lambda r: r.metric).gateway if routes else None

    def sync(self, cycles: int = 2, timeout: float = 5.0) -> None:
        """Wait until the watcher has polled every router `cycles` more times."""
        goal = self.cycles + cycles
        eventually(
            lambda: self.cycles >= goal or not self._thread.is_alive(),
            timeout=timeout,
            interval=0.01,
            what="the route watcher to poll the routers again",
        )

    def _run(self) -> None:
        clients = {r: BirdClient(self.runtime.bird_socket(r, self.family)) for r in self.routers}
        last: dict[str, Any] = {}
        try:
            while not self._stop.is_set():
                for router, client in clients.items():
                    try:
                        routes = client.routes(self.prefix)
                    except BirdError:
                        continue
                    best = next((r for r in routes if r.best), None)
                    view = {
                        "paths": len(routes),
                        "best_via": best.via if best else None,
                        "best_protocol": best.protocol if best else None,
                        "communities": best.community_strings() if best else [],
                        "ecmp": bool(best and len(best.next_hops) > 1),
                        "fib_via": self._fib(router),  # what the router's kernel forwards with
                    }
                    if last.get(router) != view:
                        last[router] = view
                        self.events.append(
                            {
                                "t": time.time(),
                                "source": f"bird:{router}",
                                "kind": "route",
                                "router": router,
                                "prefix": self.prefix,
                                "family": self.family,
                                **view,
                            }
                        )
                self.cycles += 1
                self._stop.wait(self.interval)
        finally:
            for c in clients.values():
                c.close()
            for sock in self._sockets.values():
                sock.close()
