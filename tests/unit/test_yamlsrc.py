"""harness.yamlsrc: YAML loading that remembers lines and refuses duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import SpecError
from harness.yamlsrc import SourceMap, format_path, load_documents, loads_documents

LAB = """\
name: x
clusters:
  - name: kv
    nodes:
      - name: n1
        rack: r1
      - name: n2
        labels:
          zone: a
    pools: [203.0.113.0/24, 198.51.100.0/24]
"""


def _one(text: str) -> tuple[object, SourceMap]:
    docs, maps = loads_documents(text, "lab.yml")
    assert len(docs) == len(maps) == 1
    return docs[0], maps[0]


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as ei:
        loads_documents(text, "lab.yml")
    return ei.value


def test_data_matches_safe_load() -> None:
    data, _ = _one(LAB)
    assert data == yaml.safe_load(LAB)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 1),
        (("clusters",), 2),
        (("clusters", 0), 3),
        (("clusters", 0, "name"), 3),
        (("clusters", 0, "nodes", 0, "name"), 5),
        (("clusters", 0, "nodes", 0, "rack"), 6),
        (("clusters", 0, "nodes", 1), 7),
        (("clusters", 0, "nodes", 1, "labels", "zone"), 9),
        (("clusters", 0, "pools", 1), 10),
    ],
)
def test_line_of_nested_path(path: tuple, line: int) -> None:
    _, smap = _one(LAB)
    assert smap.line(path) == line


def test_line_falls_back_to_nearest_ancestor() -> None:
    _, smap = _one(LAB)
    assert smap.line(("clusters", 0, "nodes", 1, "rack")) == 7  # not in the file: the node's line
    assert smap.line(("clusters", 0, "asn")) == 3
    assert smap.line(("nothing",)) is None


def test_issue_carries_file_path_and_line() -> None:
    _, smap = _one(LAB)
    issue = smap.issue(("clusters", 0, "nodes", 0, "rack"), "no rack named 'r1'")
    assert (issue.file, issue.path, issue.line) == ("lab.yml", "clusters[0].nodes[0].rack", 6)
    assert str(issue) == "lab.yml:6: clusters[0].nodes[0].rack: no rack named 'r1'"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("name",), "name"),
        (("clusters", 0, "nodes", 2, "rack"), "clusters[0].nodes[2].rack"),
        ((0, "a"), "[0].a"),
        (("links", 1, "endpoints", 0), "links[1].endpoints[0]"),
    ],
)
def test_format_path(path: tuple, text: str) -> None:
    assert format_path(path) == text


def test_duplicate_key_names_both_lines() -> None:
    err = _error("name: x\nasn: 1\nroles: []\nasn: 2\n")
    (issue,) = err.issues
    assert issue.line == 4
    assert issue.path == "asn"
    assert "duplicate key 'asn'" in issue.message
    assert "line 2" in issue.message


def test_duplicate_key_in_nested_list_item() -> None:
    text = "routers:\n  - name: a\n    asn: 1\n  - name: b\n    asn: 2\n    name: c\n"
    (issue,) = _error(text).issues
    assert issue.path == "routers[1].name"
    assert issue.line == 6
    assert "line 4" in issue.message


def test_every_duplicate_key_is_reported() -> None:
    err = _error("a: 1\na: 2\nb: 1\nb: 2\n")
    assert [(i.path, i.line) for i in err.issues] == [("a", 2), ("b", 4)]


def test_equal_keys_in_different_mappings_are_fine() -> None:
    data, _ = _one("a: {name: x}\nb: {name: y}\n")
    assert data == {"a": {"name": "x"}, "b": {"name": "y"}}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\ndescription: a: b\n", 2),
        ("name: x\nlist:\n  - a\n - b\n", 4),
        ("name: x\nbad: [1, 2\n", 3),
        ("name: x\n\tindented: tab\n", 2),
    ],
)
def test_invalid_yaml_names_the_line(text: str, line: int) -> None:
    (issue,) = _error(text).issues
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line == line
    assert issue.file == "lab.yml"


def test_multi_document_file_has_one_map_per_document() -> None:
    text = "# comment\nkind: A\nspec: {x: 1}\n---\nkind: B\nspec:\n  y: 2\n---\nkind: C\n"
    docs, maps = loads_documents(text, "res.yaml")
    assert [d["kind"] for d in docs] == ["A", "B", "C"]
    assert len(maps) == 3
    assert maps[0].line(("spec", "x")) == 3
    assert maps[1].line(("spec", "y")) == 7  # lines count from the top of the file
    assert maps[2].line(("kind",)) == 9
    assert all(m.file == "res.yaml" for m in maps)


def test_leading_document_marker_is_ignored() -> None:
    docs, maps = loads_documents("---\nkind: A\n", "res.yaml")
    assert docs == [{"kind": "A"}]
    assert maps[0].line(("kind",)) == 2


@pytest.mark.parametrize("text", ["kind: A\n---\n", "kind: A\n---\n---\nkind: B\n", "kind: A\n---\n# x\n"])
def test_empty_documents_are_skipped(text: str) -> None:
    docs, maps = loads_documents(text, "res.yaml")
    assert None not in docs
    assert len(docs) == len(maps)


def test_duplicate_key_in_later_document() -> None:
    (issue,) = _error("a: 1\n---\nb: 1\nb: 2\n").issues
    assert issue.line == 4


def test_empty_text_has_no_documents() -> None:
    assert loads_documents("", "x.yml") == ([], [])
    assert loads_documents("# only a comment\n", "x.yml") == ([], [])


def test_load_documents_reads_a_file_with_display_name(tmp_path: Path) -> None:
    p = tmp_path / "lab.yml"
    p.write_text("a: 1\nb:\n  c: 2\n")
    docs, maps = load_documents(p, "shown.yml")
    assert docs == [{"a": 1, "b": {"c": 2}}]
    assert maps[0].file == "shown.yml"
    assert maps[0].line(("b", "c")) == 3


def test_load_documents_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as ei:
        load_documents(tmp_path / "nope.yml")
    (issue,) = ei.value.issues
    assert issue.file == str(tmp_path / "nope.yml")
    assert "cannot read file" in issue.message


def test_aliases_resolve_like_safe_load() -> None:
    text = "a: &x [1, 2]\nb: *x\n"
    data, _ = _one(text)
    assert data == yaml.safe_load(text)


def test_merge_keys_resolve_like_safe_load() -> None:
    text = "base: &n {rack: r1, asn: 65010}\nnodes:\n  - <<: *n\n    name: a\n"
    data, _ = _one(text)
    assert data == yaml.safe_load(text)
