"""Felix settings the netns node agent honours, read from a cluster's FelixConfiguration."""

from __future__ import annotations

from typing import Any

from harness.calico import resources as cr
from harness.calico.livemigration import Priorities


def priorities(resources: list[Any]) -> Priorities:
    """Route priorities and convergence time from the `default` FelixConfiguration, else Calico defaults."""
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
        normal=spec.ipv4NormalRoutePriority or default.normal,
        elevated=spec.ipv4ElevatedRoutePriority or default.elevated,
        convergence=convergence,
    )
