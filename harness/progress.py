"""Progress reporting for long steps. The library reports; only front-ends (CLI) draw."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def step(self, title: str, total: int | None = None) -> StepHandle: ...


class StepHandle(Protocol):
    def advance(self, n: int = 1, detail: str | None = None) -> None: ...
    def __enter__(self) -> StepHandle: ...
    def __exit__(self, *exc: object) -> None: ...


class _NullStep:
    def advance(self, n: int = 1, detail: str | None = None) -> None:
        pass

    def __enter__(self) -> _NullStep:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class NullProgress:
    """Reports nothing (library default)."""

    def step(self, title: str, total: int | None = None) -> _NullStep:
        return _NullStep()


class RichProgress:
    """Draws each step as a progress bar on stderr (used by the CLI)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, emoji=False)

    @contextmanager
    def _bar(self, title: str, total: int | None) -> Iterator[_RichStep]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(title, total=total, detail="")
            yield _RichStep(bar, task)
            if total is not None:
                bar.update(task, completed=total)

    def step(self, title: str, total: int | None = None) -> _RichStepContext:
        return _RichStepContext(self, title, total)


class _RichStep:
    def __init__(self, bar, task) -> None:  # type: ignore[no-untyped-def]
        self.bar, self.task = bar, task

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        self.bar.update(self.task, advance=n, detail=detail or "")


class _RichStepContext:
    def __init__(self, owner: RichProgress, title: str, total: int | None) -> None:
        self._cm = owner._bar(title, total)
        self._step: _RichStep | None = None

    def __enter__(self) -> _RichStep:
        self._step = self._cm.__enter__()
        return self._step

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)  # type: ignore[arg-type]
