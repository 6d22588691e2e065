"""The Backend interface: the narrow door through which everything reads and writes an IPVS table.

Two implementations obey one contract (tests/contract/): ``netlink`` (the kernel) and ``memory``
(an in-process twin with the kernel's semantics and errors). Writes are expressed as ``Op``
values so that a caller can batch many of them into one ``apply()``; the single-operation
methods are conveniences over it.

Errors: ``ValueInvalid`` (model.py) before anything is sent; ``IPVSError`` for a refusal by the
kernel (or its twin), carrying the operation and errno; ``BatchError`` when some operations of
a batch failed, saying which were applied and which were not.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from .model import (
    Connection,
    DaemonState,
    Destination,
    DestKey,
    Info,
    Service,
    ServiceEntry,
    ServiceKey,
    SyncDaemon,
    Timeouts,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (lvsadm's start-up)
if TYPE_CHECKING:
    from typing import Any


class OpKind(Enum):
    """Every write the IPVS family accepts."""

    ADD_SERVICE = "add-service"
    EDIT_SERVICE = "edit-service"
    DEL_SERVICE = "delete-service"
    ADD_DEST = "add-server"
    EDIT_DEST = "edit-server"
    DEL_DEST = "delete-server"
    FLUSH = "flush"
    ZERO = "zero"
    SET_TIMEOUTS = "set-timeouts"
    START_DAEMON = "start-daemon"
    STOP_DAEMON = "stop-daemon"


@dataclass(frozen=True, slots=True)
class Op:
    """One write. Which fields matter depends on ``kind``:

    - ADD/EDIT_SERVICE: ``service``; DEL_SERVICE: ``key``
    - ADD/EDIT_DEST: ``key`` + ``dest``; DEL_DEST: ``key`` + ``dest`` (only its key is used)
    - ZERO: ``key`` or None for all; FLUSH: nothing
    - SET_TIMEOUTS: ``timeouts``; START_DAEMON: ``daemon``; STOP_DAEMON: ``daemon`` (state used)
    """

    kind: OpKind
    key: ServiceKey | None = None
    service: Service | None = None
    dest: Destination | None = None
    timeouts: Timeouts | None = None
    daemon: SyncDaemon | None = None

    # constructors, so call sites read like the operation they perform
    @classmethod
    def add_service(cls, svc: Service) -> Op:
        return cls(OpKind.ADD_SERVICE, svc.key, service=svc)

    @classmethod
    def edit_service(cls, svc: Service) -> Op:
        return cls(OpKind.EDIT_SERVICE, svc.key, service=svc)

    @classmethod
    def del_service(cls, key: ServiceKey) -> Op:
        return cls(OpKind.DEL_SERVICE, key)

    @classmethod
    def add_dest(cls, key: ServiceKey, dest: Destination) -> Op:
        return cls(OpKind.ADD_DEST, key, dest=dest)

    @classmethod
    def edit_dest(cls, key: ServiceKey, dest: Destination) -> Op:
        return cls(OpKind.EDIT_DEST, key, dest=dest)

    @classmethod
    def del_dest(cls, key: ServiceKey, dest: Destination | DestKey) -> Op:
        if isinstance(dest, DestKey):
            dest = Destination(dest)
        return cls(OpKind.DEL_DEST, key, dest=dest)

    @classmethod
    def flush(cls) -> Op:
        return cls(OpKind.FLUSH)

    @classmethod
    def zero(cls, key: ServiceKey | None = None) -> Op:
        return cls(OpKind.ZERO, key)

    @classmethod
    def set_timeouts(cls, t: Timeouts) -> Op:
        return cls(OpKind.SET_TIMEOUTS, timeouts=t)

    @classmethod
    def start_daemon(cls, d: SyncDaemon) -> Op:
        return cls(OpKind.START_DAEMON, daemon=d)

    @classmethod
    def stop_daemon(cls, state: int) -> Op:
        return cls(OpKind.STOP_DAEMON, daemon=SyncDaemon(state=state, mcast_ifn=""))

    def validate(self) -> None:
        """Check every value this operation would send; raise ValueInvalid before sending."""
        k = self.kind
        if k in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE):
            assert self.service is not None
            self.service.validate()
        elif k in (OpKind.DEL_SERVICE,):
            assert self.key is not None
            self.key.validate()
        elif k in (OpKind.ADD_DEST, OpKind.EDIT_DEST, OpKind.DEL_DEST):
            assert self.key is not None and self.dest is not None
            self.key.validate()
            if k is OpKind.DEL_DEST:
                Destination(self.dest.key).validate(None)
            else:
                self.dest.validate(self.key.af)
        elif k is OpKind.ZERO:
            if self.key is not None:
                self.key.validate()
        elif k is OpKind.SET_TIMEOUTS:
            assert self.timeouts is not None
            self.timeouts.validate()
        elif k is OpKind.START_DAEMON:
            assert self.daemon is not None
            self.daemon.validate()
        elif k is OpKind.STOP_DAEMON:
            assert self.daemon is not None
            if self.daemon.state not in (DaemonState.MASTER, DaemonState.BACKUP):
                from .model import ValueInvalid

                raise ValueInvalid("state", self.daemon.state, "must be master or backup")

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.key is not None:
            parts.append(str(self.key))
        if self.dest is not None:
            parts.append(f"-> {self.dest.key}")
        if self.daemon is not None:
            parts.append(DaemonState(self.daemon.state).name.lower())
        return " ".join(parts)


class IPVSError(Exception):
    """The kernel (or its in-memory twin) refused an operation."""

    def __init__(self, op: Op | str, err: int, message: str | None = None) -> None:
        self.op = op
        self.errno = err
        self.strerror = message or _errno.errorcode.get(err, str(err))
        super().__init__(f"{op}: {self.strerror} (errno {err})")


class BatchError(IPVSError):
    """Some operations of a batch failed. The kernel goes on after a failed message, so
    ``applied`` may include operations after the first failure; ``failed`` pairs each refused
    operation with its error."""

    def __init__(self, applied: list[Op], failed: list[tuple[Op, IPVSError]]) -> None:
        self.applied = applied
        self.failed = failed
        first_op, first = failed[0]
        super().__init__(first_op, first.errno, first.strerror)
        self.args = (
            f"{len(failed)} of {len(applied) + len(failed)} operations failed; first: {first}",
        )


class BackendUnavailable(Exception):
    """The backend cannot be used at all (no IPVS in this kernel, no permission, bad state file)."""


class Backend:
    """Read and write one IPVS table. Subclasses implement the abstract methods below."""

    name = "abstract"

    # --- reads ---
    def info(self) -> Info:
        raise NotImplementedError

    def services(self) -> list[Service]:
        """All services in kernel order."""
        raise NotImplementedError

    def service(self, key: ServiceKey) -> Service:
        """One service; IPVSError(ESRCH) if there is none."""
        raise NotImplementedError

    def dests(self, key: ServiceKey) -> list[Destination]:
        """Destinations of one service in kernel order; IPVSError(ESRCH) if no such service."""
        raise NotImplementedError

    def dump(self) -> dict[ServiceKey, ServiceEntry]:
        """The whole table: every service with its destinations."""
        out: dict[ServiceKey, ServiceEntry] = {}
        for svc in self.services():
            out[svc.key] = ServiceEntry(svc, {d.key: d for d in self.dests(svc.key)})
        return out

    def timeouts(self) -> Timeouts:
        raise NotImplementedError

    def daemons(self) -> list[SyncDaemon]:
        raise NotImplementedError

    def connections(self) -> list[Connection]:
        raise NotImplementedError

    # --- writes ---
    def apply(self, ops: Sequence[Op]) -> None:
        """Apply operations in order, batched. Every op is validated before any is sent.
        Raises BatchError (or IPVSError for a batch of one) if any failed."""
        raise NotImplementedError

    def _one(self, op: Op) -> None:
        try:
            self.apply([op])
        except BatchError as e:
            raise e.failed[0][1] from None

    def add_service(self, svc: Service) -> None:
        self._one(Op.add_service(svc))

    def edit_service(self, svc: Service) -> None:
        self._one(Op.edit_service(svc))

    def del_service(self, key: ServiceKey) -> None:
        self._one(Op.del_service(key))

    def add_dest(self, key: ServiceKey, dest: Destination) -> None:
        self._one(Op.add_dest(key, dest))

    def edit_dest(self, key: ServiceKey, dest: Destination) -> None:
        self._one(Op.edit_dest(key, dest))

    def del_dest(self, key: ServiceKey, dest: Destination | DestKey) -> None:
        self._one(Op.del_dest(key, dest))

    def flush(self) -> None:
        self._one(Op.flush())

    def zero(self, key: ServiceKey | None = None) -> None:
        self._one(Op.zero(key))

    def set_timeouts(self, t: Timeouts) -> None:
        self._one(Op.set_timeouts(t))

    def start_daemon(self, d: SyncDaemon) -> None:
        self._one(Op.start_daemon(d))

    def stop_daemon(self, state: int) -> None:
        self._one(Op.stop_daemon(state))

    def close(self) -> None:
        """Release sockets or write back state."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate_all(ops: Iterable[Op]) -> None:
    """Validate every op; the first bad value raises ValueInvalid before anything is sent."""
    for op in ops:
        op.validate()


def open_backend(name: str = "netlink", **kwargs: Any) -> Backend:
    """Open a backend by name ('netlink' or 'memory'); imports only the one asked for."""
    if name == "netlink":
        from .netlink import NetlinkBackend

        return NetlinkBackend(**kwargs)
    if name == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(**kwargs)
    raise BackendUnavailable(f"unknown backend {name!r} (netlink or memory)")
