"""The guest image of a real (QEMU) VM: a Debian kernel plus a busybox-static initramfs.

Built from Debian packages only (`apt-get download`, no other network access):
- `linux-image-<abi>-amd64`, the package the `linux-image-amd64` metapackage points at
  (the host's running kernel is irrelevant): its `vmlinuz` and the few modules the
  guest's NIC needs (virtio_net, virtio_pci and their dependencies, read from each
  module's `.modinfo`; modules the kernel has built in are skipped, `.ko.xz`/`.ko.zst`/
  `.ko.gz` are decompressed at build time so busybox `insmod` can load them);
- `busybox-static`: the whole userland. Applet symlinks are created by
  `busybox --install -s` as the first thing /init does (arch-independent, no host exec);
- `bird` (BIRD 1.6): `bird` and `birdc` with the shared libraries `ldd` names for them, so a
  nested cluster's node can run in the guest. Its files come per VM: on the netns runtime in
  the initrd (`nested_initrd`: the image's initrd with a second cpio appended, the same file
  on a migration's both ends), under KubeVirt from the cloud-init (NoCloud) disk, whose user
  data (`nested_user_data`, a shell script cloud-init would run too) writes them:
  `/etc/kvlab/bird.conf` (rendered by the confd emulation) and `/etc/kvlab/pod-ip`. /init then
  puts the pod address on `lo`, starts BIRD and serves its control protocol, read-only, on TCP
  port `BIRDCTL_PORT` of the VM's address (lab network only), one `birdc -r -v` per command.

The initramfs is a gzip'd cpio (newc) written here, so no `cpio` binary is needed.

The guest's /init is configured by kernel command-line parameters (see `kernel_cmdline`):

    kvlab.ip=203.0.113.10   the VM's address: a /32 on eth0                      (required)
    kvlab.port=7007         TCP echo server port                                 (default 7007)
    kvlab.name=vm1          hostname, shown in every log line                    (default kvlab-vm)
    kvlab.gw=169.254.1.1    on-link default gateway (Calico's)                   (default 169.254.1.1)
    kvlab.ip6=2001:db8::a   dual stack: the VM's IPv6 address, a /128 on eth0    (default: none)
    kvlab.gw6=fe80::...     its IPv6 gateway: the host side's link-local address (default
                            fe80::ecee:eeff:feee:eeee, from the MAC ee:ee:ee:ee:ee:ee)

It loads the modules, configures eth0 Calico-style (IP/32, route to the gateway on the
device, default route via it on-link; with kvlab.ip6 also its /128 without duplicate address
detection and the IPv6 default route via the host side's link-local address, with
`ndisc_notify` on), sends two gratuitous ARPs (`arping -U`), runs a
TCP echo server (`nc -ll -e cat`: one forked `cat` per connection, so a long-lived
connection keeps echoing while new ones are accepted; busybox listens on both families) and
logs `kvlab-guest` lines to the
serial console (ttyS0); `READY_MARKER` is printed once the server listens. A fatal error
powers the guest off, so QEMU (started with -no-reboot) exits instead of hanging.

Images are cached in `<KVLAB_IMAGE_CACHE or /var/cache/kvlab/images>/<key>/`, the key
covering both package versions, the init script and the module list: a second
`ensure_image()` is a lookup. The candidate versions come from `apt-cache show`, remembered
next to the images until apt's lists, sources or pins change. If apt cannot resolve the
packages (no lists, offline) the newest cached image is used.

`ensure_image(pvh=True)` returns the uncompressed kernel (extracted from the bzImage once,
~65 MB) instead: QEMU boots it through its PVH entry point and the guest is ready in ~2.7 s
instead of ~6 s under TCG, where decompressing the xz bzImage takes about half of the boot.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import ipaddress
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from debian.deb822 import Packages, PkgRelation

from harness.errors import LabError
from harness.imagecache import cache_lock, cache_root, ensure_cache_dir
from harness.locking import private_dir
from harness.progress import NullProgress, Progress
from harness.safefile import FileRefused, read_regular, replace_file
from harness.topology import GUEST_PORT

KERNEL_METAPACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
BIRD_PACKAGE = "bird"  # BIRD 1.6 for nested nodes in the guest
BIRD_BINARIES = ("usr/sbin/bird", "usr/sbin/birdc")
BIRDCTL_PORT = 7179  # the guest's BIRD control protocol over TCP (nested nodes only)
NESTED_CONFIG = "etc/kvlab/bird.conf"  # in the guest, from the per-VM initrd
NESTED_POD = "etc/kvlab/pod-ip"
GUEST_BIRD_LOG = "/run/bird.log"  # the log file a nested node's config names, in the guest
NIC_MODULES = ("virtio_pci", "virtio_net")  # what the guest needs; dependencies are resolved
DISK_MODULES = ("virtio_blk", "isofs")  # a cloud-init (NoCloud) disk under KubeVirt: nested nodes
GUEST_MODULES = NIC_MODULES + DISK_MODULES
NESTED_MARKER = "# kvlab-nested-node"  # the first comment line of a nested node's cloud-init user data
DEFAULT_GATEWAY = "169.254.1.1"
DEFAULT_GATEWAY6 = "fe80::ecee:eeff:feee:eeee"  # topology.WORKLOAD_GATEWAY6
READY_MARKER = "kvlab-guest: ready"
FORMAT_VERSION = "1"  # bump when the image layout changes in a way the key would not notice
MANIFEST_LIMIT = 1024 * 1024  # bytes of an image manifest or the apt memo read back from the cache
IMAGE_FILE_LIMIT = 512 * 1024 * 1024  # bytes of an initrd read back from the cache


class GuestImageError(LabError):
    """The guest image could not be built. `missing` names missing packages or tools, if any."""

    def __init__(self, message: str, missing: Iterable[str] = ()):
        self.missing = list(missing)
        super().__init__(message)


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    key: str
    packages: dict[str, str]  # Debian package -> version
    kernel_release: str = ""
    modules: tuple[str, ...] = ()  # insmod order
    boot: str = "bzImage"  # or "pvh": `kernel` is the uncompressed ELF, booted without decompression
    manifest: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return self.kernel.stat().st_size + self.initrd.stat().st_size


def kernel_cmdline(
    ip: str, *, port: int = GUEST_PORT, name: str = "kvlab-vm", extra: str = "", ip6: str | None = None
) -> str:
    """The -append string for a guest with address `ip` (and `ip6`), echoing on `port`."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", name):
        raise ValueError(f"guest name {name!r} must be 1-63 characters of [A-Za-z0-9_.-]")
    ip = str(ipaddress.IPv4Address(ip))  # ValueError for anything else: it lands on a command line
    six = f" kvlab.ip6={ipaddress.IPv6Address(ip6)}" if ip6 is not None and "%" not in ip6 else ""
    if ip6 is not None and not six:
        raise ValueError(f"guest IPv6 address {ip6!r} has a scope")
    base = (
        "console=ttyS0 panic=-1 loglevel=4 "  # panic=-1: reboot (and with -no-reboot, QEMU exits)
        "i8042.noaux i8042.nokbd i8042.nopnp no_timer_check tsc=reliable "  # skip slow probes under TCG
        f"kvlab.ip={ip} kvlab.port={port} kvlab.name={name}{six}"
    )
    return f"{base} {extra}".strip()


# -- the guest's /init ----------------------------------------------------------------------

_INIT_TEMPLATE = r"""#!/bin/sh
# kvlab guest init (PID 1), generated by harness/guestimage.py. Parameters: see kernel_cmdline().
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
IP= PORT=@PORT@ NAME=kvlab-vm GW=@GW@ IP6= GW6=@GW6@
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    kvlab.ip=*) IP="${arg#kvlab.ip=}" ;;
    kvlab.ip6=*) IP6="${arg#kvlab.ip6=}" ;;
    kvlab.gw6=*) GW6="${arg#kvlab.gw6=}" ;;
    kvlab.port=*) PORT="${arg#kvlab.port=}" ;;
    kvlab.name=*) NAME="${arg#kvlab.name=}" ;;
    kvlab.gw=*) GW="${arg#kvlab.gw=}" ;;
  esac
done
log() { read -r up _ < /proc/uptime; echo "kvlab-guest: $* (name=$NAME uptime=$up)"; }
fatal() { log "FATAL: $*"; sync; poweroff -f; }
hostname "$NAME"
log "init started"
[ -n "$IP" ] || fatal "no kvlab.ip= on the kernel command line"
for m in @MODULES@; do
  insmod "/lib/modules/$m.ko" || fatal "insmod $m failed"
done
n=0
while [ ! -e /sys/class/net/eth0 ]; do
  n=$((n + 1)); [ "$n" -gt 200 ] && fatal "no eth0 after loading @MODULES@"
  usleep 20000
done
ip link set lo up
if [ -n "$IP6" ]; then
  # no DAD (the address is the VM's by IPAM); unsolicited neighbour advertisements on changes
  for c in all default eth0; do
    echo 0 > "/proc/sys/net/ipv6/conf/$c/accept_dad"
    echo 1 > "/proc/sys/net/ipv6/conf/$c/ndisc_notify"
  done
fi
ip link set eth0 up || fatal "eth0 does not come up"
ip addr add "$IP/32" dev eth0 || fatal "cannot add $IP/32"
ip route add "$GW" dev eth0 || fatal "cannot add route to $GW"
ip route add default via "$GW" dev eth0 onlink 2>/dev/null || ip route add default via "$GW" dev eth0 \
  || fatal "cannot add default route via $GW"
log "eth0 $(cat /sys/class/net/eth0/address) $IP/32 via $GW"
if [ -n "$IP6" ]; then
  ip -6 addr add "$IP6/128" dev eth0 || fatal "cannot add $IP6/128"
  ip -6 route add default via "$GW6" dev eth0 || fatal "cannot add IPv6 default route via $GW6"
  log "eth0 $IP6/128 via $GW6"
fi
arping -U -c 2 -I eth0 "$IP" >/dev/null 2>&1 &
( while :; do nc -ll -p "$PORT" -e cat; log "echo server exited ($?), restarting"; usleep 200000; done ) &
n=0
until netstat -ltn 2>/dev/null | grep -q ":$PORT "; do
  n=$((n + 1)); [ "$n" -gt 250 ] && fatal "echo server does not listen on $PORT"
  usleep 20000
done
if [ ! -f /@NESTED_CONFIG@ ]; then  # under KubeVirt a nested node's files come by cloud-init (NoCloud)
  mkdir -p /mnt/cidata
  for dev in /dev/vd? /dev/sr?; do
    [ -b "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt/cidata 2>/dev/null || continue
    if grep -q '^@NESTED_MARKER@' /mnt/cidata/user-data 2>/dev/null; then
      sh /mnt/cidata/user-data || fatal "the cloud-init user data on $dev failed"
      log "nested node files from the cloud-init disk $dev"
    fi
    umount /mnt/cidata
  done
fi
if [ -f /@NESTED_CONFIG@ ]; then  # a nested node: BIRD, its pod address, its control relay
  read -r POD < /@NESTED_POD@ || fatal "no /@NESTED_POD@"
  ip addr add "$POD/32" dev lo || fatal "cannot add the pod address $POD/32 to lo"
  mkdir -p /run
  export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
  bird -c /@NESTED_CONFIG@ -s /run/bird.ctl -P /run/bird.pid || fatal "BIRD does not start"
  cat > /bin/kvlab-birdctl <<'RELAY'
#!/bin/sh
# BIRD's control protocol for one TCP client (nc -e), read-only (birdc -r: show commands only):
# greeting, then per command line the reply codes birdc -v prints (without its greeting and
# "0016 Access restricted"), continuation lines restored, a final 0000 where birdc drops it.
set -f
hello=$(birdc -r -v -s /run/bird.ctl show status 2>/dev/null | head -n 1)
case "$hello" in 0001\ *) echo "$hello" ;; *) exit 1 ;; esac
while IFS= read -r cmd; do
  out=$(birdc -r -v -s /run/bird.ctl $cmd 2>/dev/null) || exit 1
  printf '%s\n' "$out" | awk 'NR <= 2 && /^00(01|16) / { next }
    /^     / { print " " substr($0, 6); last = ""; next }
    { print; last = $0 }
    END { if (last !~ /^[0-9][0-9][0-9][0-9] /) print "0000 " }'
done
RELAY
  chmod 755 /bin/kvlab-birdctl
  ( while :; do nc -ll -p @BIRDCTL@ -e /bin/kvlab-birdctl; log "relay exited ($?)"; usleep 200000; done ) &
  log "nested node: BIRD started, pod $POD, control port @BIRDCTL@"
fi
log "ready ip=$IP port=$PORT"
while :; do sleep 3600; done
"""


def render_init(
    modules: Iterable[str],
    *,
    port: int = GUEST_PORT,
    gateway: str = DEFAULT_GATEWAY,
    gateway6: str = DEFAULT_GATEWAY6,
) -> str:
    mods = " ".join(modules)
    text = (
        _INIT_TEMPLATE.replace("@MODULES@", mods)
        .replace("@PORT@", str(port))
        .replace("@GW6@", gateway6)
        .replace("@GW@", gateway)
    )
    nested = {
        "@BIRDCTL@": str(BIRDCTL_PORT),
        "@NESTED_CONFIG@": NESTED_CONFIG,
        "@NESTED_POD@": NESTED_POD,
        "@NESTED_MARKER@": NESTED_MARKER,
    }
    for key, value in nested.items():
        text = text.replace(key, value)
    return text


# -- kernel modules: .modinfo, modules.builtin, load order -------------------------------------


def module_name(path: str | Path) -> str:
    """'kernel/drivers/net/virtio_net.ko.xz' -> 'virtio_net' (dashes normalised as the kernel does)."""
    base = Path(path).name
    base = base.split(".ko", 1)[0]
    return base.replace("-", "_")


def parse_builtin(text: str) -> set[str]:
    """Module names listed in a kernel's modules.builtin."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def modinfo(elf: bytes) -> dict[str, str]:
    """The key=value strings of an (uncompressed, ELF64 little-endian) module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = elf[str_off : str_off + str_size]
    for i in range(shnum):
        name_off, offset, size = section(i)
        if names[name_off : names.index(b"\0", name_off)] == b".modinfo":
            info: dict[str, str] = {}
            for item in elf[offset : offset + size].split(b"\0"):
                if b"=" in item:
                    k, _, v = item.decode(errors="replace").partition("=")
                    info.setdefault(k, v)
            return info
    return {}


def module_depends(elf: bytes) -> list[str]:
    deps = modinfo(elf).get("depends", "")
    return [d.replace("-", "_") for d in deps.split(",") if d]


def load_order(
    wanted: Iterable[str], depends: Callable[[str], list[str]], available: set[str], builtin: set[str]
) -> list[str]:
    """Modules to insmod, dependencies first; built-in ones are skipped.

    `depends(name)` gives a module's direct dependencies; `available` are the loadable
    modules, `builtin` the ones compiled into the kernel.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in builtin or name in order:
            return
        if name not in available:
            via = " <- ".join((name, *reversed(chain)))
            raise GuestImageError(f"kernel module {name} is neither built in nor shipped ({via})")
        if name in visiting:
            raise GuestImageError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        visiting.add(name)
        for dep in depends(name):
            visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def decompress_module(path: Path) -> bytes:
    """A module file's ELF bytes, whatever compression Debian used."""
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise GuestImageError(f"{path.name} is zstd-compressed: install 'zstd'", missing=["zstd"])
        return subprocess.run([zstd, "-dc", str(path)], check=True, capture_output=True).stdout
    raise GuestImageError(f"unknown module format: {path.name}")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (what the kernel's scripts/extract-vmlinux does)."""

    def unzstd(data: bytes) -> bytes:
        zstd = shutil.which("zstd")
        if zstd is None:
            raise GuestImageError("the kernel is zstd-compressed: install 'zstd'", missing=["zstd"])
        return subprocess.run([zstd, "-dcq"], input=data, capture_output=True, check=False).stdout

    formats: list[tuple[bytes, Callable[[bytes], bytes]]] = [
        (b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d)),
        (b"\x1f\x8b\x08", lambda d: zlib.decompressobj(31).decompress(d)),
        (b"\x28\xb5\x2f\xfd", unzstd),
    ]
    for magic, decompress in formats:
        start = bzimage.find(magic)
        for _ in range(4):  # the magic can also occur by chance before the payload
            if start < 0:
                break
            with contextlib.suppress(lzma.LZMAError, zlib.error, EOFError):
                out = decompress(bzimage[start:])
                if out[:4] == b"\x7fELF":
                    return out
            start = bzimage.find(magic, start + 1)
    raise GuestImageError("found no xz/gzip/zstd-compressed ELF kernel inside the bzImage")


def has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel carries XEN_ELFNOTE_PHYS32_ENTRY (CONFIG_PVH): QEMU can boot it directly."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


# -- cpio (newc) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpioEntry:
    path: str  # without leading "/"
    mode: int  # including the file type bits
    data: bytes = b""  # file contents, or a symlink's target
    rdev: tuple[int, int] = (0, 0)


def cpio_newc(entries: Iterable[CpioEntry], *, mtime: int = 0) -> bytes:
    """An uncompressed newc archive (what the kernel unpacks as an initramfs)."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    def header(ino: int, e: CpioEntry) -> None:
        name = e.path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        fields = (ino, e.mode, 0, 0, nlink, mtime, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name)
        pad()
        out.write(e.data)
        pad()

    count = 0
    for count, e in enumerate(entries, start=1):
        header(count, e)
    header(count + 1, CpioEntry("TRAILER!!!", 0))
    return out.getvalue()


def initramfs_entries(
    busybox: bytes, init: str, modules: Mapping[str, bytes], programs: Mapping[str, bytes] | None = None
) -> list[CpioEntry]:
    """The initramfs: busybox, /init, kernel modules, and `programs` (path -> an executable or
    shared library, e.g. BIRD and what it links), parent directories first."""
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [CpioEntry(p, d) for p in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev")]
    entries += [CpioEntry(p, d) for p in ("proc", "sys", "tmp", "lib", "lib/modules")]
    entries += [
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),  # the kernel opens it before /init
        CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        CpioEntry("bin/busybox", x, busybox),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("init", x, init.encode()),
    ]
    entries += [CpioEntry(f"lib/modules/{name}.ko", f, data) for name, data in modules.items()]
    have = {e.path for e in entries}
    for path, data in sorted((programs or {}).items()):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in have:
                entries.append(CpioEntry(parent, d))
                have.add(parent)
        entries.append(CpioEntry(path, x, data))
        have.add(path)
    return entries


def ldd_libraries(text: str, binary: str = "") -> list[str]:
    """The absolute paths `ldd` resolved (the dynamic loader included, the vDSO not);
    GuestImageError naming a library it did not find."""
    paths: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if "=> not found" in line:
            what = binary or "a guest binary"
            raise GuestImageError(f"{what} needs {line.split()[0]}, which ldd does not find")
        m = re.match(r"(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$", line)
        if m and m.group(1) not in paths:
            paths.append(m.group(1))
    return paths


def nested_user_data(node: str, bird_conf: str, pod_ip: str) -> str:
    """Cloud-init user data for a nested node's VM: a shell script writing its BIRD config and
    pod address where /init looks (the guest's /init runs it from the NoCloud disk; cloud-init
    would run it as well). ValueError for a pod address that is no IPv4 address or a config
    that would end the script's here-document."""
    pod = ipaddress.IPv4Address(pod_ip)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", node):
        raise ValueError(f"nested node name {node!r} must be 1-63 characters of [A-Za-z0-9_.-]")
    if any(line.strip() == "KVLAB_BIRD_CONF" for line in bird_conf.splitlines()):
        raise ValueError("the BIRD config has a line 'KVLAB_BIRD_CONF', which ends the here-document")
    return (
        f"#!/bin/sh\n{NESTED_MARKER} {node}: BIRD config (kvlab's confd emulation) and pod address\n"
        f"mkdir -p /{NESTED_CONFIG.rsplit('/', 1)[0]}\n"
        f"cat > /{NESTED_CONFIG} <<'KVLAB_BIRD_CONF'\n{bird_conf.rstrip()}\nKVLAB_BIRD_CONF\n"
        f"echo {pod} > /{NESTED_POD}\n"
    )


def nested_initrd(image: GuestImage, bird_conf: str, pod_ip: str, out: Path) -> Path:
    """`image`'s initrd with a nested node's files appended as a second (gzip'd) cpio, which the
    kernel unpacks over the first: BIRD's config and the pod address. Written atomically to `out`
    (UnsafePathError if its directory is a symlink or not ours alone); a migration target boots
    from the same file, so QEMU sees the same ROM on both ends."""
    if BIRD_PACKAGE not in image.packages:
        raise GuestImageError(
            f"the guest image {image.key} has no BIRD (built before nested nodes ran in guests): "
            "run 'kvlab image build' with apt's lists available",
            missing=[BIRD_PACKAGE],
        )
    pod = ipaddress.IPv4Address(pod_ip)  # ValueError for anything else
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644
    extra = cpio_newc(
        [
            CpioEntry("etc", d),
            CpioEntry("etc/kvlab", d),
            CpioEntry(NESTED_CONFIG, f, bird_conf.encode()),
            CpioEntry(NESTED_POD, f, f"{pod}\n".encode()),
        ]
    )
    try:
        base = read_regular(image.initrd, IMAGE_FILE_LIMIT, what="guest images", follow_symlinks=False)
    except FileRefused as e:
        raise GuestImageError(f"{image.initrd}: {e}") from None
    data = base + b"\0" * (-len(base) % 4) + gzip.compress(extra, compresslevel=6, mtime=0)
    private_dir(out.parent)  # a real directory of ours: never a symlink planted in the run directory
    replace_file(out, data)  # never through a symlink planted beside it
    return out


# -- apt: which packages, which versions ----------------------------------------------------------


def parse_apt_show(text: str) -> dict[str, Packages]:
    """`apt-cache show --no-all-versions A B` -> {package: its stanza} (the first per package),
    read by python-debian's deb822 parser (continuation lines, case-insensitive field names)."""
    result: dict[str, Packages] = {}
    for stanza in Packages.iter_paragraphs(text, use_apt_pkg=False):
        if "Package" in stanza:
            result.setdefault(stanza["Package"], stanza)
    return result


def kernel_package(meta: Mapping[str, str]) -> tuple[str, str]:
    """The (package, version) a linux-image-amd64 stanza depends on: the version its `Depends`
    pins with `=`, else the stanza's own."""
    for alternatives in PkgRelation.parse_relations(meta.get("Depends", "")):
        for rel in alternatives:
            if rel["name"].startswith("linux-image-"):
                op, version = rel["version"] or ("", "")
                return rel["name"], version if op == "=" else meta.get("Version", "")
    raise GuestImageError(
        f"{meta.get('Package', KERNEL_METAPACKAGE)} {meta.get('Version', '?')} depends on no linux-image "
        f"package (Depends: {meta.get('Depends', '')!r})"
    )


def cache_key(packages: Mapping[str, str], init_template: str, modules: Iterable[str]) -> str:
    h = hashlib.sha256()
    h.update(FORMAT_VERSION.encode())
    for name in sorted(packages):
        h.update(f"\0{name}={packages[name]}".encode())
    h.update(b"\0" + init_template.encode())
    h.update(b"\0" + ",".join(modules).encode())
    kernel = next((n for n in sorted(packages) if n.startswith("linux-image-")), "guest")
    slug = re.sub(r"[^A-Za-z0-9.+-]", "_", kernel.removeprefix("linux-image-"))
    return f"{slug}-{h.hexdigest()[:16]}"


def _run(argv: list[str], *, cwd: Path | None = None, what: str) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise GuestImageError(f"{what}: '{argv[0]}' not found", missing=[argv[0]]) from None
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise GuestImageError(f"{what} failed ({' '.join(argv)}): {' / '.join(detail[-3:])}")
    return res


def _require_tools() -> None:
    missing = [
        f"'{tool}' (Debian package '{pkg}')"
        for tool, pkg in (("apt-get", "apt"), ("apt-cache", "apt"), ("dpkg-deb", "dpkg"))
        if shutil.which(tool) is None
    ]
    if missing:
        raise GuestImageError(
            "building the guest image needs a Debian/Ubuntu apt toolchain; missing: " + ", ".join(missing),
            missing=missing,
        )


APT_STATE = (Path("/var/lib/apt/lists"), Path("/etc/apt"), Path("/var/lib/dpkg/status"))


def apt_fingerprint(paths: Iterable[Path] = APT_STATE) -> str:
    """Changes whenever apt's idea of the candidate versions may change (lists, sources, pins, installs)."""
    h = hashlib.sha256()
    for top in paths:
        entries = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in entries:
            with contextlib.suppress(OSError):
                st = p.stat()
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_packages(memo: Path | None = None) -> dict[str, str]:
    """The candidate versions: {'linux-image-<abi>-amd64': ver, 'busybox-static': ver, 'bird': ver}.

    `apt-cache show` parses every list (~0.7 s without a pkgcache.bin), so the answer is
    remembered in `memo` together with a fingerprint of apt's state.
    """
    fingerprint = apt_fingerprint()
    if memo is not None:
        with contextlib.suppress(FileRefused, ValueError, KeyError, TypeError):
            saved = json.loads(read_regular(memo, MANIFEST_LIMIT, follow_symlinks=False))
            complete = {BUSYBOX_PACKAGE, BIRD_PACKAGE} <= set(saved["packages"])  # not an older memo
            if saved["fingerprint"] == fingerprint and complete:
                return dict(saved["packages"])
    packages = _apt_candidates()
    if memo is not None:
        with contextlib.suppress(OSError):
            replace_file(memo, json.dumps({"fingerprint": fingerprint, "packages": packages}).encode())
    return packages


def _apt_candidates() -> dict[str, str]:
    res = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, BIRD_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    stanzas = parse_apt_show(res.stdout)
    missing = [p for p in (KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, BIRD_PACKAGE) if p not in stanzas]
    if missing:
        raise GuestImageError(
            f"apt knows no package {', '.join(repr(m) for m in missing)} (the guest image is built from "
            f"Debian packages; is the Debian archive configured and 'apt-get update' done?)",
            missing=missing,
        )
    kernel, kver = kernel_package(stanzas[KERNEL_METAPACKAGE])
    return {
        kernel: kver,
        BUSYBOX_PACKAGE: stanzas[BUSYBOX_PACKAGE]["Version"],
        BIRD_PACKAGE: stanzas[BIRD_PACKAGE]["Version"],
    }


# -- the cache ------------------------------------------------------------------------------------


def _file_name(name: object) -> str:
    """A file name of a manifest: one component (never a path leading out of the image's directory)."""
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    return name


def _is_regular(path: Path) -> bool:
    """`path` is a regular file, not a symlink (a file of the cache QEMU is given)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _load(directory: Path) -> GuestImage | None:
    try:
        manifest = json.loads(
            read_regular(directory / "manifest.json", MANIFEST_LIMIT, follow_symlinks=False)
        )
        kernel, initrd = (
            directory / _file_name(manifest["kernel"]),
            directory / _file_name(manifest["initrd"]),
        )
    except (FileRefused, ValueError, KeyError, TypeError):
        return None
    if not (_is_regular(kernel) and _is_regular(initrd)):
        return None
    return GuestImage(
        kernel=kernel,
        initrd=initrd,
        key=manifest["key"],
        packages=dict(manifest["packages"]),
        kernel_release=manifest.get("kernel_release", ""),
        modules=tuple(manifest.get("modules", ())),
        manifest=manifest,
    )


def cached_images(root: Path | None = None) -> list[GuestImage]:
    """Every complete image in the cache, newest first."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    return [img for d in dirs if (img := _load(d)) is not None]


def ensure_image(
    progress: Progress | None = None, *, pvh: bool = False, cache_dir: Path | None = None
) -> GuestImage:
    """The guest image for the current Debian candidates, built on first use and cached.

    `pvh=True` gives the uncompressed kernel instead of the bzImage (~65 MB instead of ~8 MB,
    cached next to it on first use): QEMU boots it through its PVH entry point, skipping the
    in-guest decompression that takes ~3 s under TCG.
    """
    progress = progress or NullProgress()
    root = cache_dir or cache_root()
    _require_tools()
    ensure_cache_dir(root, GuestImageError)
    img = _cached_or_built(root, progress)
    return _pvh(img, root, progress) if pvh else img


def _cached_or_built(root: Path, progress: Progress) -> GuestImage:
    try:
        packages = resolve_packages(root / ".apt-candidates.json")
    except GuestImageError:
        cached = cached_images(root)
        if cached:
            return cached[0]  # offline or apt lists gone: the newest image still boots
        raise
    key = cache_key(packages, _INIT_TEMPLATE, GUEST_MODULES)
    if (img := _load(root / key)) is not None:
        return img
    with cache_lock(root, error=GuestImageError):
        if (img := _load(root / key)) is not None:  # another process built it meanwhile
            return img
        return _build(root, key, packages, progress)


def _pvh(img: GuestImage, root: Path, progress: Progress) -> GuestImage:
    vmlinux = img.kernel.with_name("vmlinux")
    if not _is_regular(vmlinux):
        with cache_lock(root, error=GuestImageError), progress.step("guest PVH kernel", total=None) as step:
            if not _is_regular(vmlinux):
                try:
                    bzimage = read_regular(
                        img.kernel, IMAGE_FILE_LIMIT, what="guest images", follow_symlinks=False
                    )
                except FileRefused as e:
                    raise GuestImageError(f"{img.kernel}: {e}") from None
                elf = extract_vmlinux(bzimage)
                if not has_pvh_entry(elf):
                    raise GuestImageError(f"kernel {img.kernel_release} has no PVH entry point (CONFIG_PVH)")
                replace_file(vmlinux, elf)  # never through a symlink planted in the cache
                step.advance(detail=f"{len(elf) // 2**20} MiB")
    return replace(img, kernel=vmlinux, boot="pvh")


def _build(root: Path, key: str, packages: dict[str, str], progress: Progress) -> GuestImage:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        work = Path(tmp)
        debs = work / "debs"
        debs.mkdir()
        with progress.step("download guest packages", total=len(packages)) as step:
            for name, version in packages.items():
                _run(
                    ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{name}={version}"],
                    cwd=debs,
                    what=f"downloading Debian package {name}={version}",
                )
                step.advance(detail=name)
        kernel_pkg = next(n for n in packages if n.startswith("linux-image-"))

        def deb(name: str) -> Path:
            found = sorted(debs.glob(f"{name}_*.deb"))
            if not found:
                raise GuestImageError(f"apt-get download left no .deb for {name}", missing=[name])
            return found[0]

        with progress.step("extract guest packages", total=3) as step:
            _run(["dpkg-deb", "-x", str(deb(BUSYBOX_PACKAGE)), str(work / "bb")], what="unpacking busybox")
            step.advance(detail=BUSYBOX_PACKAGE)
            _run(["dpkg-deb", "-x", str(deb(kernel_pkg)), str(work / "k")], what="unpacking the kernel")
            step.advance(detail=kernel_pkg)
            _run(["dpkg-deb", "-x", str(deb(BIRD_PACKAGE)), str(work / "bird")], what="unpacking BIRD")
            step.advance(detail=BIRD_PACKAGE)
        programs = _bird_files(work / "bird")

        busybox = work / "bb" / "bin" / "busybox"
        if not busybox.is_file():
            raise GuestImageError(f"{BUSYBOX_PACKAGE} has no /bin/busybox", missing=[BUSYBOX_PACKAGE])
        releases = sorted(p.name for p in (work / "k" / "lib" / "modules").iterdir() if p.is_dir())
        if len(releases) != 1:
            raise GuestImageError(f"{kernel_pkg}: expected one /lib/modules/<release>, found {releases}")
        release = releases[0]
        moddir = work / "k" / "lib" / "modules" / release
        vmlinuz = work / "k" / "boot" / f"vmlinuz-{release}"
        if not vmlinuz.is_file():
            raise GuestImageError(f"{kernel_pkg} has no /boot/vmlinuz-{release}")

        with progress.step("guest kernel modules", total=None) as step:
            builtin_file = moddir / "modules.builtin"
            builtin = parse_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
            files = {module_name(p): p for p in moddir.rglob("*.ko*") if re.search(r"\.ko(\.\w+)?$", p.name)}
            elf: dict[str, bytes] = {}

            def depends(name: str) -> list[str]:
                if name not in elf:
                    elf[name] = decompress_module(files[name])
                return module_depends(elf[name])

            order = load_order(GUEST_MODULES, depends, set(files), builtin)
            step.advance(len(order), detail=" ".join(order))

        with progress.step("guest initramfs", total=None) as step:
            init = render_init(order)
            modules = {m: elf[m] for m in order}
            raw = cpio_newc(initramfs_entries(busybox.read_bytes(), init, modules, programs))
            out = work / "out"
            out.mkdir()
            (out / "initrd.gz").write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
            shutil.copyfile(vmlinuz, out / "vmlinuz")
            (out / "init").write_text(init)
            step.advance(detail=f"{len(raw) // 1024} KiB cpio")
            manifest = {
                "key": key,
                "packages": packages,
                "kernel_release": release,
                "modules": order,
                "builtin_skipped": sorted(set(GUEST_MODULES) & builtin),
                "kernel": "vmlinuz",
                "initrd": "initrd.gz",
                "cmdline_params": [
                    "kvlab.ip",
                    "kvlab.port",
                    "kvlab.name",
                    "kvlab.gw",
                    "kvlab.ip6",
                    "kvlab.gw6",
                ],
                "programs": sorted(programs),
                "built_at": time.time(),
                "build_seconds": round(time.monotonic() - started, 2),
            }
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
            target = root / key
            shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover (no manifest)
            out.rename(target)
    img = _load(root / key)
    if img is None:  # pragma: no cover - we just wrote it
        raise GuestImageError(f"the image in {root / key} is incomplete")
    return img


def _bird_files(root: Path) -> dict[str, bytes]:
    """BIRD's binaries from the unpacked package under `root` and the shared libraries `ldd`
    resolves for them (the machine's own, as installed with its `bird`), by guest path."""
    files: dict[str, bytes] = {}
    for rel in BIRD_BINARIES:
        binary = root / rel
        if not binary.is_file():
            raise GuestImageError(f"{BIRD_PACKAGE} has no /{rel}", missing=[BIRD_PACKAGE])
        files[rel] = binary.read_bytes()
        res = _run(["ldd", str(binary)], what=f"listing the libraries of /{rel}")
        for lib in ldd_libraries(res.stdout, f"/{rel}"):
            files.setdefault(lib.lstrip("/"), Path(lib).resolve().read_bytes())
    return files
