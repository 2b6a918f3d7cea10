"""Felix settings the netns node agent honours, read from a cluster's FelixConfiguration."""

from __future__ import annotations

from typing import Any

from harness.calico import resources as cr
from harness.calico.livemigration import Priorities


def priorities(resources: list[Any], family: int = 4) -> Priorities:
    """Route priorities of a family (ipv4*/ipv6*RoutePriority) and the convergence time from the
    `default` FelixConfiguration, else Calico defaults (1024 / 512 for both families)."""
    spec = next(
        (r.spec for r in resources if isinstance(r, cr.FelixConfiguration) and r.metadata.name == "default"),
        cr.FelixConfigurationSpec(),
    )
    default = Priorities()
    convergence = (
        cr.parse_duration(spec.liveMigrationRouteConvergenceTime)
        if spec.liveMigrationRouteConvergenceTime
        else default.convergence
    )
    return Priorities(
        normal=(spec.ipv4NormalRoutePriority if family == 4 else spec.ipv6NormalRoutePriority)
        or default.normal,
        elevated=(spec.ipv4ElevatedRoutePriority if family == 4 else spec.ipv6ElevatedRoutePriority)
        or default.elevated,
        convergence=convergence,
    )
