"""Runtimes bring a resolved lab to life behind one interface (`base.Runtime`): `netns` (the
embedded runtime, a package of its own) and `containerlab` (the real stack). Imports nothing at
package import: the netns runtime's small processes (node agent, mock guest) start fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.runtime.base import Runtime

RUNTIMES = ("netns", "containerlab")


def get_runtime(name: str) -> type[Runtime]:
    if name == "netns":
        from harness.runtime.netns.runtime import NetnsRuntime

        return NetnsRuntime
    if name == "containerlab":
        from harness.runtime.containerlab.runtime import ContainerlabRuntime

        return ContainerlabRuntime
    raise ValueError(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")
