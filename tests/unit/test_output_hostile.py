"""Output directories a user names (`kvlab render --out`, `kvlab diag --out`, the pytest plugin's
diagnostics) with symlinks planted in them beforehand: kvlab runs as root, so nothing it writes
may go through them, and a refused directory is refused before anything is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from labfiles import LABS
from nonblocking import answer_within

from harness import cli, diagnostics
from harness.errors import UnsafePathError
from harness.lab import Lab
from harness.labfile import load_lab
from harness.safefile import check_under, fresh_dir, write_under
from harness.timeline import draw_pending, write_artifacts


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_text("precious\n")
    return v


def test_a_planted_symlink_at_the_file_is_replaced_not_written_through(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "out"
    (out / "bird").mkdir(parents=True)
    (out / "bird" / "tor1.conf").symlink_to(victim)
    path = write_under(out, "bird/tor1.conf", "router id 1.2.3.4;\n")
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink()
    assert path.read_text() == "router id 1.2.3.4;\n"


def test_a_symlinked_directory_on_the_way_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "bird").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="bird is a symlink"):
        check_under(out, ["manifest.json", "bird/tor1.conf"])
    with pytest.raises(UnsafePathError, match="bird is a symlink"):
        write_under(out, "bird/tor1.conf", "x")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("rel", ["../x", "/etc/x", "a/../../x", ""])
def test_paths_leaving_the_output_directory_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePathError):
        write_under(tmp_path / "out", rel, "x")
    assert not (tmp_path / "x").exists()


def test_a_fresh_directory_is_never_one_planted_before(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle-2").symlink_to(victim.parent, target_is_directory=True)
    made = fresh_dir(tmp_path, "bundle")
    assert made == tmp_path / "bundle-3"
    assert made.is_dir()
    assert not made.is_symlink()


@pytest.mark.parametrize("runtime", ["netns", "containerlab"])
def test_render_replaces_planted_symlinks_and_refuses_a_symlinked_directory_before_writing(
    tmp_path: Path, victim: Path, runtime: str
) -> None:
    lab = str(LABS / "default.yml")
    out = tmp_path / "out"
    (out / "bird").mkdir(parents=True)
    (out / "bird" / "tor1.conf").symlink_to(victim)
    assert cli.main(["render", lab, "--runtime", runtime, "--out", str(out)]) == 0
    assert victim.read_text() == "precious\n"
    assert "router id" in (out / "bird" / "tor1.conf").read_text()

    out2, elsewhere = tmp_path / "out2", tmp_path / "elsewhere"
    out2.mkdir()
    elsewhere.mkdir()
    (out2 / "bird").symlink_to(elsewhere, target_is_directory=True)
    assert cli.main(["render", lab, "--runtime", runtime, "--out", str(out2)]) == 2
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in out2.iterdir()] == ["bird"], "a refused output directory was half-written"


def test_containerlab_ssh_keys_are_not_written_through_planted_symlinks(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "out"
    (out / "ssh").mkdir(parents=True)
    (out / "ssh" / "id_rsa").symlink_to(victim)
    (out / "ssh" / "id_rsa.pub").symlink_to(victim)
    argv = ["render", str(LABS / "default.yml"), "--runtime", "containerlab", "--out", str(out)]
    assert cli.main(argv) == 0
    assert victim.read_text() == "precious\n"
    key = out / "ssh" / "id_rsa"
    assert not key.is_symlink()
    assert "PRIVATE KEY" in key.read_text()
    assert key.stat().st_mode & 0o777 == 0o600
    assert (out / "ssh" / "id_rsa.pub").read_text().startswith("ssh-rsa ")


def test_a_diagnostics_bundle_is_a_directory_of_its_own(
    run_root: Path, tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle directory planted at the name the next bundle will get (lab and timestamp are
    predictable) is not written into: the bundle gets a directory of its own."""
    monkeypatch.setattr(diagnostics.time, "strftime", lambda fmt, *a: "20260101-000000")
    lab = Lab(load_lab(LABS / "default.yml"), name="diagtest")
    out = tmp_path / "diag"
    out.mkdir()
    (out / "diagtest-20260101-000000").symlink_to(victim.parent, target_is_directory=True)
    bundle = diagnostics.collect(lab, out)
    assert bundle == out / "diagtest-20260101-000000-2"
    assert (bundle / "errors.txt").exists()  # the lab is not up: what could not be collected
    assert sorted(p.name for p in victim.parent.iterdir()) == ["diag", "victim"]


RECORD = {
    "vm": "vm1",
    "events": [
        {"t": 1.0, "source": "harness", "kind": "phase", "phase": "prepare"},
        {"t": 1.2, "source": "harness", "kind": "phase", "phase": "completed"},
    ],
}


def test_timeline_artifacts_replace_planted_symlinks(tmp_path: Path, victim: Path) -> None:
    """`kvlab migrate --artifacts DIR` and the plugin's timelines: a symlink planted at the
    record's or the drawing's name (both predictable: lab, VM, nodes, time) is replaced."""
    out = tmp_path / "timelines"
    out.mkdir()
    for suffix in (".json", ".png"):
        (out / f"vm1{suffix}").symlink_to(victim)
    json_path, png_path = write_artifacts(RECORD, out, "vm1")
    assert victim.read_text() == "precious\n"
    assert not json_path.is_symlink()
    assert json.loads(json_path.read_text()) == RECORD
    assert not png_path.is_symlink()
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_pending_timelines_are_drawn_from_regular_files_only(tmp_path: Path, victim: Path) -> None:
    """Drawing what a session left: a FIFO or a symlink named like a record is not read (a FIFO
    would hang the end of the session), and says so."""
    out = tmp_path / "timelines"
    out.mkdir()
    os.mkfifo(out / "fifo.json")
    (out / "link.json").symlink_to(victim)
    _, png_path = write_artifacts(RECORD, out, "vm1", draw=False)
    drawn, failed = answer_within(lambda: draw_pending(out))
    assert drawn == [png_path]
    assert sorted(f.split(": ")[0] for f in failed) == [str(out / "fifo.json"), str(out / "link.json")]
    assert all("not drawn" in f for f in failed)


@pytest.mark.parametrize("router", ["../../etc", "tor1/x", "Tor1", "tor1;id", ""])
def test_docker_tor_names_are_names_before_anything_is_made(router: str) -> None:
    """Each Docker ToR's name becomes a directory under the lab's temporary run root (its
    bird.conf) and part of a container name: a name that is no name is refused before Docker is
    asked for anything (no client is given: reaching Docker would fail differently)."""
    from harness.runtime.containerlab.docker import docker_lab

    with pytest.raises(ValueError, match="router names"), docker_lab("img", ["tor2", router], lambda *_: ""):
        pass
