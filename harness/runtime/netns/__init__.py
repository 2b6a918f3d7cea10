"""The embedded netns runtime: every lab entity a Linux network namespace, real BIRD, node agents
playing Felix's live-migration part, mock VMs and QEMU guests that really live-migrate.

Its parts: `runtime` (the Runtime: namespaces, links, BIRD, lifecycle, probes), `migration` (the
migration driver: phases, journal, recovery), `journal` (the durable migration journal), `agent`
(the node agent process), `vms` (QEMU VM operations of a lab), `qemu` (a QEMU guest and its QMP
client), `guestimage` (the guest kernel + initramfs built from Debian packages), `mockguest`
(what runs inside a mock VM). Nothing here is imported at package import: the node agent and the
mock guest start as their own small processes.
"""
