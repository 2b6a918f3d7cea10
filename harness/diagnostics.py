"""A diagnostics bundle of a lab: what an engineer needs to see why a test failed.

For every BIRD: its config, its log, `show protocols all` and `show route all` (both the
raw BIRD reply and the parsed JSON); for every namespace: kernel routes as JSON; plus the
lab's status document; plus what only the runtime can collect (`Runtime.diagnostics`, under
`runtime/`: node agents and QEMU consoles on netns, cluster objects and containers on
containerlab). Collection never raises: a part that cannot be
collected is recorded in `errors.txt`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.safefile import fresh_dir, read_tail

COPY_LIMIT = 64 * 1024 * 1024  # bytes of a BIRD config or log copied into a bundle (a log: its end)

if TYPE_CHECKING:
    from harness.lab import Lab


def _reply_text(reply: list[tuple[int, str]]) -> str:
    return "\n".join(f"{code:04d} {text}" for code, text in reply) + "\n"


def collect(lab: Lab, out_dir: Path) -> Path:
    """Write the bundle under `out_dir/<lab>-<timestamp>/` (a directory made anew: `-2`, `-3`...
    when that exists) and return that directory."""
    bundle = fresh_dir(out_dir, f"{lab.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    errors: list[str] = []

    def attempt(what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as e:  # diagnostics must not hide the original failure
            errors.append(f"{what}: {type(e).__name__}: {e}")

    def dump(path: Path, data: Any) -> None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    attempt("status", lambda: dump(bundle / "status.json", lab.status()))
    for speaker in lab.speakers():  # BIRD's files as bird.*, bird6's (dual stack) as bird6.*
        d = bundle / speaker.name
        d.mkdir(exist_ok=True)
        six = "6" if speaker.family == 6 else ""
        who = f"{speaker.name}{' (bird6)' if six else ''}"
        files = lab.runtime.bird_files(speaker.name, speaker.family)
        for key in ("config", "log"):
            src = files.get(key)
            attempt(
                f"{who} {key}",
                lambda src=src, key=key, d=d, x=six: (d / f"bird{x}.{key}").write_bytes(
                    read_tail(src, COPY_LIMIT, what="files copied for diagnostics")
                ),
            )
        attempt(
            f"{who} protocols",
            lambda s=speaker, d=d, x=six: (d / f"show-protocols-all{x}.txt").write_text(
                _reply_text(s.birdc("show protocols all"))
            ),
        )
        attempt(
            f"{who} routes",
            lambda s=speaker, d=d, x=six: (d / f"show-route-all{x}.txt").write_text(
                _reply_text(s.birdc("show route all"))
            ),
        )
        attempt(
            f"{who} routes json",
            lambda s=speaker, d=d, x=six: dump(d / f"routes{x}.json", [r.to_json() for r in s.routes()]),
        )
    for entity in lab.topo.entities:
        d = bundle / entity
        d.mkdir(exist_ok=True)
        attempt(
            f"{entity} kernel routes",
            lambda e=entity, d=d: dump(
                d / "kernel-routes.json", [r.to_json() for r in lab.runtime.kernel_routes(e)]
            ),
        )
        if lab.spec.dual_stack:
            attempt(
                f"{entity} IPv6 kernel routes",
                lambda e=entity, d=d: dump(
                    d / "kernel-routes6.json", [r.to_json() for r in lab.runtime.kernel_routes(e, family=6)]
                ),
            )
    attempt("runtime diagnostics", lambda: errors.extend(lab.runtime.diagnostics(bundle / "runtime")))
    if errors:
        (bundle / "errors.txt").write_text("\n".join(errors) + "\n")
    return bundle
