"""The lab's SSH key (authorized in every VM by cloud-init) and the lab-local known_hosts.

Commands reach a guest over SSH through the lab's first external host
(harness.runtime.containerlab.guestssh); its host key goes to `<run dir>/ssh/known_hosts`, never
to ~/.ssh.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path
from typing import Any

from harness.runtime.containerlab.plan import RenderError
from harness.safefile import check_under, replace_file, write_under

SSH_KEY_BITS = 3072
SSH_KEY_FILE = "ssh/id_rsa"  # in the render directory, with SSH_KEY_FILE + ".pub"
SSH_PORT = 22


def known_hosts_path(run_dir: Path) -> Path:
    """The lab-local known_hosts the guests' host keys are recorded in (never ~/.ssh)."""
    return run_dir / "ssh" / "known_hosts"


def _public_line(key: Any, comment: str) -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def lab_ssh_key(out: Path, lab: str, given: Path | None = None) -> tuple[str, str, str, list[str]]:
    """The lab's SSH key pair: `given` (a private key file, used where it is), else `out`/ssh/id_rsa
    when it already holds a key, else a new RSA key written there (0600). Writes the public half
    into `out`/ssh/. Returns (private key as recorded: relative to `out` or absolute, public key
    file relative to `out`, the OpenSSH public key line, the rendered file names it wrote)."""
    import paramiko

    ssh_dir = out / "ssh"
    check_under(out, [SSH_KEY_FILE])  # a symlinked ssh/ would take the keys elsewhere
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    comment = f"kvlab-{lab}"
    if given is not None:
        path = Path(given).resolve()
        try:
            key = paramiko.PKey.from_path(path)
        except Exception as e:  # missing, encrypted, not a key, or a type paramiko does not know
            raise RenderError(
                f"SSH key {path}: cannot use it ({type(e).__name__}: {e}); give an unencrypted "
                "private key (RSA, ECDSA or Ed25519)"
            ) from None
        private, public = str(path), f"ssh/{path.name}.pub"
        written = [public]
    else:
        path = out / SSH_KEY_FILE
        key = None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(path).st_mode):  # a symlink, FIFO, ...: replaced below
                try:
                    key = paramiko.RSAKey.from_private_key_file(str(path))
                except (OSError, paramiko.SSHException, ValueError):
                    key = None  # unreadable: replaced below
        if key is None:
            key = paramiko.RSAKey.generate(SSH_KEY_BITS)
            text = io.StringIO()
            key.write_private_key(text)
            replace_file(path, text.getvalue().encode(), 0o600)  # replaces, never writes through
        else:
            os.chmod(path, 0o600)  # a regular file (lstat above)
        private, public = SSH_KEY_FILE, SSH_KEY_FILE + ".pub"
        written = [private, public]
    line = _public_line(key, comment)
    write_under(out, public, line + "\n")
    return private, public, line, written


def private_key_path(render_dir: Path, manifest: dict[str, Any]) -> Path:
    """The lab's SSH private key from a manifest's `guest_ssh` (relative paths are the render dir's)."""
    return render_dir / manifest["guest_ssh"]["private_key"]  # an absolute path stays absolute
