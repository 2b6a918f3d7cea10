"""The rules for names kvlab turns into namespace, interface and directory names (no imports:
the CLI checks a name before it loads anything heavy)."""

from __future__ import annotations

# Entity names become parts of namespace names and Linux interface names (<= 15 characters).
NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,13}[a-z0-9])?$"
# Lab (instance) names become namespace prefixes `kvlab.<lab>.` and run directories.
LAB_NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$"
# The lab `kvlab` means when none is named (labs/default.yml).
DEFAULT_LAB = "default"
