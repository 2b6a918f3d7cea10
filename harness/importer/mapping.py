"""The customer's addresses and names and the lab's: written by `kvlab import` as
`customer-map.yaml` next to the lab file, read by `--as-customer` (status, routes, migrate) to
print what the lab shows in the customer's own addresses.

Exact entries first (a node's, a ToR's, a VM's address; a pool, a rack subnet); an address or
prefix inside a mapped prefix is translated by its offset in it (a lab block of a pool reads as
the block at the same offset of the customer's pool)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError, SpecError
from harness.yamlsrc import load_documents, shown

MAP_FILE = "customer-map.yaml"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPV4_TOKEN = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\w.])")


class MappingError(InputError):
    """A lab without a usable customer mapping (exit 2)."""


@dataclass
class CustomerMap:
    """Customer -> lab: node and VM names, addresses, prefixes."""

    lab: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    vms: dict[str, str] = field(default_factory=dict)
    addresses: dict[Address, Address] = field(default_factory=dict)
    prefixes: dict[Network, Network] = field(default_factory=dict)

    # -- files ---------------------------------------------------------------------------
    def to_yaml_data(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "nodes": dict(self.nodes),
            "vms": dict(self.vms),
            "addresses": {str(k): str(v) for k, v in self.addresses.items()},
            "prefixes": {str(k): str(v) for k, v in self.prefixes.items()},
        }

    @classmethod
    def load(cls, path: Path) -> CustomerMap:
        """Read a mapping file (hostile input: safe YAML, every entry typed). MappingError if bad."""
        try:
            docs, _ = load_documents(path, str(path))
        except SpecError as e:
            raise MappingError("; ".join(str(i) for i in e.issues)) from None
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise MappingError(f"{path}: not a kvlab import mapping (one YAML mapping)")
        doc = docs[0]
        try:
            return cls(
                lab=str(doc.get("lab", "")),
                nodes=_strings(doc.get("nodes")),
                vms=_strings(doc.get("vms")),
                addresses={
                    ipaddress.ip_address(k): ipaddress.ip_address(v)
                    for k, v in _strings(doc.get("addresses")).items()
                },
                prefixes={
                    ipaddress.ip_network(k): ipaddress.ip_network(v)
                    for k, v in _strings(doc.get("prefixes")).items()
                },
            )
        except ValueError as e:
            raise MappingError(f"{path}: {e}") from None

    @classmethod
    def of_lab(cls, spec_source: str) -> CustomerMap:
        """The mapping next to a lab file, or MappingError saying the lab was not imported."""
        path = Path(spec_source).parent / MAP_FILE
        if not path.is_file():
            raise MappingError(
                f"--as-customer: {spec_source} was not made by 'kvlab import' (no {MAP_FILE} next to it)"
            )
        return cls.load(path)

    # -- translating ---------------------------------------------------------------------
    def to_customer_address(self, ip: Address) -> Address:
        back = {v: k for k, v in self.addresses.items()}
        if ip in back:
            return back[ip]
        for customer, lab in self.prefixes.items():
            if ip.version == lab.version and ip in lab:
                return _moved(ip, lab, customer) or ip
        return ip

    def to_customer_prefix(self, net: Network) -> Network:
        back = {v: k for k, v in self.prefixes.items()}
        if net in back:
            return back[net]
        if net.num_addresses == 1:
            ip = self.to_customer_address(net.network_address)
            return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
        for customer, lab in self.prefixes.items():
            if net.version == lab.version and net.subnet_of(lab):  # type: ignore[arg-type]
                start = _moved(net.network_address, lab, customer)
                if start is not None:
                    return ipaddress.ip_network(f"{start}/{net.prefixlen}", strict=False)
        return net

    def to_lab_prefix(self, text: str) -> str:
        """A prefix or address the user gave in customer terms, as the lab's (unknown: as given)."""
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return text
        if net in self.prefixes:
            return str(self.prefixes[net])
        if net.num_addresses == 1 and net.network_address in self.addresses:
            ip = self.addresses[net.network_address]
            return f"{ip}/{ip.max_prefixlen}"
        for customer, lab in self.prefixes.items():
            if net.version == customer.version and net.subnet_of(customer):  # type: ignore[arg-type]
                start = _moved(net.network_address, customer, lab)
                if start is not None and net.prefixlen >= lab.prefixlen:
                    return str(ipaddress.ip_network(f"{start}/{net.prefixlen}", strict=False))
        return text

    def text(self, value: str) -> str:
        """Every IPv4 address or prefix in `value` in the customer's terms."""

        def swap(m: re.Match[str]) -> str:
            try:
                ip = ipaddress.ip_address(m.group(1))
                if m.group(2):
                    net = ipaddress.ip_network(m.group(0), strict=False)
                    if net.network_address != ip:  # an interface (address/prefix length)
                        return f"{self.to_customer_address(ip)}{m.group(2)}"
                    return str(self.to_customer_prefix(net))
                return str(self.to_customer_address(ip))
            except ValueError:
                return m.group(0)

        return _IPV4_TOKEN.sub(swap, value)

    def json(self, value: Any) -> Any:
        """A JSON document with every address and prefix in it in the customer's terms."""
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def lab_name(self, kind: str, name: str) -> str:
        """A node or VM named the customer's way ('node.example.com', 'namespace/vm' or 'vm'),
        as the lab names it; a lab name stays as it is."""
        table = self.nodes if kind == "node" else self.vms
        if name in table:
            return table[name]
        if kind == "vm":
            short = [lab for customer, lab in table.items() if customer.rpartition("/")[2] == name]
            if len(short) == 1:
                return short[0]
        return name


def _moved(ip: Address, src: Network, dst: Network) -> Address | None:
    offset = int(ip) - int(src.network_address)
    if offset >= dst.num_addresses:
        return None
    return ipaddress.ip_address(int(dst.network_address) + offset)


def _strings(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"expected a mapping of strings, got {shown(value)}")
    return dict(value)


__all__ = ["MAP_FILE", "CustomerMap", "MappingError"]
