"""Felix's live-migration route-priority state machine, per VM IP on one node (pure logic).

| state    | route on this node                 | entered when                                   |
|----------|------------------------------------|------------------------------------------------|
| Base     | /32 at normal metric if VM is here | start, or the convergence timer expired        |
| Target   | none; capture on the VM interface  | a migration target pod is created here         |
| Live     | /32 at elevated metric             | GARP (sender IP == VM IP) or RARP from the VM  |
| TimeWait | /32 at elevated metric, for the    | the migration ended (or the GARP was missed)   |
|          | convergence time                   |                                                |

A new migration that makes this node the source resets it to Base; a failed migration
never installs a target route. (shared/design/calico-semantics.md; an emulation of
calico-node's Felix, not Felix itself.)

The machine is deterministic: every input carries the time `now` and the output says
which route the node should have. Timers are deadlines the I/O layer polls with `tick`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.Enum):
    BASE = "Base"
    TARGET = "Target"
    LIVE = "Live"
    TIME_WAIT = "TimeWait"


@dataclass(frozen=True)
class Priorities:
    normal: int = 1024
    elevated: int = 512
    convergence: float = 30.0  # liveMigrationRouteConvergenceTime, seconds


@dataclass(frozen=True)
class Transition:
    at: float
    state: State
    reason: str
    metric: int | None  # the route this node should now have (None: no route)


@dataclass
class VMRoute:
    """The state of one VM IP on one node."""

    vm: str
    priorities: Priorities
    running_here: bool = False
    state: State = State.BASE
    deadline: float | None = None
    history: list[Transition] = field(default_factory=list)

    @property
    def metric(self) -> int | None:
        """The kernel metric of this node's /32 for the VM, or None for no route."""
        if self.state in (State.LIVE, State.TIME_WAIT):
            return self.priorities.elevated
        if self.state is State.BASE and self.running_here:
            return self.priorities.normal
        return None

    def _go(self, now: float, state: State, reason: str) -> Transition:
        self.state = state
        self.deadline = now + self.priorities.convergence if state is State.TIME_WAIT else None
        t = Transition(now, state, reason, self.metric)
        self.history.append(t)
        return t

    # -- inputs ------------------------------------------------------------------------
    def start(self, now: float, *, running_here: bool) -> Transition:
        self.running_here = running_here
        return self._go(now, State.BASE, "VM running here" if running_here else "start")

    def target_created(self, now: float) -> Transition:
        """The migration target pod was created on this node."""
        self.running_here = False
        return self._go(now, State.TARGET, "migration target created")

    def activity(self, now: float, kind: str) -> Transition | None:
        """GARP or RARP from the VM seen on its interface here."""
        if self.state is not State.TARGET:
            return None
        self.running_here = True
        return self._go(now, State.LIVE, f"{kind} from VM")

    def migration_ended(self, now: float, *, succeeded: bool) -> Transition | None:
        if self.state is State.LIVE:
            return self._go(now, State.TIME_WAIT, "migration ended")
        if self.state is State.TARGET:
            if succeeded:  # the VM runs here but its GARP was missed: elevate for the timer anyway
                self.running_here = True
                return self._go(now, State.TIME_WAIT, "migration ended, GARP missed")
            return self._go(now, State.BASE, "migration failed")
        return None

    def became_source(self, now: float) -> Transition:
        """A new migration makes this node the source: back to Base (normal route while the VM is here)."""
        self.running_here = True
        return self._go(now, State.BASE, "migration source")

    def removed(self, now: float) -> Transition:
        """The VM's pod on this node is gone."""
        self.running_here = False
        return self._go(now, State.BASE, "VM left this node")

    def tick(self, now: float) -> Transition | None:
        """Fire the convergence timer if due."""
        if self.state is State.TIME_WAIT and self.deadline is not None and now >= self.deadline:
            return self._go(now, State.BASE, "convergence time elapsed")
        return None
