"""The Calico resources of the seed documents, as data to put in generated labs and tests.

Values are the ones Calico's guides use (live migration: community 65000:100 for priority 512).
"""

from __future__ import annotations

from typing import Any

API = "projectcalico.org/v3"
ELEVATED_COMMUNITY = "65000:100"


def kubevirt_live_migration_filter(
    name: str = "kubevirt-live-migration", *, priority: int = 512, community: str = ELEVATED_COMMUNITY
) -> dict[str, Any]:
    """Calico's live-migration guide, step 1: carry priority across eBGP as a community."""
    return {
        "apiVersion": API,
        "kind": "BGPFilter",
        "metadata": {"name": name},
        "spec": {
            "exportV4": [
                {
                    "action": "Accept",
                    "peerType": "eBGP",
                    "priority": priority,
                    "operations": [{"addCommunity": {"value": community}}],
                }
            ],
            "importV4": [
                {
                    "action": "Accept",
                    "communities": {"values": [community]},
                    "operations": [{"setPriority": {"value": priority}}],
                }
            ],
        },
    }
