"""Fakes of the daemon's collaborators, shared by the tests that run a real ``Daemon``.

``FakeChecks`` stands in for ``lvsd.checks.manager.CheckManager``: the test decides every verdict
and ``set`` delivers it as the real manager would. ``NoHA`` is an HA manager that does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lvsd.core.health import ServerHealth


class FakeChecks:
    """Stands in for CheckManager: verdicts come from the test (``set``), not from probes.
    ``instances`` lists every one made (a test that reads it clears it first)."""

    instances: list[FakeChecks] = []

    def __init__(
        self, on_change: Callable[[Any, ServerHealth], None], state: Mapping[Any, ServerHealth] | None = None
    ) -> None:
        self.on_change = on_change
        self.state: dict[Any, ServerHealth] = dict(state or {})
        self.reloads = 0
        self.stopped = False
        FakeChecks.instances.append(self)

    async def start(self, config: Any) -> None:
        pass

    async def reload(self, config: Any) -> None:
        self.reloads += 1

    async def stop(self) -> None:
        self.stopped = True

    def snapshot(self) -> dict[Any, ServerHealth]:
        return dict(self.state)

    def set(self, sid: Any, h: ServerHealth) -> None:
        """Deliver a verdict for server ``sid`` (service name, DestKey) as a transition."""
        self.state[sid] = h
        self.on_change(sid, h)


class NoHA:
    """An HA manager that does nothing (the daemon's role stays its default)."""

    def __init__(self, *a: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def reload(self, config: Any) -> None:
        pass

    async def stop(self, on_stop: str) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}
