"""One process for all node agents of a lab: each node's agent (harness.runtime.netns.agent,
unchanged) runs in a thread of its own that entered the node's network namespace, so its
netlink socket, its captures and its routes are the node's, as in a process of its own.

    python -m harness.runtime.netns.agenthost --config <run dir>/agents.json [--after-stdin]

The config lists `{"node", "netns", "config"}` per node (`config`: the node's agent.json, the
file a per-node agent process reads). Each node keeps its control socket and its log
(`<node dir>/agent.log`: what ended its thread, with the traceback); a node's thread that ends
ends the host (exit 1), as a crashed agent process would leave its node without an agent. A
process per node costs about 30 MB and a Python start each; a thread costs a stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from harness import netlink
from harness.runtime.netns.agent import serve
from harness.safefile import FileRefused, open_output, read_regular

CONFIG_LIMIT = 16 * 1024 * 1024  # bytes of a config read from the run directory


def _run_node(node: dict[str, Any], failed: threading.Event) -> None:
    """Enter the node's namespace for good (this thread only), then serve its agent."""
    config = json.loads(
        read_regular(node["config"], CONFIG_LIMIT, what="agent configs", follow_symlinks=False)
    )
    log = Path(node["config"]).with_name("agent.log")
    try:
        netlink.enter(node["netns"])
        serve(config, main_thread=False)
    except BaseException:
        with contextlib.suppress(FileRefused), open_output(log, append=True) as fh:
            fh.write(f"node agent of {node['node']} ended:\n{traceback.format_exc()}".encode())
    failed.set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kvlab node agents of a lab, one thread per node")
    ap.add_argument("--config", required=True)
    ap.add_argument(
        "--after-stdin",
        action="store_true",
        help="read the config once standard input closes (the builder starts this process first, "
        "so its start overlaps the lab's; it closes the pipe once the config is written)",
    )
    args = ap.parse_args(argv)
    if args.after_stdin:
        sys.stdin.buffer.read()  # EOF: the config is written (or the builder is gone: no config)
    nodes = json.loads(read_regular(args.config, CONFIG_LIMIT, what="agent configs", follow_symlinks=False))[
        "nodes"
    ]
    failed = threading.Event()

    def _stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for node in nodes:
        threading.Thread(
            target=_run_node, args=(node, failed), name=f"agent-{node['node']}", daemon=True
        ).start()
    while not failed.wait(3600):
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
