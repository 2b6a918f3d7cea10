"""Typed exceptions. The library raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

from dataclasses import dataclass


class KvlabError(Exception):
    """Base class of every error kvlab raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a lab file: which file, which field, why."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class SpecError(KvlabError):
    """A lab spec (or a resource it names) is invalid. Carries every issue found, not just the first."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class InputError(KvlabError):
    """Bad input: a name, path or value kvlab refuses before it creates anything (CLI exit 2)."""


class LabNameError(InputError, ValueError):
    """An instance name that breaks the lab-name rule (see `harness.state.check_lab_name`)."""


class UnsafePathError(InputError):
    """A path kvlab would create or write as root escapes its directory or is not safely its own."""


class InvalidRequest(InputError):
    """A request that names something the lab does not have, or asks for the impossible (an
    unknown VM or node, a migration to where the VM already runs): bad input, exit 2."""


class LabError(KvlabError):
    """A lab could not be brought up, found, or torn down."""


class LabExists(InvalidRequest):
    """A lab of that name exists and was built from another spec: not replaced without asking."""


class UnknownLabError(LabError, InputError):
    """No lab runs under the name given (bad input: CLI exit 2)."""


class PreflightError(LabError):
    """The machine lacks something a runtime needs. `missing` lists every missing prerequisite."""

    def __init__(self, runtime: str, missing: list[str]):
        self.runtime = runtime
        self.missing = list(missing)
        lines = "\n".join(f"  - {m}" for m in self.missing)
        super().__init__(f"runtime '{runtime}' cannot run on this machine:\n{lines}")


class WaitTimeout(KvlabError, AssertionError):
    """A condition did not hold before its deadline. An AssertionError so pytest reports it as a failure."""
