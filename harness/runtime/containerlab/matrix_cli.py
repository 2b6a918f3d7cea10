"""The version matrix (harness.runtime.containerlab.versions) for shell scripts.

    python -m harness.runtime.containerlab.matrix_cli names            # one entry name a line
    python -m harness.runtime.containerlab.matrix_cli field NAME kind  # v0.31.0 (any StackVersions field)
    python -m harness.runtime.containerlab.matrix_cli table            # the README's markdown table
    python -m harness.runtime.containerlab.matrix_cli cells            # the nightly's jobs (stack lab kind)

Standard library only: the nightly workflow runs it with the system Python before the venv exists.
"""

from __future__ import annotations

import argparse
import sys

from harness.runtime.containerlab.versions import DEFAULT, MATRIX, get_versions

# The labs of the nightly: each a required cell on every stack with live-migration support (the
# nested lab included: the containerlab runtime builds nested nodes, issue 17). A stack without
# it (Calico 3.31, before localWorkloadPeeringIPV4 and route priorities) runs the default lab
# once, as an experimental baseline.
NIGHTLY_LABS = ("default", "nested")
BASELINE_LAB = "default"


def cells() -> list[tuple[str, str, bool]]:
    """The nightly's jobs: (stack, lab, experimental)."""
    out = [(s.name, lab, False) for s in MATRIX.values() if s.live_migration for lab in NIGHTLY_LABS]
    return out + [(s.name, BASELINE_LAB, True) for s in MATRIX.values() if not s.live_migration]


def table() -> str:
    """A markdown table of the matrix, the default entry first."""
    rows = [
        "| stack (`--stack`) | Calico | KubeVirt | Kubernetes (kindest/node) | kind | live migration |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(MATRIX.values(), key=lambda s: s is not DEFAULT):
        name = f"`{s.name}`" + (" (default)" if s is DEFAULT else "")
        lm = "yes" if s.live_migration else "no (baseline)"
        rows.append(f"| {name} | {s.calico} | {s.kubevirt} | {s.kubernetes} | {s.kind} | {lm} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.runtime.containerlab.matrix_cli", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("names", help="every entry name, one a line")
    f = sub.add_parser("field", help="one field of an entry")
    f.add_argument("name")
    f.add_argument("field", help="calico, kubevirt, kind, kind_node_image, kubernetes, live_migration, ...")
    sub.add_parser("table", help="the matrix as a markdown table")
    sub.add_parser("cells", help="the nightly's jobs, one a line: stack lab required|experimental")
    args = p.parse_args(argv)
    if args.command == "names":
        print("\n".join(MATRIX))
    elif args.command == "cells":
        print("\n".join(f"{s} {lab} {'experimental' if x else 'required'}" for s, lab, x in cells()))
    elif args.command == "table":
        print(table())
    else:
        try:
            doc = get_versions(args.name).to_json()
        except KeyError as e:
            print(f"matrix_cli: {e.args[0]}", file=sys.stderr)
            return 2
        if args.field not in doc:
            print(f"matrix_cli: no field '{args.field}' (known: {', '.join(doc)})", file=sys.stderr)
            return 2
        value = doc[args.field]
        print(str(value).lower() if isinstance(value, bool) else value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
