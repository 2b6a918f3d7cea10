"""The containerlab runtime (the real stack): containerlab + kind + Calico (tigera operator) +
KubeVirt, one lab spec brought up as BIRD ToR containers wired to kind clusters.

Its parts, one job each:
- the runtime: `runtime` (ContainerlabRuntime: lifecycle and probes), `host` (what its parts ask
  of it), `preflight` (what the machine lacks), `install` (up, step by step), `migration` (the
  KubeVirt migration driver and its MigrationRecord), `diagnostics`, `tools` (containerlab, kind);
- what the lab is built from: `render` (every file, pure) from `plan` (names, kind nodes, address
  plan), `topology_file` (the containerlab topology), `kind` (kind configs), `calico_docs`
  (Calico documents), `kubevirt` (KubeVirt documents, device probes), `sshkey` (the lab's SSH
  key); `validate` checks what was rendered against the upstream `schemas`;
- the stack: `versions` (the version matrix), `pins` (every pinned URL and image answers),
  `matrix_cli` (the matrix for shell scripts), `images` (the ToR image, built without a registry);
- the clients: `docker` (the Docker engine), `kube` (the Kubernetes API), `guestssh` (commands in
  KubeVirt guests), `ipam` (Calico IPAM read from a cluster).

Nothing is imported here: `pins` and `matrix_cli` run with the system Python before the venv
exists, and `get_runtime("containerlab")` imports only what the runtime needs.
"""
