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

from harness.errors import (
    InputError,
    KvlabError,
    LabError,
    PreflightError,
    SpecError,
    UnknownLabError,
    WaitTimeout,
)
from harness.state import check_lab_name

DEBUG_ENV = "KVLAB_DEBUG"  # set (non-empty): an internal error prints its traceback too


class UsageError(InputError):
    """Bad command-line input (exit 2)."""


def lab_arg(args: argparse.Namespace) -> tuple[str | None, str]:
    """The lab a command names, as every command takes it: `--lab NAME` (or the positional
    `LAB` where a command had one before; both must agree), with the option to name in errors."""
    positional, option = args.lab_pos, args.lab
    if positional is not None and option is not None and positional != option:
        raise UsageError(f"LAB '{positional}' and --lab '{option}' name different labs: name one")
    if option is not None:
        return option, "--lab"
    return positional, "LAB"


def resolve_running(arg: str | None, option: str = "--lab", *, none_ok: bool = False) -> str:
    """A running lab's name from a name, a lab file, or (none given) the only running lab.

    None given and several labs run: UsageError listing them (exit 2). None given and none
    runs: UnknownLabError, or the default lab's name if `none_ok` (`down` has nothing to do)."""
    from harness.instances import running_lab_names
    from harness.names import DEFAULT_LAB

    running = running_lab_names()
    if arg is None:
        if len(running) == 1:
            return running[0]
        if not running:
            if none_ok:
                return DEFAULT_LAB
            raise UnknownLabError("no lab is running ('kvlab up' brings one up)")
        raise UsageError(f"{len(running)} labs are running ({', '.join(running)}): name one with --lab NAME")
    if arg in running:
        return arg
    p = Path(arg)
    if p.suffix in (".yml", ".yaml") or p.is_file():
        from harness.labfile import load_lab, resolve_spec_path

        return load_lab(resolve_spec_path(arg, option)).name
    return check_lab_name(arg, option)


def attach(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The running lab a command names (see `lab_arg`), with what settling it took said on stderr."""
    from harness.lab import Lab

    lab = Lab.attach(resolve_running(*lab_arg(args)))
    _print_notes(lab)
    return lab


def spec_arg(args: argparse.Namespace) -> Path:
    """The lab file of `up`/`validate`/`render`/`import`: LAB or --lab, a file, a lab of labs/, or
    the name of a running lab (its spec file)."""
    from harness.instances import running_lab_names
    from harness.labfile import resolve_spec_path
    from harness.state import LabState, lab_dir

    arg, option = lab_arg(args)
    if arg is not None and arg in running_lab_names() and not Path(arg).is_file():
        state = LabState.load(lab_dir(arg))
        if state is not None and Path(state.spec_path).is_file():
            return Path(state.spec_path)
    return resolve_spec_path(arg, option)


def _customer(lab: Any, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The customer mapping of an imported lab with --as-customer, else None (MappingError, exit 2,
    for a lab `kvlab import` did not make)."""
    if not args.as_customer:
        return None
    from harness.importer.mapping import CustomerMap

    return CustomerMap.of_lab(lab.spec.source)


def _print_notes(lab: Any) -> None:
    for note in lab.notes:
        print(f"kvlab: {note}", file=sys.stderr)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    # emoji off: an IPv6 address such as 2001:db8:51:100:: holds ":100:", rich's 💯 code
    console = Console(emoji=False)
    if not console.is_terminal:  # piped or in CI: do not squeeze tables into 80 columns
        console = Console(width=160, emoji=False)
    return console


# -- commands ------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from harness.diagnostics import collect
    from harness.lab import Lab
    from harness.progress import RichProgress
    from harness.runtime.base import RuntimeOptions

    if args.name is not None:
        check_lab_name(args.name, "--name")
    path = spec_arg(args)
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
    # the progress bar counted BIRDs (each with every session Established); a session counts
    # once at each of its ends, as `kvlab status` lists them
    print(
        f"lab '{lab.name}' {verb}: {len(lab.speakers())} BIRDs, {len(sessions)} BGP sessions Established "
        f"({len(lab.topo.entities)} namespaces, runtime {lab.runtime_name})",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(lab.status(), indent=2))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from harness.instances import down_lab, labs_to_take_down, reap_stale

    # --all: never another run root's labs (another KVLAB_RUN_DIR on this machine)
    names = labs_to_take_down() if args.all else [resolve_running(*lab_arg(args), none_ok=True)]
    for name in names:
        found = down_lab(name)
        print(f"lab '{name}' {'down' if found else 'was not running'}", file=sys.stderr)
    for name in reap_stale():
        print(f"reaped leftovers of crashed lab '{name}'", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.json and not args.as_customer:  # fast path: no lab loading when the state and BIRD can answer
        from harness import fastpath

        doc = fastpath.status(resolve_running(*lab_arg(args)))
        if doc is not None:
            print(json.dumps(doc, indent=2))
            return 0
    lab = attach(args)
    customer = _customer(lab, args)
    status = lab.status()
    if customer is not None:
        status = customer.json(status)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    _print_status(status, lab, customer.text if customer is not None else str)
    return 0


def _print_status(status: dict[str, Any], lab: Any, shown: Any = str) -> None:
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
        address = shown(str(lab.topo.tor_address[tor.name]))
        rb = tree.add(f"rack {rack.name}: tor [bold]{tor.name}[/] AS{tor.asn} {address}")
        for h in status["hosts"]:
            if next(x for x in lab.spec.hosts if x.name == h["name"]).router == tor.name:
                rb.add(f"host {h['name']} {h['ip']}")
        nested = {n["vm"]: n for n in status["nodes"] if "vm" in n}
        pools = {c["name"]: [*c["pools"], *c.get("pools6", [])] for c in status["clusters"]}
        for n in status["nodes"]:
            if n["rack"] == rack.name:
                ip6 = f" {n['ip6']}" if "ip6" in n else ""
                nb = rb.add(f"node [bold]{n['name']}[/] AS{n['asn']} {n['ip']}{ip6} ({n['cluster']})")
                for vm in status["vms"]:
                    if vm["node"] == n["name"]:
                        vb = nb.add(f"vm {vm['name']} {vm['ip']}" + (f" {vm['ip6']}" if "ip6" in vm else ""))
                        if vm["name"] in nested:
                            nn = nested[vm["name"]]
                            mine = pools[nn["cluster"]]
                            vb.add(
                                f"nested node [bold]{nn['name']}[/] AS{nn['asn']} (cluster {nn['cluster']}, "
                                f"pool{'s' if len(mine) > 1 else ''} {', '.join(mine)})"
                            )
    console.print(tree)
    table = Table(title="BGP sessions")
    for col in ("router", "family", "name", "peer", "state"):
        table.add_column(col)
    for s in status["sessions"]:
        style = "green" if s["state"] == "Established" else "red"
        family = "IPv4" if s.get("family", 4) == 4 else "IPv6"
        table.add_row(s["router"], family, s["name"], s["peer"] or "", f"[{style}]{s['state']}[/]")
    console.print(table)


def cmd_routes(args: argparse.Namespace) -> int:
    prefix = None
    family = args.family
    if args.prefix is not None:  # checked before anything is looked up
        if "%" in args.prefix:
            raise UsageError("PREFIX: not an IP prefix (a scope is no part of one)")
        try:
            net = ipaddress.ip_network(args.prefix)
        except ValueError as e:
            raise UsageError(
                f"PREFIX: not an IP prefix like 203.0.113.0/26 or 2001:db8:203:113::/122: {e}"
            ) from None
        if family is not None and net.version != family:
            raise UsageError(f"PREFIX: {net} is IPv{net.version}, but --family {family} was given")
        family, prefix = net.version, str(net)
    if args.json and not args.as_customer:  # fast path: no lab loading when the state and BIRD can answer
        from harness import fastpath

        doc = fastpath.routes(resolve_running(*lab_arg(args)), args.router, prefix, family or 4)
        if doc is not None:
            print(json.dumps(doc, indent=2))
            return 0
    lab = attach(args)
    customer = _customer(lab, args)
    if prefix is not None and customer is not None:  # given in the customer's addresses
        prefix = customer.to_lab_prefix(prefix)
    try:
        speaker = lab.speaker(args.router, family or 4)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    routes = speaker.routes(prefix)
    shown = customer.text if customer is not None else str
    if args.json:
        doc = [r.to_json() for r in routes]
        print(json.dumps(doc if customer is None else customer.json(doc), indent=2))
        return 0
    from rich.table import Table

    daemon = "" if speaker.family == 4 else " (bird6)"
    table = Table(title=f"{args.router}{daemon}: {shown(prefix) if prefix else 'all routes'}")
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
            shown(r.prefix),
            "*" if r.best else "",
            shown(r.via or r.route_type),
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

    lab = attach(args)
    customer = _customer(lab, args)
    vm, to = args.vm, args.to
    if customer is not None:  # the customer's names work too ('ns/vm', the node's own name)
        vm, to = customer.lab_name("vm", vm), customer.lab_name("node", to)
    try:
        record = lab.migrate(
            vm, to, fail=args.fail, announce=args.announce, canary=args.canary, family=args.family
        )
    except MigrationFailed as e:
        record = e.record
    except CanaryError as e:  # the canary could not run: the migration did not start
        raise LabError(f"--canary {args.canary}: {e}") from None
    if args.artifacts:
        json_path, png_path = lab.write_timeline(record, args.artifacts)
        print(f"timeline: {png_path} (record: {json_path})", file=sys.stderr)
    doc = record.to_json() if customer is None else customer.json(record.to_json())
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_timeline(doc)
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
            six = " [IPv6]" if e.get("family") == 6 else ""
            what = f"{e['state']}{six} ({e['reason']}), route metric {e['metric']}"
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
    canaries = rec.get("canaries") or ({"4": rec["canary"]} if rec.get("canary") else {})
    for family, c in canaries.items():
        verdict = (
            "ok" if c["resets"] == 0 and c["lost"] == 0 and c["same_connection"] else "[red]DISRUPTED[/]"
        )
        _console().print(
            f"canary (IPv{family}) {verdict}: sent {c['sent']}, echoed {c['echoed']}, lost {c['lost']}, "
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
    if args.which == "guest-container":
        from harness.runtime.containerlab.nested import build_guest_image

        print(build_guest_image(RichProgress()))
        return 0

    image = ensure_image(RichProgress(), pvh=not args.bzimage)
    packages = ", ".join(f"{k} {v}" for k, v in image.packages.items())
    print(f"guest image {image.key}: kernel {image.kernel}, initrd {image.initrd} ({packages})")
    return 0


def cmd_diag(args: argparse.Namespace) -> int:
    from harness.diagnostics import collect

    lab = attach(args)
    out = collect(lab, Path(args.out))
    print(out)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """The lab file and everything it names, then every BIRD config it derives through `bird -p`."""
    from harness.labfile import load_lab

    spec = load_lab(spec_arg(args))
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
    from harness.labfile import load_lab
    from harness.runtime import get_runtime
    from harness.runtime.base import LabContext, RuntimeOptions

    spec = load_lab(spec_arg(args))
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


def cmd_import(args: argparse.Namespace) -> int:
    """A lab file, its Calico resources and the customer mapping from a customer's dumps; every
    thing not reproduced a warning on stderr (and in the lab file's header)."""
    from harness.importer.build import ImportOptions, import_dump
    from harness.importer.write import write_import

    name = check_lab_name(args.name, "--name") if args.name is not None else _import_name(Path(args.out))
    if args.max_nodes_per_rack is not None and args.max_nodes_per_rack < 1:
        raise UsageError("--max-nodes-per-rack: at least 1")
    opts = ImportOptions(
        nodes=Path(args.nodes),
        calico=Path(args.calico),
        vmis=Path(args.vmis) if args.vmis else None,
        tors=[Path(t) for t in args.tor or []],
        name=name,
        max_nodes_per_rack=args.max_nodes_per_rack,
    )
    result = import_dump(opts)
    path = write_import(result, Path(args.out))
    for line in result.notes:
        print(f"kvlab import: {line}", file=sys.stderr)
    for w in result.warnings:
        print(f"kvlab import: warning: {_one_line(str(w))}", file=sys.stderr)
    print(
        f"kvlab import: wrote {path}, {path.parent / 'calico.yaml'} and {path.parent / 'customer-map.yaml'} "
        f"({len(result.warnings)} warnings); 'kvlab up {path}' runs it",
        file=sys.stderr,
    )
    print(path)
    return 0


def _import_name(out: Path) -> str:
    """The lab name of an import without --name: the output directory's name if it is a lab name."""
    from harness.state import valid_lab_name

    stem = out.resolve().name
    return stem if valid_lab_name(stem) else "imported"


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
        from harness.safefile import replace_file

        replace_file(readme, conformance.with_table(readme.read_text(), report).encode())
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


LAB_HELP = "the lab: a running lab's name (default: the only running one)"
FILE_HELP = "the lab: a lab file, a lab of labs/ or a running lab's name (default: default)"


def _lab_options(parser: argparse.ArgumentParser, help: str = LAB_HELP, *, positional: bool = False) -> None:
    """How every command takes the lab: `--lab NAME`, and the positional `LAB` where a command
    had it before (kept: both name the same lab)."""
    if positional:
        parser.add_argument("lab_pos", nargs="?", metavar="LAB", help=f"{help}; the same as --lab")
    else:
        parser.set_defaults(lab_pos=None)
    parser.add_argument("--lab", metavar="NAME", help=help)


def _output_options(parser: argparse.ArgumentParser) -> None:
    """`--json`, and `--as-customer` for an imported lab's addresses: what a command prints."""
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--as-customer",
        action="store_true",
        help="an imported lab: addresses as the customer's (its customer-map.yaml, see kvlab import)",
    )


def build_parser() -> argparse.ArgumentParser:
    from harness.runtime.containerlab.versions import MATRIX

    p = _Parser(prog="kvlab", description="Calico + KubeVirt BGP lab harness")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a lab up (reuses it if already running)")
    _lab_options(up, FILE_HELP, positional=True)
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
    _lab_options(down, positional=True)
    down.add_argument("--all", action="store_true", help="every kvlab lab on this machine")
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="topology and BGP sessions of a running lab")
    _lab_options(st, positional=True)
    _output_options(st)
    st.set_defaults(func=cmd_status)

    rt = sub.add_parser("routes", help="BIRD routes of a router or node")
    rt.add_argument("router")
    rt.add_argument("prefix", nargs="?", help="exact prefix, e.g. 203.0.113.0/26 or 2001:db8:203:113::/122")
    rt.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="4: BIRD's routes (default), 6: bird6's (dual-stack labs); a PREFIX implies its family",
    )
    _lab_options(rt)
    _output_options(rt)
    rt.set_defaults(func=cmd_routes)

    mg = sub.add_parser("migrate", help="live-migrate a VM to another node and print what happened when")
    mg.add_argument("vm")
    mg.add_argument("--to", required=True, help="target node")
    _lab_options(mg)
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
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="the canary's address family (default: one canary per family the VM has, at once)",
    )
    mg.add_argument(
        "--artifacts", metavar="DIR", help="also write the record as JSON and a PNG timeline here"
    )
    _output_options(mg)
    mg.set_defaults(func=cmd_migrate)

    im = sub.add_parser("image", help="guest image for QEMU VMs, ToR image for the containerlab runtime")
    im_sub = im.add_subparsers(dest="image_command", required=True)
    ib = im_sub.add_parser(
        "build",
        help="guest: build (or reuse the cached) kernel + initramfs from Debian packages; "
        "tor: the ToR/host Docker image from images/tor/Dockerfile (no registry needed); "
        "guest-container: the guest image as a Docker image for KubeVirt's kernel boot (nested nodes)",
    )
    ib.add_argument("which", nargs="?", choices=["guest", "tor", "guest-container"], default="guest")
    ib.add_argument("--bzimage", action="store_true", help="guest: boot the compressed bzImage, not PVH")
    ib.add_argument(
        "--base", help="tor: FROM image, or 'debootstrap' (default: debian:bookworm-slim, else debootstrap)"
    )
    ib.add_argument("--force", action="store_true", help="tor: rebuild even if this hash exists")
    ib.set_defaults(func=cmd_image)

    dg = sub.add_parser("diag", help="write a diagnostics bundle of a running lab")
    _lab_options(dg, positional=True)
    dg.add_argument("--out", default="kvlab-diagnostics")
    dg.set_defaults(func=cmd_diag)

    va = sub.add_parser("validate", help="check a lab file without creating anything")
    _lab_options(va, FILE_HELP, positional=True)
    va.set_defaults(func=cmd_validate)

    rd = sub.add_parser(
        "render",
        help="write the configs a lab derives (netns: BIRD configs; containerlab: topology, kind, "
        "Calico, KubeVirt, validated against the upstream schemas)",
    )
    _lab_options(rd, FILE_HELP, positional=True)
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

    ip = sub.add_parser(
        "import",
        help="a lab reproducing a customer's topology from their dumps (nodes, Calico resources, VMIs, "
        "ToR BIRD configs), renumbered into the lab's address ranges",
    )
    ip.add_argument("--nodes", required=True, metavar="FILE", help="kubectl get nodes -o yaml")
    ip.add_argument(
        "--calico",
        required=True,
        metavar="FILE",
        help="kubectl get bgpconfigurations,bgppeers,bgpfilters,ippools,felixconfigurations,"
        "ipamconfigurations -o yaml (v3 or crd.projectcalico.org/v1), or calicoctl get -o yaml",
    )
    ip.add_argument("--vmis", metavar="FILE", help="kubectl get vmi -A -o yaml")
    ip.add_argument("--tor", action="append", metavar="FILE", help="a ToR's BIRD config (repeatable)")
    ip.add_argument("--out", required=True, metavar="DIR", help="the output directory")
    ip.add_argument("--name", help="the lab's name (default: the --out directory's name)")
    ip.add_argument(
        "--max-nodes-per-rack",
        type=int,
        metavar="N",
        help="sample each rack down to N nodes (route reflectors and nodes with VMs first)",
    )
    ip.set_defaults(func=cmd_import)

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
