"""The pure parts of harness.runtime.containerlab.images: apt sources, the mirror choice, the context hash."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from harness.runtime.containerlab import docker as dk
from harness.runtime.containerlab.images import (
    KEYRING,
    AptSource,
    base_sources,
    context_hash,
    debian_mirror,
    parse_deb822_sources,
    parse_one_line_sources,
    read_apt_sources,
)

DEB822 = """\
# the stock bookworm file
Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGQ...
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_one_line_format() -> None:
    text = """\
# comment
deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] https://m.example/debian bookworm main non-free
deb-src http://m.example/debian bookworm main
deb [ trusted=yes ] file:/srv/repo ./   # a flat repository
deb http://security.example/debian-security bookworm-security main

not a source line
"""
    got = parse_one_line_sources(text)
    assert [s.types for s in got] == [("deb",), ("deb-src",), ("deb",), ("deb",)]
    assert got[0] == AptSource(("deb",), ("https://m.example/debian",), ("bookworm",), ("main", "non-free"))
    assert got[0].options == {"arch": "amd64", "signed-by": "/etc/apt/keyrings/x.gpg"}
    assert got[0].signed_by == "/etc/apt/keyrings/x.gpg"
    assert got[2].uris == ("file:/srv/repo",)
    assert got[2].suites == ("./",)
    assert got[2].components == ()
    assert got[2].options == {"trusted": "yes"}


def test_deb822_format() -> None:
    got = parse_deb822_sources(DEB822)
    assert len(got) == 2  # the `Enabled: no` stanza is left out
    assert got[0].types == ("deb", "deb-src")
    assert got[0].uris == ("http://mirror.example/debian/",)
    assert got[0].suites == ("bookworm", "bookworm-updates")
    assert got[0].components == ("main", "contrib")
    assert got[0].signed_by == KEYRING
    inline = got[1].signed_by or ""  # a folded field, " ." being an empty line
    assert inline.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGQ")
    assert got[1].suites == ("bookworm-security",)


def test_deb822_field_names_are_case_insensitive_and_comments_anywhere() -> None:
    got = parse_deb822_sources(
        "types: deb\n# note\nuris: http://a.example/debian\nsuites: trixie\ncomponents: main\n"
    )
    assert got == [AptSource(("deb",), ("http://a.example/debian",), ("trixie",), ("main",))]


def test_read_apt_sources_reads_list_and_sources_files_only(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://one.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "extra.list").write_text("deb http://two.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "x.list.disabled").write_text(
        "deb http://off.example/debian bookworm main\n"
    )
    uris = [s.uris[0] for s in read_apt_sources(tmp_path)]
    assert uris == [
        "http://one.example/debian",
        "http://mirror.example/debian/",
        "http://mirror.example/debian-security",
        "http://two.example/debian",
    ]


def test_read_apt_sources_without_any_file(tmp_path: Path) -> None:
    assert read_apt_sources(tmp_path) == []


def test_debian_mirror_prefers_the_suite_then_any_debian_release() -> None:
    sources = parse_deb822_sources(DEB822)
    assert debian_mirror(sources, "bookworm") == "http://mirror.example/debian"
    trixie_host = parse_one_line_sources(
        "deb http://security.example/debian-security trixie-security main\n"
        "deb https://cloud.example/apt cloud-sdk main\n"
        "deb http://m.example/debian trixie main\n"
    )
    assert debian_mirror(trixie_host, "bookworm") == "http://m.example/debian"
    ubuntu = parse_one_line_sources("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert debian_mirror(ubuntu, "bookworm") is None
    assert debian_mirror(parse_one_line_sources("deb file:/srv/debian bookworm main\n")) is None


def test_base_sources_keeps_the_suite_updates_and_security_entries() -> None:
    sources = [
        *parse_deb822_sources(DEB822),
        *parse_one_line_sources("deb https://cloud.example/apt cloud-sdk-bookworm main\n"),
    ]
    text = base_sources(sources, "bookworm", "http://unused.example/debian")
    stanzas = text.strip().split("\n\n")
    assert stanzas[0] == (
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        f"Components: main contrib\nSigned-By: {KEYRING}"
    )
    # an inline key is not carried over: the base image's keyring covers the Debian archive
    assert stanzas[1] == (
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main"
    )
    assert len(stanzas) == 2


def test_base_sources_falls_back_to_the_mirror() -> None:
    text = base_sources([], "bookworm", "http://deb.example/debian")
    assert text == (
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\nComponents: main\n"
        f"Signed-By: {KEYRING}\n"
    )


def test_context_hash_follows_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    first = context_hash(tmp_path)
    assert first == context_hash(tmp_path)
    (tmp_path / "entrypoint").write_text("")
    second = context_hash(tmp_path)
    assert second != first
    (tmp_path / "entrypoint").rename(tmp_path / "other")
    assert context_hash(tmp_path) != second


def test_tor_context_has_a_dockerfile_with_the_documented_contract() -> None:
    from harness.runtime.containerlab.images import TOR_CONTEXT

    text = (TOR_CONTEXT / "Dockerfile").read_text()
    assert "ARG BASE=debian:bookworm-slim" in text
    assert "FROM ${BASE}" in text
    assert "HEALTHCHECK" in text
    assert '"-c", "/etc/bird/bird.conf", "-s", "/run/bird/bird.ctl"' in text


def test_owner_gone() -> None:
    me = {
        dk.LABEL_HOST: socket.gethostname(),
        dk.LABEL_PID: str(os.getpid()),
        dk.LABEL_START: dk._start_time(os.getpid()),
    }
    assert not dk._owner_gone(me)
    assert dk._owner_gone({**me, dk.LABEL_START: "1"})  # the pid was reused
    assert dk._owner_gone({**me, dk.LABEL_PID: "not-a-pid"})
    assert not dk._owner_gone({**me, dk.LABEL_HOST: "elsewhere", dk.LABEL_PID: "0"})
