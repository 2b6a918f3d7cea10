"""Writing an import: `<name>.yml` (the lab file), `calico.yaml` (its resources) and
`customer-map.yaml`, into the output directory, only once the lab loads as `kvlab up` loads it
(harness.labfile.load_lab): a lab the import cannot make valid creates nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from harness.errors import SpecError, SpecIssue
from harness.importer.build import ImportResult
from harness.importer.mapping import MAP_FILE
from harness.labfile import load_lab
from harness.state import check_lab_name

RESOURCES_FILE = "calico.yaml"


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=110)


def lab_text(result: ImportResult) -> str:
    head = ["# A lab imported by `kvlab import`; its pools and block size come from calico.yaml's IPPools."]
    head += [f"# {line}" for line in result.notes]
    if result.warnings:
        head.append(f"# Not reproduced ({len(result.warnings)} warnings):")
        head += [f"#   {w}" for w in result.warnings]
    return "\n".join(head) + "\n" + _dump(result.lab)


def write_import(result: ImportResult, out: Path) -> Path:
    """Write the import into `out` (made if missing); returns the lab file. SpecError (exit 2),
    and nothing written, if the lab does not load."""
    name = check_lab_name(result.lab["name"], "name")  # it names a file in `out`
    if out.exists() and not out.is_dir():
        raise SpecError([SpecIssue(str(out), "", "--out: exists and is not a directory")])
    out.mkdir(parents=True, exist_ok=True)
    files = {
        f"{name}.yml": lab_text(result),
        RESOURCES_FILE: "# Calico resources of the imported lab (customer addresses renumbered)\n"
        + "---\n".join(_dump(doc) for doc in result.resources),
        MAP_FILE: "# kvlab import: customer -> lab (names, addresses, prefixes); read by --as-customer\n"
        + _dump(result.mapping.to_yaml_data()),
    }
    staging = Path(tempfile.mkdtemp(prefix=".kvlab-import-", dir=out))
    try:
        for fname, text in files.items():
            (staging / fname).write_text(text)
        try:
            load_lab(staging / f"{name}.yml")
        except SpecError as e:
            issues = [
                SpecIssue(
                    str(out / Path(i.file).name),
                    i.path,
                    f"the imported lab is not valid: {i.message}",
                    i.line,
                )
                for i in e.issues
            ]
            raise SpecError(issues) from None
        for fname in files:
            os.replace(staging / fname, out / fname)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / f"{name}.yml"


__all__ = ["RESOURCES_FILE", "lab_text", "write_import"]
