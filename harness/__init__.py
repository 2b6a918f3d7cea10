"""kvlab: an integration-test harness for Calico BGP networking of KubeVirt VMs.

The library is usable without pytest: load a lab spec, bring it up on a runtime,
probe BIRD and kernel state, tear it down. The CLI (`kvlab`) and the pytest plugin
are thin shells over it.
"""

from harness.errors import KvlabError, LabError, SpecError, SpecIssue, WaitTimeout

__all__ = ["KvlabError", "LabError", "SpecError", "SpecIssue", "WaitTimeout"]
__version__ = "0.1.0"
