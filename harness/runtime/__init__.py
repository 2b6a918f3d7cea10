"""Runtimes bring a resolved lab to life. One small interface (`base.Runtime`), one module each."""

from __future__ import annotations

from harness.runtime.base import Runtime

RUNTIMES = ("netns", "containerlab")


def get_runtime(name: str) -> type[Runtime]:
    if name == "netns":
        from harness.runtime.netns import NetnsRuntime

        return NetnsRuntime
    if name == "containerlab":
        from harness.runtime.containerlab import ContainerlabRuntime

        return ContainerlabRuntime
    raise ValueError(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")
