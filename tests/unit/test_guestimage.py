"""The pure parts of the guest image (harness/guestimage.py) and of booting it (harness/qemu.py).

No apt, no QEMU, no root: synthetic ELF objects, cpio archives and a fake QMP server.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import shutil
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import LabError
from harness.runtime.netns import guestimage as gi
from harness.runtime.netns.guestimage import (
    CpioEntry,
    GuestImage,
    GuestImageError,
    cache_key,
    cpio_newc,
    extract_vmlinux,
    has_pvh_entry,
    initramfs_entries,
    kernel_cmdline,
    kernel_package,
    load_order,
    modinfo,
    module_depends,
    module_name,
    parse_apt_show,
    parse_builtin,
    render_init,
)
from harness.runtime.netns.qemu import GuestSpec, QemuError, QMPClient, QMPError, qemu_argv

# -- synthetic ELF64 objects ------------------------------------------------------------------


def make_elf(sections: dict[str, bytes], notes: Sequence[tuple[bytes, int, bytes]] = ()) -> bytes:
    """A minimal little-endian ELF64 with the given sections and (optionally) one PT_NOTE segment."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in (*sections, ".shstrtab"))
    body, offsets = b"", {}
    for name, data in sections.items():
        offsets[name] = 64 + len(body)
        body += data + b"\0" * (-len(data) % 8)
    note_blob = b"".join(
        struct.pack("<III", len(n) + 1, len(d), t)
        + (n + b"\0").ljust((len(n) + 4) // 4 * 4, b"\0")
        + d.ljust((len(d) + 3) // 4 * 4, b"\0")
        for n, t, d in notes
    )
    note_off = 64 + len(body)
    body += note_blob + b"\0" * (-len(note_blob) % 8)
    str_off = 64 + len(body)
    body += names + b"\0" * (-len(names) % 8)
    shoff = 64 + len(body)
    shdrs = [b"\0" * 64]
    pos = 1
    for name, data in sections.items():
        shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 1, 0, 0, offsets[name], len(data), 0, 0, 1, 0))
        pos += len(name) + 1
    shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 3, 0, 0, str_off, len(names), 0, 0, 1, 0))
    body += b"".join(shdrs)
    phoff = 64 + len(body)
    phnum = 1 if notes else 0
    if notes:
        body += struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note_blob), len(note_blob), 4)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,
        62,
        1,
        0,
        phoff if notes else 0,
        shoff,
        0,
        64,
        56,
        phnum,
        64,
        len(shdrs),
        len(shdrs) - 1,
    )
    return header + body


def module(depends: str, name: str = "m") -> bytes:
    info = f"license=GPL\0depends={depends}\0name={name}\0vermagic=6.1.0-56-amd64 SMP\0".encode()
    return make_elf({".text": b"\x90" * 16, ".modinfo": info})


def test_modinfo_reads_the_modinfo_section_of_a_module() -> None:
    elf = module("virtio_ring,virtio,net_failover", "virtio_net")
    assert modinfo(elf)["name"] == "virtio_net"
    assert module_depends(elf) == ["virtio_ring", "virtio", "net_failover"]
    assert module_depends(module("")) == []
    assert module_depends(module("snd-pcm")) == ["snd_pcm"]  # the kernel's dash/underscore equivalence


def test_modinfo_refuses_what_is_not_an_elf64_le_object() -> None:
    with pytest.raises(ValueError, match="ELF64"):
        modinfo(b"\x28\xb5\x2f\xfd compressed, not decompressed")
    assert modinfo(make_elf({".text": b"\x90"})) == {}  # no .modinfo section


def test_module_names_and_modules_builtin() -> None:
    assert module_name("kernel/drivers/net/virtio_net.ko.xz") == "virtio_net"
    assert module_name("virtio-rng.ko") == "virtio_rng"
    text = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n\n"
    assert parse_builtin(text) == {"virtio", "virtio_rng"}


# -- module load order ----------------------------------------------------------------------------

BOOKWORM_DEPS = {  # read from linux-image-6.1.0-56-amd64 6.1.192-2
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
    "net_failover": ["failover"],
    "failover": [],
    "virtio_pci": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"],
    "virtio_pci_modern_dev": [],
    "virtio_pci_legacy_dev": [],
    "virtio_ring": [],
    "virtio": ["virtio_ring"],
}


def test_load_order_puts_every_dependency_first() -> None:
    order = load_order(gi.NIC_MODULES, BOOKWORM_DEPS.__getitem__, set(BOOKWORM_DEPS), set())
    assert sorted(order) == sorted(BOOKWORM_DEPS)
    for name, deps in BOOKWORM_DEPS.items():
        assert all(order.index(d) < order.index(name) for d in deps), order
    assert order[-1] == "virtio_net"


def test_load_order_skips_builtin_modules() -> None:
    available = set(BOOKWORM_DEPS) - {"virtio", "virtio_ring"}
    order = load_order(gi.NIC_MODULES, BOOKWORM_DEPS.__getitem__, available, {"virtio", "virtio_ring"})
    assert "virtio" not in order
    assert "virtio_ring" not in order
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")


def test_load_order_names_a_missing_module_and_who_needs_it() -> None:
    available = set(BOOKWORM_DEPS) - {"failover"}
    with pytest.raises(GuestImageError, match=r"failover is neither built in nor shipped.*virtio_net"):
        load_order(gi.NIC_MODULES, BOOKWORM_DEPS.__getitem__, available, set())


def test_load_order_detects_cycles() -> None:
    deps = {"a": ["b"], "b": ["a"]}
    with pytest.raises(GuestImageError, match="cycle"):
        load_order(["a"], deps.__getitem__, {"a", "b"}, set())


def test_compressed_modules_are_decompressed(tmp_path: Path) -> None:
    elf = module("virtio")
    (tmp_path / "a.ko.xz").write_bytes(lzma.compress(elf, format=lzma.FORMAT_XZ))
    (tmp_path / "b.ko.gz").write_bytes(gzip.compress(elf))
    (tmp_path / "c.ko").write_bytes(elf)
    for name in ("a.ko.xz", "b.ko.gz", "c.ko"):
        assert gi.decompress_module(tmp_path / name) == elf
    if shutil.which("zstd"):
        (tmp_path / "d.ko").write_bytes(elf)
        subprocess.run(["zstd", "-q", str(tmp_path / "d.ko"), "-o", str(tmp_path / "d.ko.zst")], check=True)
        assert gi.decompress_module(tmp_path / "d.ko.zst") == elf


# -- cpio newc ------------------------------------------------------------------------------------


def read_newc(blob: bytes) -> list[dict]:
    """A strict newc reader: magic, 4-byte alignment of names and data, the trailer last."""
    out, pos = [], 0
    while True:
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = blob[pos + 110 : pos + 110 + namesize]
        assert name.endswith(b"\0")
        pos += 110 + namesize
        assert pos % 4 == 0 or blob[pos : pos + (-pos % 4)] == b"\0" * (-pos % 4)
        pos += -pos % 4
        data = blob[pos : pos + filesize]
        pos += filesize
        pos += -pos % 4
        entry = {"name": name[:-1].decode(), "mode": fields[1], "data": data, "rdev": (fields[9], fields[10])}
        if entry["name"] == "TRAILER!!!":
            assert pos == len(blob)
            return out
        out.append(entry)


def test_cpio_newc_round_trips_files_dirs_symlinks_and_device_nodes() -> None:
    entries = [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF" + b"x" * 13),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
    ]
    got = read_newc(cpio_newc(entries))
    assert [(e["name"], e["mode"], e["data"], e["rdev"]) for e in got] == [
        (e.path, e.mode, e.data, e.rdev) for e in entries
    ]


def test_cpio_newc_is_deterministic() -> None:
    entries = initramfs_entries(b"busybox", "#!/bin/sh\n", {"virtio": b"elf"})
    assert cpio_newc(entries) == cpio_newc(entries)


def test_initramfs_has_init_busybox_console_and_modules() -> None:
    init = render_init(["virtio_ring", "virtio"])
    files = {e["name"]: e for e in read_newc(cpio_newc(initramfs_entries(b"BB", init, {"virtio": b"E"})))}
    assert files["init"]["mode"] == stat.S_IFREG | 0o755
    assert files["init"]["data"].decode() == init
    assert files["bin/busybox"]["data"] == b"BB"
    assert files["bin/sh"]["mode"] & stat.S_IFLNK
    assert files["bin/sh"]["data"] == b"busybox"
    assert files["dev/console"]["rdev"] == (5, 1)
    assert files["lib/modules/virtio.ko"]["data"] == b"E"
    names = list(files)
    assert names.index("lib/modules") < names.index("lib/modules/virtio.ko")  # parents first


# -- /init and the kernel command line -------------------------------------------------------------


def test_init_loads_modules_in_order_and_serves_echo() -> None:
    init = render_init(["virtio_ring", "virtio", "virtio_net"], port=7007)
    assert init.startswith("#!/bin/sh\n")
    assert "for m in virtio_ring virtio virtio_net; do" in init
    assert 'nc -ll -p "$PORT" -e cat' in init
    assert 'arping -U -c 2 -I eth0 "$IP"' in init
    for fragment in (
        "kvlab.ip=*",
        "kvlab.port=*",
        "kvlab.name=*",
        "kvlab.gw=*",
        "PORT=7007",
        "GW=169.254.1.1",
    ):
        assert fragment in init
    assert 'log "ready ip=$IP port=$PORT"' in init
    assert gi.READY_MARKER == "kvlab-guest: ready"  # what log "ready ..." prints


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh to syntax-check /init with")
def test_init_is_valid_posix_shell(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(render_init(["virtio_net"]))
    res = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_kernel_cmdline_carries_the_guest_parameters() -> None:
    line = kernel_cmdline("203.0.113.10", port=7008, name="vm1", extra="quiet")
    assert "console=ttyS0" in line
    assert "panic=-1" in line
    assert line.split()[-4:] == ["kvlab.ip=203.0.113.10", "kvlab.port=7008", "kvlab.name=vm1", "quiet"]
    with pytest.raises(ValueError, match="guest name"):
        kernel_cmdline("203.0.113.10", name="vm 1")


# -- apt and the cache key ---------------------------------------------------------------------------

APT_SHOW = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel.

Package: busybox-static
Source: busybox (1:1.35.0-4+deb12u1)
Version: 1:1.35.0-4+deb12u1+b1
Description-en: Standalone rescue shell with tons of builtin utilities
 BusyBox combines tiny versions of many common UNIX utilities.
"""


def test_parse_apt_show_and_the_kernel_package() -> None:
    stanzas = parse_apt_show(APT_SHOW)
    assert stanzas["busybox-static"]["Version"] == "1:1.35.0-4+deb12u1+b1"
    assert "latest Linux kernel" in stanzas["linux-image-amd64"]["Description"]
    assert kernel_package(stanzas["linux-image-amd64"]) == ("linux-image-6.1.0-56-amd64", "6.1.192-2")
    unsigned = {
        "Package": "linux-image-amd64",
        "Version": "1",
        "Depends": "linux-image-6.1.0-9-amd64-unsigned",
    }
    assert kernel_package(unsigned) == ("linux-image-6.1.0-9-amd64-unsigned", "1")
    with pytest.raises(GuestImageError, match="depends on no linux-image"):
        kernel_package({"Package": "linux-image-amd64", "Version": "1", "Depends": "initramfs-tools"})
    # alternatives, and a version that is not pinned with '=': the stanza's own version
    depends = "kmod, linux-image-6.1.0-9-amd64 (>= 6.1)"
    loose = {"Package": "linux-image-amd64", "Version": "2", "Depends": depends}
    assert kernel_package(loose) == ("linux-image-6.1.0-9-amd64", "2")


def test_parse_apt_show_takes_the_first_stanza_and_any_field_case() -> None:
    text = APT_SHOW + "\npackage: busybox-static\nversion: 9\n"
    assert parse_apt_show(text)["busybox-static"]["Version"] == "1:1.35.0-4+deb12u1+b1"
    assert parse_apt_show("package: x\nversion: 1\n")["x"]["Version"] == "1"
    assert parse_apt_show("") == {}


def test_cache_key_covers_packages_init_and_modules() -> None:
    pk = {"linux-image-6.1.0-56-amd64": "6.1.192-2", "busybox-static": "1:1.35.0-4+deb12u1+b1"}
    key = cache_key(pk, "init", ["virtio_net"])
    assert key.startswith("6.1.0-56-amd64-")
    assert "/" not in key
    assert key == cache_key(dict(reversed(pk.items())), "init", ["virtio_net"])
    assert key != cache_key({**pk, "busybox-static": "1:1.36.0-1"}, "init", ["virtio_net"])
    assert key != cache_key(pk, "init2", ["virtio_net"])
    assert key != cache_key(pk, "init", ["virtio_net", "virtio_blk"])


def test_apt_fingerprint_changes_when_lists_change(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_Packages").write_text("a")
    before = gi.apt_fingerprint([lists])
    assert before == gi.apt_fingerprint([lists])
    (lists / "deb.debian.org_Packages").write_text("ab")
    assert gi.apt_fingerprint([lists]) != before


def fake_cached_image(root: Path, key: str, packages: dict[str, str]) -> Path:
    d = root / key
    d.mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"K" * 10)
    (d / "initrd.gz").write_bytes(b"I" * 5)
    manifest = {
        "key": key,
        "packages": packages,
        "kernel": "vmlinuz",
        "initrd": "initrd.gz",
        "modules": ["virtio"],
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_a_cached_image_is_returned_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packages = {"linux-image-6.1.0-56-amd64": "6.1.192-2", "busybox-static": "1:1.35.0-4+deb12u1+b1"}
    key = cache_key(packages, gi._INIT_TEMPLATE, gi.GUEST_MODULES)
    fake_cached_image(tmp_path, key, packages)
    monkeypatch.setenv("KVLAB_IMAGE_CACHE", str(tmp_path))
    monkeypatch.setattr(gi, "_require_tools", lambda: None)
    monkeypatch.setattr(gi, "resolve_packages", lambda memo=None: dict(packages))
    monkeypatch.setattr(gi, "_build", lambda *a, **k: pytest.fail("must not build"))
    img = gi.ensure_image()
    assert isinstance(img, GuestImage)
    assert (img.key, img.packages, img.modules, img.size) == (key, packages, ("virtio",), 15)


def test_offline_falls_back_to_the_newest_cached_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cached_image(tmp_path, "6.1.0-50-amd64-0000", {"linux-image-6.1.0-50-amd64": "6.1.176-1"})

    def no_apt(memo: Path | None = None) -> dict[str, str]:
        raise GuestImageError("apt knows no package 'linux-image-amd64'", missing=["linux-image-amd64"])

    monkeypatch.setattr(gi, "_require_tools", lambda: None)
    monkeypatch.setattr(gi, "resolve_packages", no_apt)
    assert gi.ensure_image(cache_dir=tmp_path).key == "6.1.0-50-amd64-0000"
    with pytest.raises(GuestImageError, match="linux-image-amd64") as err:
        gi.ensure_image(cache_dir=tmp_path / "empty")
    assert err.value.missing == ["linux-image-amd64"]
    assert isinstance(err.value, LabError)


def test_missing_apt_tools_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gi.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(GuestImageError, match="apt-get") as err:
        gi.ensure_image(cache_dir=tmp_path)
    assert any("dpkg-deb" in m for m in err.value.missing)


# -- PVH: the uncompressed kernel inside the bzImage ---------------------------------------------------


def test_extract_vmlinux_finds_the_compressed_elf_in_a_bzimage() -> None:
    elf = make_elf({".text": b"\x90" * 64}, notes=[(b"Xen", 18, b"\0\0\0\x01")])
    for compressed in (lzma.compress(elf, format=lzma.FORMAT_XZ), gzip.compress(elf)):
        bzimage = b"MZ setup code \xfd7zXZ\x00 (a magic by chance) " + compressed + b"\0" * 32
        assert extract_vmlinux(bzimage) == elf
    with pytest.raises(GuestImageError, match="no xz/gzip/zstd"):
        extract_vmlinux(b"MZ" + b"\0" * 100)


def test_has_pvh_entry_looks_for_the_xen_phys32_entry_note() -> None:
    assert has_pvh_entry(make_elf({".text": b""}, notes=[(b"Linux", 6, b"x"), (b"Xen", 18, b"\0" * 4)]))
    assert not has_pvh_entry(make_elf({".text": b""}, notes=[(b"Xen", 6, b"linux\0")]))
    assert not has_pvh_entry(make_elf({".text": b""}))


# -- the QEMU command line ------------------------------------------------------------------------------

IMAGE = GuestImage(Path("/cache/k/vmlinuz"), Path("/cache/k/initrd.gz"), "k", {})
SPEC = GuestSpec(name="vm1", ip="203.0.113.10", mac="52:54:00:cb:00:0a", tap="cali0123456789a")


def test_qemu_argv_is_tcg_tap_virtio_without_option_rom() -> None:
    argv = qemu_argv(IMAGE, SPEC, serial_log=Path("/r/serial.log"), qmp_socket=Path("/r/qmp.sock"))
    joined = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-m") + 1] == "128"
    assert "-netdev tap,id=net0,ifname=cali0123456789a,script=no,downscript=no" in joined
    assert "-device virtio-net-pci,netdev=net0,mac=52:54:00:cb:00:0a,romfile=" in joined
    assert "-qmp unix:/r/qmp.sock,server=on,wait=off" in joined
    assert "-serial file:/r/serial.log" in joined
    assert "-no-reboot" in argv
    assert "kvlab.ip=203.0.113.10" in argv[argv.index("-append") + 1]
    assert "-incoming" not in argv


def test_a_migration_target_is_the_same_command_line_plus_incoming() -> None:
    kw = {"serial_log": Path("/r/s.log"), "qmp_socket": Path("/r/q.sock")}
    source = qemu_argv(IMAGE, SPEC, **kw)
    target = qemu_argv(IMAGE, SPEC, incoming="tcp:198.18.0.1:4444", **kw)
    assert target == [*source, "-incoming", "tcp:198.18.0.1:4444"]


def test_guest_spec_rejects_long_tap_names_and_odd_macs() -> None:
    with pytest.raises(ValueError, match="1-15 characters"):
        GuestSpec(name="vm1", ip="203.0.113.10", mac="52:54:00:cb:00:0a", tap="cali0123456789ab")
    with pytest.raises(ValueError, match="MAC"):
        GuestSpec(name="vm1", ip="203.0.113.10", mac="52-54-00-CB-00-0A", tap="tap0")


# -- QMP against a fake server ----------------------------------------------------------------------------


# what QEMU 7.2 sends on connecting (`package` is the distribution's build, e.g. Debian's)
GREETING = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "Debian 1:7.2+dfsg-7"},
        "capabilities": ["oob"],
    }
}


@pytest.fixture
def fake_qmp(tmp_path: Path) -> Iterator[tuple[Path, list[dict]]]:
    """A QMP server that greets, answers commands (with events interleaved) and records requests."""
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[dict] = []

    def event(name: str, secs: int, usecs: int) -> bytes:
        ts = {"seconds": secs, "microseconds": usecs}
        return json.dumps({"event": name, "data": {}, "timestamp": ts}).encode() + b"\n"

    def requests(conn: socket.socket) -> Iterator[dict]:
        """The JSON objects the client sends (QMP needs no newline between them)."""
        decoder, buf = json.JSONDecoder(), ""
        while chunk := conn.recv(4096):
            buf += chunk.decode()
            while buf.strip():
                try:
                    obj, end = decoder.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break  # the rest of it is still on its way
                buf = buf.lstrip()[end:]
                yield obj

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(json.dumps(GREETING).encode() + b"\n")
            for req in requests(conn):
                seen.append(req)
                cmd, rid = req["execute"], req.get("id")
                if cmd == "query-status":
                    conn.sendall(event("RESUME", 100, 250))  # an event before the reply
                    conn.sendall(json.dumps({"return": {"status": "running"}, "id": rid}).encode() + b"\n")
                elif cmd == "migrate":
                    conn.sendall(json.dumps({"return": {}, "id": rid}).encode() + b"\n")
                    conn.sendall(event("STOP", 101, 500000))
                elif cmd == "boom":
                    err = {"class": "CommandNotFound", "desc": "The command boom has not been found"}
                    conn.sendall(json.dumps({"error": err, "id": rid}).encode() + b"\n")
                else:
                    conn.sendall(json.dumps({"return": {}, "id": rid}).encode() + b"\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, seen
    server.close()
    t.join(timeout=5)


def test_qmp_client_negotiates_executes_and_records_events(fake_qmp: tuple[Path, list[dict]]) -> None:
    path, seen = fake_qmp
    with QMPClient(path, timeout=5) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 7
        assert seen[0]["execute"] == "qmp_capabilities"
        assert qmp.status() == "running"
        assert [e.name for e in qmp.events] == ["RESUME"]
        assert qmp.events[0].timestamp == pytest.approx(100.00025)
        qmp.execute("migrate-set-parameters", {"downtime-limit": 300})
        assert seen[-1] == {
            "execute": "migrate-set-parameters",
            "id": seen[-1]["id"],
            "arguments": {"downtime-limit": 300},
        }
        since = len(qmp.events)
        assert qmp.execute("migrate", {"uri": "tcp:198.18.0.1:4444"}) == {}
        stop = qmp.wait_event("STOP", timeout=5, since=since)
        assert stop.timestamp - qmp.events[0].timestamp == pytest.approx(1.49975)
        with pytest.raises(QMPError, match="CommandNotFound") as err:
            qmp.execute("boom")
        assert err.value.error_class == "CommandNotFound"
        assert len({r["id"] for r in seen[1:]}) == len(seen) - 1  # every command has its own id


def serve_once(
    path: Path, hang_up: threading.Event | None = None, before: Sequence[dict] = ()
) -> threading.Thread:
    """A QMP server that greets, accepts the capabilities negotiation and hangs up (at once, or
    when `hang_up` is set): a QEMU that exits. `before`: messages sent ahead of the greeting."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn, contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up
                for msg in before:
                    conn.sendall(json.dumps(msg).encode() + b"\n")
                conn.sendall(json.dumps(GREETING).encode() + b"\n")
                conn.recv(4096)  # qmp_capabilities
                conn.sendall(b'{"return": {}}\n')
                if hang_up is not None:
                    hang_up.wait(timeout=10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_qmp_client_says_so_when_qemu_hangs_up_during_a_wait(tmp_path: Path) -> None:
    """A QEMU that exits while kvlab waits for its RESUME is reported at once, not at the timeout."""
    hang_up = threading.Event()
    t = serve_once(tmp_path / "qmp.sock", hang_up)
    with QMPClient(tmp_path / "qmp.sock", timeout=5) as qmp:
        started = time.monotonic()
        hang_up.set()
        with pytest.raises(QemuError, match="closed the QMP connection"):
            qmp.wait_event("RESUME", timeout=30)
        assert time.monotonic() - started < 5
        with pytest.raises(QemuError, match="closed the QMP connection"):
            qmp.execute("query-status")
    t.join(timeout=5)


def test_events_qemu_sends_ahead_of_its_greeting_are_kept_not_taken_for_it(tmp_path: Path) -> None:
    """QEMU 7.2 can emit an event on a connection before its greeting (the monitor's OPENED
    handler had not run yet): the client reads past it, negotiates, and keeps the event."""
    early = {"event": "NIC_RX_FILTER_CHANGED", "data": {"path": "/machine/peripheral/net0"},
             "timestamp": {"seconds": 100, "microseconds": 5}}  # fmt: skip
    hang_up = threading.Event()
    t = serve_once(tmp_path / "qmp.sock", hang_up, before=[early, early])
    with QMPClient(tmp_path / "qmp.sock", timeout=5) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 7
        assert [e.name for e in qmp.events] == ["NIC_RX_FILTER_CHANGED"] * 2
        assert qmp.events[0].timestamp == pytest.approx(100.000005)
        hang_up.set()
    t.join(timeout=5)


def test_a_first_message_that_is_neither_event_nor_greeting_is_refused(tmp_path: Path) -> None:
    t = serve_once(tmp_path / "qmp.sock", before=[{"return": {}}])
    with pytest.raises(QemuError, match="Did not understand Greeting"):
        QMPClient(tmp_path / "qmp.sock", timeout=5).connect()
    t.join(timeout=5)


def test_a_qmp_client_can_connect_again_after_closing(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    qmp = QMPClient(path, timeout=5)
    for _ in range(2):
        path.unlink(missing_ok=True)
        hang_up = threading.Event()
        t = serve_once(path, hang_up)
        with qmp:
            hang_up.set()
            with pytest.raises(QemuError, match="closed the QMP connection"):
                qmp.wait_event("RESUME", timeout=10)
        t.join(timeout=5)


def test_qmp_client_reports_a_qemu_that_hangs_up_right_after_greeting(tmp_path: Path) -> None:
    t = serve_once(tmp_path / "qmp.sock")
    qmp = QMPClient(tmp_path / "qmp.sock", timeout=5)
    with pytest.raises(QemuError, match="closed the QMP connection"):
        qmp.connect().execute("query-status")  # at connect() or at the first command: a race
    qmp.close()
    t.join(timeout=5)


def test_qmp_client_connect_has_a_deadline_and_no_socket_is_an_oserror(tmp_path: Path) -> None:
    """Nobody listening: OSError (QemuGuest.start retries it). Listening but never greeting (a
    stopped QEMU): QemuError after the client's timeout, not a hang."""
    with pytest.raises(FileNotFoundError):
        QMPClient(tmp_path / "none.sock", timeout=1).connect()
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        started = time.monotonic()
        client = QMPClient(path, timeout=0.5)
        with pytest.raises(QemuError, match="timed out waiting for the QMP greeting"):
            client.connect()
        assert 0.4 < time.monotonic() - started < 3
        client.close()  # idempotent after a failed connect


# -- BIRD in the guest (nested nodes) --------------------------------------------------------------


LDD_OUTPUT = """\tlinux-vdso.so.1 (0x00007ffd0b1e4000)
\tlibreadline.so.8 => /lib/x86_64-linux-gnu/libreadline.so.8 (0x00007f3a1c6a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3a1c4bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3a1c71e000)
"""


def test_ldd_libraries_are_the_resolved_paths_and_the_loader_not_the_vdso() -> None:
    assert gi.ldd_libraries(LDD_OUTPUT) == [
        "/lib/x86_64-linux-gnu/libreadline.so.8",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    with pytest.raises(GuestImageError, match=r"/usr/sbin/birdc needs libtinfo\.so\.6"):
        gi.ldd_libraries("\tlibtinfo.so.6 => not found\n", "/usr/sbin/birdc")


def test_initramfs_programs_get_their_parent_directories_first() -> None:
    init = render_init(["virtio"])
    programs = {
        "usr/sbin/bird": b"B",
        "lib64/ld-linux-x86-64.so.2": b"L",
        "lib/x86_64-linux-gnu/libc.so.6": b"C",
    }
    files = {e["name"]: e for e in read_newc(cpio_newc(initramfs_entries(b"BB", init, {}, programs)))}
    names = list(files)
    for path, data in programs.items():
        assert files[path]["data"] == data
        assert files[path]["mode"] == stat.S_IFREG | 0o755
        parent = path.rsplit("/", 1)[0]
        assert files[parent]["mode"] == stat.S_IFDIR | 0o755
        assert names.index(parent) < names.index(path)
    assert names.count("usr/sbin") == 1


def test_init_starts_bird_and_its_relay_only_for_a_nested_node() -> None:
    init = render_init(["virtio_net"])
    block = init[init.index("if [ -f /etc/kvlab/bird.conf ]") : init.index('log "ready')]
    assert "read -r POD < /etc/kvlab/pod-ip" in block
    assert 'ip addr add "$POD/32" dev lo' in block
    assert "bird -c /etc/kvlab/bird.conf -s /run/bird.ctl" in block
    assert f"nc -ll -p {gi.BIRDCTL_PORT} -e /bin/kvlab-birdctl" in block
    assert "@" not in init  # every placeholder filled


def _relay_script() -> str:
    init = render_init(["virtio_net"])
    return init[init.index("<<'RELAY'\n") + len("<<'RELAY'\n") : init.index("RELAY\n  chmod")]


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("awk") is None, reason="needs sh and awk")
def test_the_guest_relay_speaks_birds_control_protocol(tmp_path: Path) -> None:
    """The guest's relay turns what `birdc -v` prints back into BIRD's control protocol: the
    greeting, continuation lines with one leading space, a final line where birdc drops 0000.
    `birdc` here is a stand-in printing a real BIRD 1.6.8's `birdc -v` output (captured)."""
    (tmp_path / "relay").write_text(_relay_script())
    fake = tmp_path / "bin" / "birdc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'echo "0001 BIRD 1.6.8 ready."\n'
        '[ "$1" = -r ] && echo "0016 Access restricted"\n'
        'case "$*" in\n'
        '  *" down"*) if [ "$1" = -r ]; then echo "8007 Access denied"; else echo "0024 Shutdown"; fi ;;\n'
        '  *"show status"*) echo "1000-BIRD 1.6.8"; echo "0013 Daemon is up and running" ;;\n'
        '  *"show route all"*) echo "1007-198.51.100.0/26    blackhole [s1 10:11:25] * (200)";'
        ' printf "1008-\\tType: static unicast univ\\n" ;;\n'
        '  *"show protocols all"*) echo "1002-s1       Static   master   up     10:11:25    ";'
        ' echo "1006-  Preference:     200"; echo "       Input filter:   ACCEPT"; echo "     " ;;\n'
        '  *) echo "8001 Network not in table" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    commands = "show route all\nshow protocols all\nshow route for 10.0.0.1\ndown\n"
    res = subprocess.run(
        ["sh", str(tmp_path / "relay")],
        input=commands,
        capture_output=True,
        text=True,
        env={"PATH": f"{fake.parent}:/usr/bin:/bin"},
        check=False,
        timeout=10,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "0001 BIRD 1.6.8 ready."
    from harness.birdc import parse_protocols, parse_reply_lines, parse_routes

    replies, current = [], []
    for line in lines[1:]:
        current.append(line)
        if len(line) >= 5 and line[:4].isdigit() and line[4] == " ":
            replies.append(parse_reply_lines(current))
            current = []
    assert current == []
    assert len(replies) == 4
    routes = parse_routes(replies[0])
    assert [(r.prefix, r.route_type, r.protocol) for r in routes] == [("198.51.100.0/26", "blackhole", "s1")]
    assert replies[0][-1] == (0, "")
    (proto,) = parse_protocols(replies[1])
    assert (proto.name, proto.proto, proto.state) == ("s1", "Static", "up")
    assert (1006, "  Input filter:   ACCEPT") in replies[1]  # as "1006-  Preference" is indented
    assert replies[2] == [(8001, "Network not in table")]
    assert replies[3] == [(8007, "Access denied")]  # read-only: birdc -r


def test_nested_initrd_appends_the_nodes_files(tmp_path: Path) -> None:
    base = tmp_path / "initrd.gz"
    gz = gzip.compress(cpio_newc([CpioEntry("init", stat.S_IFREG | 0o755, b"x")]))
    base.write_bytes(gz + b"\0" * ((1 - len(gz)) % 4))  # a length the second archive must be aligned after
    img = GuestImage(kernel=base, initrd=base, key="k", packages={"bird": "1.6.8-2.1+b1"})
    out = gi.nested_initrd(img, "router id 203.0.113.10;\n", "198.51.100.1", tmp_path / "vm" / "nested.gz")
    data = out.read_bytes()
    first = base.read_bytes()
    assert data.startswith(first)
    assert len(first) % 4 == 1
    second = data[len(first) + (-len(first) % 4) :]
    files = {e["name"]: e["data"] for e in read_newc(gzip.decompress(second))}
    assert files[gi.NESTED_CONFIG] == b"router id 203.0.113.10;\n"
    assert files[gi.NESTED_POD] == b"198.51.100.1\n"
    assert list(files)[:2] == ["etc", "etc/kvlab"]


def test_nested_initrd_refuses_an_image_without_bird_and_a_bad_pod_address(tmp_path: Path) -> None:
    base = tmp_path / "initrd.gz"
    base.write_bytes(b"I")
    old = GuestImage(kernel=base, initrd=base, key="old", packages={"busybox-static": "1"})
    with pytest.raises(GuestImageError, match="has no BIRD") as err:
        gi.nested_initrd(old, "", "198.51.100.1", tmp_path / "out.gz")
    assert err.value.missing == ["bird"]
    img = replace(old, packages={"bird": "1.6.8"})
    with pytest.raises(ValueError, match=r"198\.51\.100\.1; reboot"):
        gi.nested_initrd(img, "", "198.51.100.1; reboot", tmp_path / "out.gz")
    assert not (tmp_path / "out.gz").exists()


def test_nested_user_data_is_a_script_writing_the_nodes_files() -> None:
    conf = "router id 203.0.113.10;\nprotocol device { scan time 2; }\nfilter f { if $x then accept; }\n"
    text = gi.nested_user_data("red-n1", conf, "198.51.100.1")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1].startswith(f"{gi.NESTED_MARKER} red-n1:")  # what the guest's /init looks for
    start = "<<'KVLAB_BIRD_CONF'\n"
    body = text[text.index(start) + len(start) : text.index("KVLAB_BIRD_CONF\necho")]
    assert body == conf  # quoted here-document: written verbatim
    assert f"> /{gi.NESTED_CONFIG} <<" in text
    assert f"echo 198.51.100.1 > /{gi.NESTED_POD}" in text
    init = render_init(["virtio_blk"])
    assert f"grep -q '^{gi.NESTED_MARKER}' /mnt/cidata/user-data" in init


def test_nested_user_data_refuses_what_would_break_the_script() -> None:
    with pytest.raises(ValueError, match="here-document"):
        gi.nested_user_data("red-n1", "router id 1.2.3.4;\nKVLAB_BIRD_CONF\nreboot\n", "198.51.100.1")
    with pytest.raises(ValueError, match="nested node name"):
        gi.nested_user_data("red n1;reboot", "", "198.51.100.1")
    with pytest.raises(ValueError, match="1; reboot"):
        gi.nested_user_data("red-n1", "", "198.51.100.1; reboot")
