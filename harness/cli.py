"""`kvlab`: the command-line front-end over the harness library.

Exit codes: 0 success; 1 the lab did not do what was asked (a wait timed out, a command
failed); 2 bad input (an invalid lab file, an unknown name, a missing prerequisite); 130
interrupted. Every error is one line on stderr (a lab file's issues: one line each; a failed
preflight: the list of what is missing), never a traceback: an unexpected exception prints
`kvlab: internal error: ...` and exits 1, with the traceback when $KVLAB_DEBUG is set.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import InputError, KvlabError, LabError, PreflightError, SpecError, WaitTimeout
from harness.state import check_lab_name

DEBUG_ENV = "KVLAB_DEBUG"  # set (non-empty): an internal error prints its traceback too


class UsageError(InputError):
    """Bad command-line input (exit 2)."""


def resolve_running(arg: str | None, option: str = "--lab") -> str:
    """A running lab's name from a name, a lab file, or (none given) the only running lab."""
    from harness.instances import running_lab_names
    from harness.names import DEFAULT_LAB

    running = running_lab_names()
    if arg is None:
        if len(running) == 1:
            return running[0]
        if DEFAULT_LAB in running or not running:
            return DEFAULT_LAB
        raise UsageError(f"several labs are running ({', '.join(running)}): name one")
    if arg in running:
        return arg
    p = Path(arg)
    if p.suffix in (".yml", ".yaml") or p.is_file():
        from harness.labfile import load_lab, resolve_spec_path

        return load_lab(resolve_spec_path(arg, option)).name
    return check_lab_name(arg, option)


def attach(arg: str | None, option: str = "--lab"):  # type: ignore[no-untyped-def]
    """The running lab a command names, with what settling it took said on stderr."""
    from harness.lab import Lab

    lab = Lab.attach(resolve_running(arg, option))
    _print_notes(lab)
    return lab


def _print_notes(lab: Any) -> None:
    for note in lab.notes:
        print(f"kvlab: {note}", file=sys.stderr)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or in CI: do not squeeze tables into 80 columns
        console = Console(width=160)
    return console


# -- commands ------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from harness.diagnostics import collect
    from harness.lab import Lab
    from harness.labfile import resolve_spec_path
    from harness.progress import RichProgress
    from harness.runtime.base import RuntimeOptions

    if args.name is not None:
        check_lab_name(args.name, "--name")
    path = resolve_spec_path(args.lab)
    lab = Lab.from_file(
        path,
        name=args.name,
        runtime=args.runtime,
        options=RuntimeOptions(stack=args.stack),
        progress=RichProgress(),
        keep=args.keep_on_failure,
    )
    try:
        lab.up(replace=args.replace)
    except WaitTimeout as e:
        print(f"kvlab up: lab '{lab.name}' did not converge: {e}", file=sys.stderr)
        if args.keep_on_failure:
            out = collect(lab, Path(args.diag_dir))
            print(f"kvlab up: lab kept for inspection; diagnostics in {out}", file=sys.stderr)
        return 1
    _print_notes(lab)
    verb = "reused (already running)" if lab.reused else "up"
    sessions = lab.sessions()
    print(
        f"lab '{lab.name}' {verb}: {len(sessions)} BGP sessions Established "
        f"({len(lab.topo.entities)} namespaces, runtime {lab.runtime_name})",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(lab.status(), indent=2))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from harness.instances import down_lab, labs_to_take_down, reap_stale

    # --all: never another run root's labs (another KVLAB_RUN_DIR on this machine)
    names = labs_to_take_down() if args.all else [resolve_running(args.lab, "LAB")]
    for name in names:
        found = down_lab(name)
        print(f"lab '{name}' {'down' if found else 'was not running'}", file=sys.stderr)
    for name in reap_stale():
        print(f"reaped leftovers of crashed lab '{name}'", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.json:  # fast path: no lab loading when the state and BIRD can answer
        from harness import fastpath

        doc = fastpath.status(resolve_running(args.lab, "LAB"))
        if doc is not None:
            print(json.dumps(doc, indent=2))
            return 0
    lab = attach(args.lab, "LAB")
    status = lab.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    _print_status(status, lab)
    return 0


def _print_status(status: dict[str, Any], lab: Any) -> None:
    from rich.table import Table
    from rich.tree import Tree

    console = _console()
    tree = Tree(f"[bold]lab {status['lab']}[/] (runtime {status['runtime']})")
    for r in lab.spec.routers:
        if r.role == "tor":
            continue
        branch = tree.add(f"{r.role} [bold]{r.name}[/] AS{r.asn}")
        for h in status["hosts"]:
            if lab.spec.hosts and next(x for x in lab.spec.hosts if x.name == h["name"]).router == r.name:
                branch.add(f"host {h['name']} {h['ip']}")
    for rack in lab.spec.racks:
        tor = lab.spec.router(rack.tor)
        rb = tree.add(
            f"rack {rack.name}: tor [bold]{tor.name}[/] AS{tor.asn} {lab.topo.tor_address[tor.name]}"
        )
        for h in status["hosts"]:
            if next(x for x in lab.spec.hosts if x.name == h["name"]).router == tor.name:
                rb.add(f"host {h['name']} {h['ip']}")
        nested = {n["vm"]: n for n in status["nodes"] if "vm" in n}
        pools = {c["name"]: ", ".join(c["pools"]) for c in status["clusters"]}
        for n in status["nodes"]:
            if n["rack"] == rack.name:
                nb = rb.add(f"node [bold]{n['name']}[/] AS{n['asn']} {n['ip']} ({n['cluster']})")
                for vm in status["vms"]:
                    if vm["node"] == n["name"]:
                        vb = nb.add(f"vm {vm['name']} {vm['ip']}")
                        if vm["name"] in nested:
                            nn = nested[vm["name"]]
                            vb.add(
                                f"nested node [bold]{nn['name']}[/] AS{nn['asn']} "
                                f"(cluster {nn['cluster']}, pool {pools[nn['cluster']]})"
                            )
    console.print(tree)
    table = Table(title="BGP sessions")
    for col in ("router", "name", "peer", "state"):
        table.add_column(col)
    for s in status["sessions"]:
        style = "green" if s["state"] == "Established" else "red"
        table.add_row(s["router"], s["name"], s["peer"] or "", f"[{style}]{s['state']}[/]")
    console.print(table)


def cmd_routes(args: argparse.Namespace) -> int:
    prefix = None
    if args.prefix is not None:
        try:
            prefix = str(ipaddress.IPv4Network(args.prefix))
        except ValueError as e:
            raise UsageError(f"PREFIX: not an IPv4 prefix like 203.0.113.0/26: {e}") from None
    if args.json:  # fast path: no lab loading when the state and BIRD can answer
        from harness import fastpath

        doc = fastpath.routes(resolve_running(args.lab), args.router, prefix)
        if doc is not None:
            print(json.dumps(doc, indent=2))
            return 0
    lab = attach(args.lab)
    try:
        speaker = lab.speaker(args.router)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    routes = speaker.routes(prefix)
    if args.json:
        print(json.dumps([r.to_json() for r in routes], indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{args.router}: {prefix or 'all routes'}")
    for col in (
        "prefix",
        "best",
        "via",
        "interface",
        "protocol",
        "as path",
        "communities",
        "local_pref",
        "pref",
    ):
        table.add_column(col)
    for r in routes:
        table.add_row(
            r.prefix,
            "*" if r.best else "",
            r.via or r.route_type,
            r.interface or "",
            r.protocol,
            " ".join(map(str, r.as_path)),
            " ".join(r.community_strings()),
            "" if r.local_pref is None else str(r.local_pref),
            str(r.preference),
        )
    _console().print(table)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from harness.canary.controller import CanaryError
    from harness.record import MigrationFailed

    lab = attach(args.lab)
    try:
        record = lab.migrate(args.vm, args.to, fail=args.fail, announce=args.announce, canary=args.canary)
    except MigrationFailed as e:
        record = e.record
    except CanaryError as e:  # the canary could not run: the migration did not start
        raise LabError(f"--canary {args.canary}: {e}") from None
    if args.artifacts:
        json_path, png_path = lab.write_timeline(record, args.artifacts)
        print(f"timeline: {png_path} (record: {json_path})", file=sys.stderr)
    if args.json:
        print(json.dumps(record.to_json(), indent=2))
    else:
        print_timeline(record.to_json())
    if record.status != "completed":
        print(f"kvlab migrate: {record.vm} {record.status}: {record.reason}", file=sys.stderr)
    return 0 if record.status == "completed" else 1


def print_timeline(rec: dict[str, Any]) -> None:
    """Draw a migration record as a timeline: one row per event, a bar for elapsed time."""
    from rich.table import Table

    total = max((e["ms"] for e in rec["events"]), default=1.0) or 1.0
    table = Table(
        title=f"{rec['vm']} {rec['source']} -> {rec['target']}: {rec['status']}"
        + (f" ({rec['reason']})" if rec["reason"] else "")
    )
    for col in ("ms", "", "where", "what"):
        table.add_column(col)
    for e in rec["events"]:
        bar = "#" * max(1, round(30 * e["ms"] / total))
        if e["kind"] == "phase":
            what = f"[bold]{e['phase']}[/]"
        elif e["kind"] == "state":
            what = f"{e['state']} ({e['reason']}), route metric {e['metric']}"
        elif e["kind"] == "route" and "op" in e:
            what = f"kernel route {e['op']} {e['prefix']} metric {e['metric']}"
        elif e["kind"] == "route":
            via = e["best_via"] or "no route"
            comm = " ".join(e["communities"])
            what = f"best {e['prefix']} via {via} ({e['paths']} paths){' ' + comm if comm else ''}"
            what += " [red]ECMP[/]" if e["ecmp"] else ""
        elif e["kind"] == "seen":
            what = f"{e['what']} from the VM"
        elif e["kind"] == "qmp":
            what = f"QMP {e['event']}" + (f" {e['status']}" if e.get("status") else "")
            if e.get("downtime_ms") is not None:
                what += f": total {e['total_ms']} ms, downtime {e['downtime_ms']} ms"
        elif e["kind"] == "canary-gap":
            what = f"canary gap {e['gap_ms']:.0f} ms" + (" (longest)" if e.get("longest") else "")
        elif e["kind"] == "canary-reset":
            what = f"[red]canary connection reset[/] ({e['error']})"
        else:
            what = e["kind"]
        table.add_row(f"{e['ms']:.1f}", bar, e["source"], what)
    _console().print(table)
    c = rec.get("canary")
    if c:
        verdict = (
            "ok" if c["resets"] == 0 and c["lost"] == 0 and c["same_connection"] else "[red]DISRUPTED[/]"
        )
        _console().print(
            f"canary {verdict}: sent {c['sent']}, echoed {c['echoed']}, lost {c['lost']}, "
            f"resets {c['resets']}, same connection {c['same_connection']}, "
            f"max gap {c['max_gap_ms']:.0f} ms, "
            f"fresh connection {'ok' if c.get('fresh_connection_ok') else 'FAILED'}"
        )


def cmd_image(args: argparse.Namespace) -> int:
    from harness.progress import RichProgress
    from harness.runtime.netns.guestimage import ensure_image

    if args.which == "tor":
        from harness.runtime.containerlab.docker import docker_client
        from harness.runtime.containerlab.images import build_tor_image

        tag = build_tor_image(RichProgress(), base=args.base, force=args.force)
        size = docker_client().images.get(tag).attrs.get("Size", 0)
        print(f"{tag} ({size / 1e6:.0f} MB)")
        return 0

    image = ensure_image(RichProgress(), pvh=not args.bzimage)
    packages = ", ".join(f"{k} {v}" for k, v in image.packages.items())
    print(f"guest image {image.key}: kernel {image.kernel}, initrd {image.initrd} ({packages})")
    return 0


def cmd_diag(args: argparse.Namespace) -> int:
    from harness.diagnostics import collect

    lab = attach(args.lab, "LAB")
    out = collect(lab, Path(args.out))
    print(out)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """The lab file and everything it names, then every BIRD config it derives through `bird -p`."""
    from harness.labfile import load_lab, resolve_spec_path

    spec = load_lab(resolve_spec_path(args.lab))
    print(f"{spec.source}: valid lab '{spec.name}' ({_bird_checked(spec)})", file=sys.stderr)
    return 0


def _bird_checked(spec: Any, configs: list[Any] | None = None) -> str:
    """Check a lab's BIRD configs with `bird -p` (SpecError if BIRD refuses one); says what was checked."""
    from harness.render.bird import bird_executable, check_rendered

    try:
        exe = bird_executable()
    except LabError as e:
        return f"BIRD configs not checked: {e}"
    return f"{check_rendered(spec, configs, bird=exe)} BIRD configs pass bird -p"


def cmd_render(args: argparse.Namespace) -> int:
    """What a runtime builds the lab from (netns: the BIRD configs; containerlab: topology, kind,
    Calico, KubeVirt), written and checked by the runtime (schemas, `bird -p`); exit 2 naming
    file, field and reason on a problem."""
    from harness.labfile import load_lab, resolve_spec_path
    from harness.runtime import get_runtime
    from harness.runtime.base import LabContext, RuntimeOptions

    spec = load_lab(resolve_spec_path(args.lab))
    if args.runtime != "containerlab" and (
        args.versions is not None or args.emulation != "auto" or args.tor_image is not None
    ):
        raise UsageError("--stack, --emulation and --tor-image apply to --runtime containerlab only")
    options = RuntimeOptions(
        stack=args.versions,
        emulation={"auto": None, "on": True, "off": False}[args.emulation],
        tor_image=args.tor_image,
    )
    runtime = get_runtime(args.runtime)(spec.name, context=LabContext.of(spec), options=options)
    report = runtime.render(Path(args.out))
    for line in report.checked:
        print(f"kvlab render: checked {line}", file=sys.stderr)
    for line in report.skipped:
        print(f"kvlab render: not checked: {line}", file=sys.stderr)
    for line in report.warnings:
        print(f"kvlab render: warning: {line}", file=sys.stderr)
    if not report.ok:
        for issue in report.issues:
            print(f"kvlab render: invalid: {issue}", file=sys.stderr)
        return 2
    print(f"kvlab render: {report.summary}", file=sys.stderr)
    print(report.main)
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    """The calico-node emulation against Calico's confd corpus: per case match / differs /
    unsupported, then totals; exit 1 if any case differs."""
    from harness.calico import conformance

    if args.write_readme and args.case is not None:
        raise UsageError("--write-readme takes the whole corpus: leave out --case")
    report = conformance.run(args.corpus, args.case)
    if not report.results:
        raise UsageError(f"--case {args.case}: no case of the corpus matches")
    if args.write_readme:
        readme = conformance.README
        readme.write_text(conformance.with_table(readme.read_text(), report))
        print(f"kvlab conformance: wrote the table of {readme}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(conformance.text_report(report)))
    return report.exit_code


# -- entry point ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit 2 like any bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from harness.runtime.containerlab.versions import MATRIX

    p = _Parser(prog="kvlab", description="Calico + KubeVirt BGP lab harness")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a lab up (reuses it if already running)")
    up.add_argument("lab", nargs="?", help="lab file or name in labs/ (default: default)")
    up.add_argument("--runtime", default="netns", choices=["netns", "containerlab"])
    up.add_argument("--name", help="instance name (default: the lab's name); lets labs run side by side")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a lab that did not converge up")
    up.add_argument(
        "--replace", action="store_true", help="destroy a lab of this name built from another spec first"
    )
    up.add_argument("--diag-dir", default="kvlab-diagnostics")
    up.add_argument("--json", action="store_true", help="print the status document when up")
    up.add_argument(
        "--stack",
        metavar="NAME",
        choices=list(MATRIX),
        help="containerlab: the stack versions, an entry of harness.runtime.containerlab.versions.MATRIX "
        "(default: versions.DEFAULT)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="tear a lab down and reap leftovers of crashed runs")
    down.add_argument("lab", nargs="?", help="lab name or file (default: the running lab)")
    down.add_argument("--all", action="store_true", help="every kvlab lab on this machine")
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="topology and BGP sessions of a running lab")
    st.add_argument("lab", nargs="?")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    rt = sub.add_parser("routes", help="BIRD routes of a router or node")
    rt.add_argument("router")
    rt.add_argument("prefix", nargs="?", help="exact prefix, e.g. 203.0.113.0/26")
    rt.add_argument("--lab")
    rt.add_argument("--json", action="store_true")
    rt.set_defaults(func=cmd_routes)

    mg = sub.add_parser("migrate", help="live-migrate a VM to another node and print what happened when")
    mg.add_argument("vm")
    mg.add_argument("--to", required=True, help="target node")
    mg.add_argument("--lab")
    mg.add_argument(
        "--fail", metavar="REASON", help="abort the migration before the VM resumes on the target"
    )
    mg.add_argument(
        "--announce",
        choices=["GARP", "RARP"],
        default="GARP",
        help="what the VM sends after resuming (QEMU sends RARP, guests GARP)",
    )
    mg.add_argument(
        "--canary", metavar="HOST", help="run a TCP canary from this external host through the migration"
    )
    mg.add_argument(
        "--artifacts", metavar="DIR", help="also write the record as JSON and a PNG timeline here"
    )
    mg.add_argument("--json", action="store_true")
    mg.set_defaults(func=cmd_migrate)

    im = sub.add_parser("image", help="guest image for QEMU VMs, ToR image for the containerlab runtime")
    im_sub = im.add_subparsers(dest="image_command", required=True)
    ib = im_sub.add_parser(
        "build",
        help="guest: build (or reuse the cached) kernel + initramfs from Debian packages; "
        "tor: the ToR/host Docker image from images/tor/Dockerfile (no registry needed)",
    )
    ib.add_argument("which", nargs="?", choices=["guest", "tor"], default="guest")
    ib.add_argument("--bzimage", action="store_true", help="guest: boot the compressed bzImage, not PVH")
    ib.add_argument(
        "--base", help="tor: FROM image, or 'debootstrap' (default: debian:bookworm-slim, else debootstrap)"
    )
    ib.add_argument("--force", action="store_true", help="tor: rebuild even if this hash exists")
    ib.set_defaults(func=cmd_image)

    dg = sub.add_parser("diag", help="write a diagnostics bundle of a running lab")
    dg.add_argument("lab", nargs="?")
    dg.add_argument("--out", default="kvlab-diagnostics")
    dg.set_defaults(func=cmd_diag)

    va = sub.add_parser("validate", help="check a lab file without creating anything")
    va.add_argument("lab")
    va.set_defaults(func=cmd_validate)

    rd = sub.add_parser(
        "render",
        help="write the configs a lab derives (netns: BIRD configs; containerlab: topology, kind, "
        "Calico, KubeVirt, validated against the upstream schemas)",
    )
    rd.add_argument("lab")
    rd.add_argument("--runtime", default="netns", choices=["netns", "containerlab"])
    rd.add_argument("--out", required=True)
    rd.add_argument(
        "--stack",
        "--versions",
        dest="versions",
        metavar="NAME",
        help="containerlab: an entry of the stack version matrix "
        "(harness.runtime.containerlab.versions.MATRIX)",
    )
    rd.add_argument(
        "--emulation",
        choices=["auto", "on", "off"],
        default="auto",
        help="containerlab: KubeVirt useEmulation (auto: probe /dev/kvm here)",
    )
    rd.add_argument(
        "--tor-image", metavar="IMAGE", help="containerlab: ToR/host image (default kvlab/tor:<hash>)"
    )
    rd.set_defaults(func=cmd_render)

    cf = sub.add_parser(
        "conformance",
        help="render Calico's confd test corpus with the calico-node emulation and compare with its golden "
        "BIRD configs (match / differs / unsupported per case)",
    )
    cf.add_argument(
        "--corpus",
        metavar="DIR",
        help="the corpus: Calico's confd/tests (mock_data/calicoctl, compiled_templates) "
        "(default: ../shared/upstream/calico-confd next to the project)",
    )
    cf.add_argument("--case", metavar="GLOB", help="only the cases whose name matches, e.g. 'bgpfilter/*'")
    cf.add_argument("--json", action="store_true", help="the results as JSON")
    cf.add_argument(
        "--write-readme",
        action="store_true",
        help="write the results table into the README's emulation section",
    )
    cf.set_defaults(func=cmd_conformance)
    return p


def _one_line(message: str) -> str:
    """A message as one line: control characters (a hostile name's newline) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _fail(code: int, message: str) -> int:
    print(f"kvlab: {_one_line(message)}", file=sys.stderr)
    return code


def _terminated(signum: int, _frame: Any) -> NoReturn:
    """SIGTERM unwinds like Ctrl-C (what is half-done is settled on the way out), exit 143."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.func(args)
    except SpecError as e:
        for issue in e.issues:
            print(f"kvlab: {issue}", file=sys.stderr)
        return 2
    except PreflightError as e:  # the list of what is missing, one per line
        print(f"kvlab: {e}", file=sys.stderr)
        return 2
    except InputError as e:  # bad names, paths, options; an unknown lab
        return _fail(2, str(e))
    except KvlabError as e:  # the lab did not do it: timeouts, BIRD unreachable, failed steps
        return _fail(1, str(e))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        hint = "" if os.environ.get(DEBUG_ENV) else f" (set {DEBUG_ENV}=1 for the traceback)"
        return _fail(1, f"internal error: {type(e).__name__}: {e}{hint}")


if __name__ == "__main__":
    sys.exit(main())
