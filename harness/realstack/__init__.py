"""The real stack: containerlab + kind + Calico (tigera operator) + KubeVirt.

Among its modules: `versions` pins the tested version matrix, `render` writes everything a
containerlab lab needs from a lab spec, `schemas` validates those files against the upstream
schemas in shared/schemas, `kubevirt` builds KubeVirt objects and probes /dev/kvm.
"""
