"""The containerlab runtime (the real stack): containerlab + kind + Calico + KubeVirt."""
