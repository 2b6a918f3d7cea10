"""Pools and block size in one place (the lab file or the IPPool resources, a mismatch an
error), and a lab file's problems all reported in one run."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.labfile import load_lab

LAB = """\
name: pools
routers:
  - {{name: tor1, role: tor, asn: 65001}}
racks:
  - {{name: r1, tor: tor1}}
clusters:
  - name: kv
    asn: 64512
{cluster}    nodes:
      - {{name: r1-n1, rack: r1}}
      - {{name: r1-n2, rack: r1}}
    resources: calico.yaml
vms:
  - {{name: vm1, node: r1-n1, ip: 203.0.113.10}}
"""
BGP = """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
"""


def pool(cidr: str, block: int | None) -> str:
    size = "" if block is None else f", blockSize: {block}"
    return f"---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p{cidr[:3]}}}\n" + (
        f"spec: {{cidr: {cidr}{size}}}\n"
    )


def write(tmp_path: Path, cluster: str, resources: str) -> Path:
    (tmp_path / "calico.yaml").write_text(resources)
    path = tmp_path / "lab.yml"
    path.write_text(LAB.format(cluster=textwrap.indent(cluster, "    ")))
    return path


def messages(path: Path) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_lab(path)
    return [str(i) for i in e.value.issues]


def test_pools_and_block_size_from_the_ippools(tmp_path: Path) -> None:
    spec = load_lab(write(tmp_path, "", BGP + pool("203.0.113.0/24", 27)))
    assert spec.clusters[0].pools == [ipaddress.IPv4Network("203.0.113.0/24")]
    assert spec.clusters[0].block_size == 27


def test_an_ippool_without_block_size_is_calicos_default(tmp_path: Path) -> None:
    spec = load_lab(write(tmp_path, "", BGP + pool("203.0.113.0/24", None)))
    assert spec.clusters[0].block_size == 26


def test_pools_from_the_lab_file_without_ippools(tmp_path: Path) -> None:
    spec = load_lab(write(tmp_path, "pools: [203.0.113.0/24]\nblock_size: 28\n", BGP))
    assert spec.clusters[0].pools == [ipaddress.IPv4Network("203.0.113.0/24")]
    assert spec.clusters[0].block_size == 28


def test_the_same_in_both_places_is_one_lab(tmp_path: Path) -> None:
    both = load_lab(
        write(tmp_path, "pools: [203.0.113.0/24]\nblock_size: 27\n", BGP + pool("203.0.113.0/24", 27))
    )
    one = load_lab(write(tmp_path, "", BGP + pool("203.0.113.0/24", 27)))
    assert both.clusters == one.clusters


def test_a_mismatch_stays_an_error(tmp_path: Path) -> None:
    out = messages(
        write(tmp_path, "pools: [203.0.113.0/24]\nblock_size: 28\n", BGP + pool("203.0.113.0/24", 27))
    )
    assert any("blockSize 27 disagrees with cluster 'kv' block_size 28" in m for m in out), out
    out = messages(write(tmp_path, "pools: [203.0.113.0/25]\n", BGP + pool("203.0.113.0/24", 26)))
    assert any("IPPool 203.0.113.0/24 is not one of the cluster's pools" in m for m in out), out


def test_ippools_disagreeing_on_the_block_size_need_one_from_the_lab(tmp_path: Path) -> None:
    out = messages(write(tmp_path, "", BGP + pool("203.0.113.0/24", 26) + pool("198.51.100.0/24", 27)))
    assert sum("disagree on the block size (/26, /27)" in m for m in out) == 2, out


def test_no_pools_anywhere(tmp_path: Path) -> None:
    out = messages(write(tmp_path, "", BGP))
    assert any("cluster 'kv' has no pools: give 'pools:' here or IPPool resources" in m for m in out), out


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    """A bad name no longer hides the cross-checks: the block size that leaves a node without a
    block, the VM outside the pools and the bad rack reference all come in the same run."""
    path = tmp_path / "bad.yml"
    path.write_text(
        textwrap.dedent(
            """\
            name: bad
            routers:
              - {name: Tor_1, role: tor, asn: 65001}
            racks:
              - {name: r1, tor: Tor_1}
              - {name: r2, tor: tor9}
            clusters:
              - name: kv
                pools: [203.0.113.0/24]
                block_size: 24
                nodes:
                  - {name: r1-n1, rack: r1}
                  - {name: r1-n2, rack: r1}
                  - {name: r1-n3, rack: r1, typo: 1}
            vms:
              - {name: vm1, node: r1-n1, ip: 198.51.100.10}
            """
        )
    )
    out = messages(path)
    text = "\n".join(out)
    assert "routers[0].name: invalid name 'Tor_1'" in text
    assert "racks[0].tor: invalid name 'Tor_1'" in text
    assert "unknown field 'typo'" in text
    assert "racks[1].tor: no router named 'tor9'" in text
    assert "the pools hold only 1 block of /24 for 3 nodes" in text
    assert "198.51.100.10 is not in cluster 'kv' pools" in text
    assert len(out) == 6, out  # each once, and no stand-in name leaks into a message
