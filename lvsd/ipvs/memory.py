"""MemoryBackend: an in-process twin of the kernel's IPVS table, with the kernel's semantics and errors.

It lets logic tests run fast without root and lets a user try every ``lvsadm`` command without
a director (``lvsadm --backend memory --state FILE``). Every behaviour below was read in
``net/netfilter/ipvs/ip_vs_ctl.c`` / ``ip_vs_sync.c`` (Linux 6.1) and confirmed on the Debian
6.1 kernel over generic netlink; ``tests/contract/`` runs the same suite against both backends.

Kernel semantics reproduced (errno in brackets):

* services: add of an existing key [EEXIST]; edit/delete/zero/get of a missing one [ESRCH];
  unknown scheduler or persistence engine [ENOENT] (6.1 has no ``twos``; ``none`` is accepted and
  means "no scheduler"); IPv6 prefix outside 1..128 [EINVAL]. ``edit`` replaces scheduler, flags,
  persistence timeout, netmask and persistence engine (an empty ``pe_name`` removes it). The
  persistence timeout is stored in jiffies in a u32 (HZ=250): values above 17179869 s wrap, as
  in the kernel. HASHED is the kernel's own flag (the model strips it). The service address is
  never checked. Listing order: the kernel's is hash-bucket order (not reproducible, callers must
  not depend on it); here address/port services in insertion order, then fwmark services.
* destinations, in the kernel's order of checks: on a missing service [ESRCH]; a family
  different from the service's needs the tunnel method (refused by ``Op.validate``) and no
  running sync daemon [EINVAL]; l_threshold > u_threshold [ERANGE] (also when u_threshold is 0);
  u_threshold above INT_MAX [EINVAL] (measured on 6.1; the model allows any u32); GUE tunnel
  type with tun_port 0 [EINVAL] (whatever the forwarding method: tunnel options are stored for
  every method); duplicate [EEXIST]; edit/delete of a missing one [ENOENT]; a new destination
  whose address is not unicast [EINVAL]: 0.0.0.0, 224.0.0.0/4, 255.255.255.255, 127.255.255.255
  (lo's broadcast), ::, ff00::/8, fe80::/10, ::ffff:0:0/96 (other interfaces' broadcast
  addresses are host specific and not modelled). Destinations are listed newest first (the
  kernel adds at the head of its list); an edit keeps the position. The kernel keeps a deleted
  destination in a trash list (a few minutes once idle, IP_VS_DEST_TRASH_PERIOD; as long as
  connections still use it) and revives it, counters included, if it is added again to the same
  service: invisible without traffic, not modelled (a re-added destination starts at zero).
* timeouts: defaults tcp 900, tcpfin 120, udp 300; 0 in a set leaves a value unchanged; a value
  above INT_MAX/HZ = 8589934 s refuses the whole set [EINVAL].
* sync daemons: not running on stop [ESRCH]; on start, in this order: a non-multicast group
  [EINVAL], any mixed-family destination in the table [EINVAL], unknown interface [ENODEV],
  already running [EEXIST].
  The listing shows what the kernel runs: group 224.0.0.81, port 8848 and ttl 1 when not given;
  sync_maxlen clamped to 1..65535-hlen (master) or 1024..65535-hlen (backup), or when 0 the
  master's 1500-hlen and the backup's clamp(mtu, 1500, 65535)-hlen (hlen = 28 IPv4, 48 IPv6).
  Not modelled: a kernel master with an IPv6 group on an interface without an IPv6 multicast
  route fails with ENETUNREACH (seen on ``lo``); interfaces are this host's (or ``interfaces=``).
* ``flush`` removes services only (daemons, timeouts, connections stay); ``zero`` of one service
  zeroes it and its destinations, ``zero`` without a key zeroes everything.
* ``info()``: version 1.2.1, connection table size 4096.

Batches behave like the kernel: every op is validated first (``ValueInvalid``, nothing applied),
then each is applied independently in order; refusals are collected into ``BatchError(applied,
failed)`` (a batch of one raises its ``IPVSError``).

State persistence: with ``path``, the state is loaded from a JSON file, and every write that
changed something is saved atomically (temporary file + rename) under an ``fcntl`` lock on
``path + ".lock"``; each operation re-reads the file if another process changed it, so concurrent
``lvsadm`` invocations never lose writes. A corrupt or unreadable file raises
``BackendUnavailable`` naming the file.

Tests may inject what only traffic produces: ``set_connections()``, ``set_stats()`` and
``set_counts()``.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, replace

from .backend import Backend, BackendUnavailable, BatchError, IPVSError, Op, OpKind, validate_all
from .model import (
    AF_INET,
    AF_INET6,
    PERSISTENCE_ENGINES,
    SCHEDULERS,
    ZERO_STATS,
    Connection,
    DaemonState,
    Destination,
    DestKey,
    Info,
    Service,
    ServiceEntry,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
    ValueInvalid,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (lvsadm's start-up)
if TYPE_CHECKING:
    from typing import Any

#: Linux 6.1's IPVS version (1.2.1) and default connection-table size (conn_tab_bits=12).
IPVS_VERSION = (1 << 16) | (2 << 8) | 1
CONN_TAB_SIZE = 4096
#: Debian's CONFIG_HZ: persistence timeouts are kept in jiffies, connection timeouts bounded by INT_MAX/HZ.
HZ = 250
INT_MAX = 0x7FFFFFFF
DEFAULT_TIMEOUTS = Timeouts(tcp=900, tcp_fin=120, udp=300)
#: What a 6.1 kernel loads on demand: every scheduler but ``twos`` (added in 6.7), plus "none".
KERNEL_SCHEDULERS = frozenset(s for s in SCHEDULERS if s != "twos") | {"none"}
KERNEL_PERSISTENCE_ENGINES = frozenset(PERSISTENCE_ENGINES)
SYNC_GROUP = "224.0.0.81"
SYNC_PORT = 8848

STATE_FORMAT = "lvsd-memory-state"
STATE_VERSION = 1

_V4_REFUSED = frozenset(
    ipaddress.IPv4Address(a) for a in ("0.0.0.0", "255.255.255.255", "127.255.255.255")
)
_V6_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


class _Refused(Exception):
    """Internal: the kernel would refuse this op with ``errno``."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


def _host_interfaces() -> dict[str, int]:
    """This host's network interfaces and their MTU (what the sync daemon would bind to)."""
    out: dict[str, int] = {}
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/mtu") as f:
                out[name] = int(f.read().strip())
        except (OSError, ValueError):
            out[name] = 65536 if name == "lo" else 1500
    return out


def _unicast_dest(af: int, addr: str) -> bool:
    """May the kernel create a destination with this address (ip_vs_new_dest's address check)?"""
    if af == AF_INET:
        ip4 = ipaddress.IPv4Address(addr)
        return not (ip4 in _V4_REFUSED or ip4.is_multicast)
    ip6 = ipaddress.IPv6Address(addr)
    return not (ip6.is_unspecified or ip6.is_multicast or ip6 in _V6_LINK_LOCAL or ip6.ipv4_mapped is not None)


def _wrap_timeout(seconds: int) -> int:
    """The persistence timeout as the kernel reads it back: seconds*HZ kept in a u32 jiffies field."""
    return ((seconds * HZ) & 0xFFFFFFFF) // HZ


class _Svc:
    """One service and its destinations (insertion order: oldest first; listed newest first)."""

    __slots__ = ("service", "dests")

    def __init__(self, service: Service, dests: dict[DestKey, Destination] | None = None) -> None:
        self.service = service
        self.dests: dict[DestKey, Destination] = dests if dests is not None else {}

    def listed(self) -> list[Destination]:
        return list(reversed(self.dests.values()))


class _State:
    """Everything a kernel's IPVS holds that the backend can read back."""

    __slots__ = ("services", "timeouts", "daemons", "connections")

    def __init__(self) -> None:
        self.services: dict[ServiceKey, _Svc] = {}
        self.timeouts: Timeouts = DEFAULT_TIMEOUTS
        self.daemons: dict[int, SyncDaemon] = {}
        self.connections: list[Connection] = []


class MemoryBackend(Backend):
    """The kernel's IPVS table, in memory (optionally persisted to a JSON state file).

    ``path`` (alias ``state``): the state file; None keeps everything in this process.
    ``interfaces``: interface name -> MTU known to the sync daemon (default: this host's).
    ``schedulers`` / ``persistence_engines``: what the emulated kernel can load (default: 6.1's).
    """

    name = "memory"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        state: str | os.PathLike[str] | None = None,
        interfaces: Mapping[str, int] | None = None,
        schedulers: Iterable[str] | None = None,
        persistence_engines: Iterable[str] | None = None,
    ) -> None:
        if path is not None and state is not None and os.fspath(path) != os.fspath(state):
            raise ValueError("give the state file once: path or state")
        chosen = path if path is not None else state
        self.path: str | None = os.fspath(chosen) if chosen is not None else None
        self._interfaces = dict(interfaces) if interfaces is not None else None
        self.schedulers = frozenset(schedulers) if schedulers is not None else KERNEL_SCHEDULERS
        self.persistence_engines = (
            frozenset(persistence_engines) if persistence_engines is not None else KERNEL_PERSISTENCE_ENGINES
        )
        self._state = _State()
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._signature: tuple[int, int, int, int] | None = None
        if self.path is not None:
            with self._locked(write=False):
                pass  # load now: a bad state file is reported at open, not at first use

    # --- state file -------------------------------------------------------------------------------

    def _lock_path(self) -> str:
        assert self.path is not None
        return self.path + ".lock"

    def _open_lock(self) -> int | None:
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except PermissionError:
                try:  # a read-only user may still lock an existing lock file for reading
                    self._lock_fd = os.open(self._lock_path(), os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    self._lock_fd = None
            except OSError as e:
                raise BackendUnavailable(
                    f"memory state file {self.path}: cannot create lock file {self._lock_path()}: {e.strerror}"
                ) from None
        return self._lock_fd

    @contextmanager
    def _locked(self, write: bool) -> Iterator[None]:
        """Hold the in-process mutex and, with a state file, the file lock; reload if changed."""
        with self._mutex:
            if self.path is None:
                yield
                return
            import fcntl

            fd = self._open_lock()
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                except OSError as e:
                    raise BackendUnavailable(f"memory state file {self.path}: cannot lock: {e.strerror}") from None
            try:
                self._refresh()
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _stat_signature(self) -> tuple[int, int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BackendUnavailable(f"memory state file {self.path}: {e.strerror}") from None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        """Re-read the state file if it is not the one we last read or wrote."""
        sig = self._stat_signature()
        if sig == self._signature and sig is not None:
            return
        if sig is None:
            self._state = _State()
            self._signature = None
            return
        assert self.path is not None
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise BackendUnavailable(f"memory state file {self.path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise BackendUnavailable(f"memory state file {self.path}: not UTF-8 text") from None
        self._state = self._parse_state(text)
        self._signature = sig

    def _parse_state(self, text: str) -> _State:
        where = f"memory state file {self.path}"
        if not text.strip():
            return _State()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise BackendUnavailable(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except RecursionError:
            raise BackendUnavailable(f"{where}: not valid JSON (nested too deeply)") from None
        try:
            return _state_from_json(doc)
        except RecursionError:
            raise BackendUnavailable(f"{where}: bad content: nested too deeply") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise BackendUnavailable(f"{where}: bad content: {what}") from None

    def _save(self) -> None:
        """Write the state atomically: temp file in the same directory, fsync, rename."""
        if self.path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        data = json.dumps(_state_to_json(self._state), indent=1, sort_keys=False) + "\n"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                mode = os.stat(self.path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o644
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
            tmp = None
            try:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        except OSError as e:
            # what is on disk is the truth: drop what we could not write
            self._signature = None
            try:
                self._refresh()
            except BackendUnavailable:
                self._state = _State()
            raise BackendUnavailable(f"memory state file {self.path}: cannot write: {e.strerror}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._signature = self._stat_signature()

    def close(self) -> None:
        """Release the lock file (every write was already saved)."""
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # --- reads -------------------------------------------------------------------------------------

    def info(self) -> Info:
        """IPVS 1.2.1, connection table of 4096 buckets (Linux 6.1 defaults)."""
        return Info(IPVS_VERSION, CONN_TAB_SIZE)

    def services(self) -> list[Service]:
        """All services: address/port ones in insertion order, then fwmark ones."""
        with self._locked(write=False):
            return self._ordered_services()

    def _ordered_services(self) -> list[Service]:
        svcs = self._state.services.values()
        return [s.service for s in svcs if not s.service.key.fwmark] + [
            s.service for s in svcs if s.service.key.fwmark
        ]

    def service(self, key: ServiceKey) -> Service:
        """One service; IPVSError(ESRCH) if there is none."""
        key.validate()
        with self._locked(write=False):
            s = self._state.services.get(key)
            if s is None:
                raise IPVSError(f"get-service {key}", _errno.ESRCH, os.strerror(_errno.ESRCH))
            return s.service

    def dests(self, key: ServiceKey) -> list[Destination]:
        """Destinations of one service, newest first (kernel order); IPVSError(ESRCH) if no service."""
        key.validate()
        with self._locked(write=False):
            s = self._state.services.get(key)
            if s is None:
                raise IPVSError(f"list-servers {key}", _errno.ESRCH, os.strerror(_errno.ESRCH))
            return s.listed()

    def dump(self) -> dict[ServiceKey, ServiceEntry]:
        """The whole table, one consistent snapshot."""
        with self._locked(write=False):
            out: dict[ServiceKey, ServiceEntry] = {}
            for svc in self._ordered_services():
                s = self._state.services[svc.key]
                out[svc.key] = ServiceEntry(svc, {d.key: d for d in s.listed()})
            return out

    def timeouts(self) -> Timeouts:
        """TCP, TCP FIN and UDP connection timeouts in seconds."""
        with self._locked(write=False):
            return self._state.timeouts

    def daemons(self) -> list[SyncDaemon]:
        """Running sync daemons, master first, with the values the kernel runs."""
        with self._locked(write=False):
            return [self._state.daemons[s] for s in (DaemonState.MASTER, DaemonState.BACKUP) if s in self._state.daemons]

    def connections(self) -> list[Connection]:
        """The injected connection table (see set_connections)."""
        with self._locked(write=False):
            return list(self._state.connections)

    # --- test injection (what only traffic produces in a kernel) ----------------------------------

    def set_connections(self, conns: Iterable[Connection]) -> None:
        """Replace the connection table that connections() returns."""
        conns = list(conns)
        for c in conns:
            if not isinstance(c, Connection):
                raise TypeError(f"not a Connection: {c!r}")
        with self._locked(write=True):
            self._state.connections = conns
            self._save()

    def set_stats(self, key: ServiceKey, stats: Stats, dest: DestKey | None = None) -> None:
        """Set the counters of a service (or of one of its destinations)."""
        with self._locked(write=True):
            s = self._state.services.get(key)
            if s is None:
                raise IPVSError(f"set-stats {key}", _errno.ESRCH, os.strerror(_errno.ESRCH))
            if dest is None:
                s.service = s.service.with_stats(stats)
            else:
                d = s.dests.get(dest)
                if d is None:
                    raise IPVSError(f"set-stats {key} -> {dest}", _errno.ENOENT, os.strerror(_errno.ENOENT))
                s.dests[dest] = replace(d, stats=stats)
            self._save()

    def set_counts(self, key: ServiceKey, dest: DestKey, active: int = 0, inactive: int = 0, persistent: int = 0) -> None:
        """Set a destination's active, inactive and persistent connection counts."""
        with self._locked(write=True):
            s = self._state.services.get(key)
            if s is None:
                raise IPVSError(f"set-counts {key}", _errno.ESRCH, os.strerror(_errno.ESRCH))
            d = s.dests.get(dest)
            if d is None:
                raise IPVSError(f"set-counts {key} -> {dest}", _errno.ENOENT, os.strerror(_errno.ENOENT))
            s.dests[dest] = replace(d, active_conns=active, inact_conns=inactive, persist_conns=persistent)
            self._save()

    # --- writes ------------------------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> None:
        """Validate every op, then apply each in order as the kernel would. Raises IPVSError for a
        batch of one, BatchError naming what was applied and what was refused otherwise."""
        ops = list(ops)
        validate_all(ops)
        if not ops:
            return
        applied: list[Op] = []
        failed: list[tuple[Op, IPVSError]] = []
        with self._locked(write=True):
            for op in ops:
                try:
                    self._exec(op)
                except _Refused as e:
                    failed.append((op, IPVSError(op, e.errno, os.strerror(e.errno))))
                else:
                    applied.append(op)
            if applied:
                self._save()
        if not failed:
            return
        if len(ops) == 1:
            raise failed[0][1]
        raise BatchError(applied, failed)

    def _exec(self, op: Op) -> None:
        """Apply one op to the state, or raise _Refused without changing anything."""
        k = op.kind
        st = self._state
        if k is OpKind.ADD_SERVICE or k is OpKind.EDIT_SERVICE:
            svc = op.service
            assert svc is not None
            old = st.services.get(svc.key)
            if k is OpKind.ADD_SERVICE and old is not None:
                raise _Refused(_errno.EEXIST)
            if k is OpKind.EDIT_SERVICE and old is None:
                raise _Refused(_errno.ESRCH)
            if svc.scheduler not in self.schedulers:
                raise _Refused(_errno.ENOENT)
            if svc.pe_name and svc.pe_name not in self.persistence_engines:
                raise _Refused(_errno.ENOENT)
            if svc.key.af == AF_INET6 and not 1 <= svc.netmask <= 128:
                raise _Refused(_errno.EINVAL)
            stored = replace(svc, timeout=_wrap_timeout(svc.timeout), stats=old.service.stats if old else ZERO_STATS)
            if old is None:
                st.services[svc.key] = _Svc(stored)
            else:
                old.service = stored
        elif k is OpKind.DEL_SERVICE:
            assert op.key is not None
            if op.key not in st.services:
                raise _Refused(_errno.ESRCH)
            del st.services[op.key]
        elif k is OpKind.ADD_DEST or k is OpKind.EDIT_DEST or k is OpKind.DEL_DEST:
            self._exec_dest(op)
        elif k is OpKind.FLUSH:
            st.services.clear()
        elif k is OpKind.ZERO:
            if op.key is None:
                targets = list(st.services.values())
            else:
                s = st.services.get(op.key)
                if s is None:
                    raise _Refused(_errno.ESRCH)
                targets = [s]
            for s in targets:
                s.service = s.service.with_stats(ZERO_STATS)
                for dk, d in s.dests.items():
                    s.dests[dk] = replace(d, stats=ZERO_STATS)
        elif k is OpKind.SET_TIMEOUTS:
            t = op.timeouts
            assert t is not None
            if max(t.tcp, t.tcp_fin, t.udp) > INT_MAX // HZ:
                raise _Refused(_errno.EINVAL)
            cur = st.timeouts
            st.timeouts = Timeouts(t.tcp or cur.tcp, t.tcp_fin or cur.tcp_fin, t.udp or cur.udp)
        elif k is OpKind.START_DAEMON:
            assert op.daemon is not None
            self._start_daemon(op.daemon)
        elif k is OpKind.STOP_DAEMON:
            assert op.daemon is not None
            if op.daemon.state not in st.daemons:
                raise _Refused(_errno.ESRCH)
            del st.daemons[op.daemon.state]
        else:  # pragma: no cover - OpKind is closed
            raise _Refused(_errno.EINVAL)

    def _exec_dest(self, op: Op) -> None:
        """ADD/EDIT/DEL_DEST in the order of ip_vs_genl_set_cmd's and ip_vs_*_dest's checks."""
        assert op.key is not None and op.dest is not None
        st = self._state
        s = st.services.get(op.key)
        if s is None:
            raise _Refused(_errno.ESRCH)
        dest = op.dest
        dk = dest.key
        if op.kind is OpKind.DEL_DEST:
            if dk not in s.dests:
                raise _Refused(_errno.ENOENT)
            del s.dests[dk]
            return
        if dk.af != op.key.af:
            if st.daemons:  # the sync protocol cannot carry mixed-family destinations
                raise _Refused(_errno.EINVAL)
            if dest.forward & 7 != 2:  # only tunnels may cross families (also refused by validate)
                raise _Refused(_errno.EINVAL)
        if dest.l_threshold > dest.u_threshold:
            raise _Refused(_errno.ERANGE)
        if dest.u_threshold > INT_MAX:  # measured on 6.1: after the threshold order, before EEXIST/ENOENT
            raise _Refused(_errno.EINVAL)
        if dest.tun_type == TunType.GUE and dest.tun_port == 0:
            raise _Refused(_errno.EINVAL)
        old = s.dests.get(dk)
        if op.kind is OpKind.ADD_DEST:
            if old is not None:
                raise _Refused(_errno.EEXIST)
            if not _unicast_dest(dk.af, dk.addr):
                raise _Refused(_errno.EINVAL)
            s.dests[dk] = replace(
                dest, forward=dest.forward & 7, active_conns=0, inact_conns=0, persist_conns=0, stats=ZERO_STATS
            )
        else:
            if old is None:
                raise _Refused(_errno.ENOENT)
            s.dests[dk] = replace(
                dest,
                forward=dest.forward & 7,
                active_conns=old.active_conns,
                inact_conns=old.inact_conns,
                persist_conns=old.persist_conns,
                stats=old.stats,
            )

    def _start_daemon(self, d: SyncDaemon) -> None:
        """start_sync_thread(): group check, mixed-family check, interface, already running."""
        st = self._state
        group = d.mcast_group or SYNC_GROUP
        gaddr = ipaddress.ip_address(group)
        if d.mcast_group and not gaddr.is_multicast:
            raise _Refused(_errno.EINVAL)
        for s in st.services.values():
            if any(dk.af != s.service.key.af for dk in s.dests):
                raise _Refused(_errno.EINVAL)
        interfaces = self._interfaces if self._interfaces is not None else _host_interfaces()
        mtu = interfaces.get(d.mcast_ifn)
        if mtu is None:
            raise _Refused(_errno.ENODEV)
        if d.state in st.daemons:
            raise _Refused(_errno.EEXIST)
        hlen = 48 if gaddr.version == 6 else 28
        if d.state == DaemonState.BACKUP:
            maxlen = (
                min(max(d.sync_maxlen, 1024), 65535 - hlen) if d.sync_maxlen else min(max(mtu, 1500), 65535) - hlen
            )
        else:
            maxlen = min(max(d.sync_maxlen, 1), 65535 - hlen) if d.sync_maxlen else 1500 - hlen
        st.daemons[d.state] = SyncDaemon(
            state=d.state,
            mcast_ifn=d.mcast_ifn,
            syncid=d.syncid,
            sync_maxlen=maxlen,
            mcast_group=str(gaddr),
            mcast_port=d.mcast_port or SYNC_PORT,
            mcast_ttl=d.mcast_ttl or 1,
        )


# --- JSON (de)serialisation -----------------------------------------------------------------------

_STATS_FIELDS = tuple(f.name for f in fields(Stats))


def _stats_to_json(s: Stats) -> dict[str, int] | None:
    return None if s == ZERO_STATS else {k: getattr(s, k) for k in _STATS_FIELDS}


def _stats_from_json(doc: object) -> Stats:
    if doc is None:
        return ZERO_STATS
    if not isinstance(doc, dict):
        raise TypeError("stats must be an object")
    return Stats(**{k: _int(doc.get(k, 0), f"stats.{k}") for k in _STATS_FIELDS})


def _int(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{what} must be an integer, got {v!r}")
    return v


def _str(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a string, got {v!r}")
    return v


def _state_to_json(st: _State) -> dict[str, object]:
    services = []
    for s in st.services.values():
        svc = s.service
        k = svc.key
        entry: dict[str, object] = {
            "af": k.af,
            "protocol": k.protocol,
            "addr": k.addr,
            "port": k.port,
            "fwmark": k.fwmark,
            "scheduler": svc.scheduler,
            "flags": svc.flags,
            "timeout": svc.timeout,
            "netmask": svc.netmask,
            "pe_name": svc.pe_name,
        }
        stats = _stats_to_json(svc.stats)
        if stats:
            entry["stats"] = stats
        dests = []
        for d in s.dests.values():  # oldest first: insertion order
            de: dict[str, object] = {
                "af": d.key.af,
                "addr": d.key.addr,
                "port": d.key.port,
                "forward": int(d.forward),
                "weight": d.weight,
                "u_threshold": d.u_threshold,
                "l_threshold": d.l_threshold,
                "tun_type": int(d.tun_type),
                "tun_port": d.tun_port,
                "tun_flags": d.tun_flags,
            }
            if d.active_conns or d.inact_conns or d.persist_conns:
                de["active_conns"] = d.active_conns
                de["inact_conns"] = d.inact_conns
                de["persist_conns"] = d.persist_conns
            dstats = _stats_to_json(d.stats)
            if dstats:
                de["stats"] = dstats
            dests.append(de)
        entry["dests"] = dests
        services.append(entry)
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "services": services,
        "timeouts": {"tcp": st.timeouts.tcp, "tcp_fin": st.timeouts.tcp_fin, "udp": st.timeouts.udp},
        "daemons": [asdict(d) for d in st.daemons.values()],
        "connections": [asdict(c) for c in st.connections],
    }


def _state_from_json(doc: object) -> _State:
    if not isinstance(doc, dict):
        raise TypeError("top level must be an object")
    if doc.get("format") != STATE_FORMAT:
        raise ValueError(f"format must be {STATE_FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported version {doc.get('version')!r} (this lvsd reads {STATE_VERSION})")
    st = _State()
    for i, e in enumerate(doc.get("services", [])):
        where = f"services[{i}]"
        if not isinstance(e, dict):
            raise TypeError(f"{where} must be an object")
        key = ServiceKey(
            _int(e["af"], f"{where}.af"),
            _int(e.get("protocol", 0), f"{where}.protocol"),
            _str(e.get("addr", ""), f"{where}.addr"),
            _int(e.get("port", 0), f"{where}.port"),
            _int(e.get("fwmark", 0), f"{where}.fwmark"),
        )
        svc = Service(
            key,
            scheduler=_str(e["scheduler"], f"{where}.scheduler"),
            flags=_int(e.get("flags", 0), f"{where}.flags"),
            timeout=_int(e.get("timeout", 0), f"{where}.timeout"),
            netmask=_int(e.get("netmask", -1), f"{where}.netmask"),
            pe_name=_str(e.get("pe_name", ""), f"{where}.pe_name"),
            stats=_stats_from_json(e.get("stats")),
        )
        try:
            svc.validate()
        except ValueInvalid as err:
            raise ValueError(f"{where}: {err}") from None
        if key in st.services:
            raise ValueError(f"{where}: duplicate service {key}")
        s = _Svc(svc)
        for j, de in enumerate(e.get("dests", [])):
            dw = f"{where}.dests[{j}]"
            if not isinstance(de, dict):
                raise TypeError(f"{dw} must be an object")
            dest = Destination(
                DestKey(_int(de["af"], f"{dw}.af"), _str(de["addr"], f"{dw}.addr"), _int(de["port"], f"{dw}.port")),
                forward=_int(de.get("forward", 3), f"{dw}.forward"),
                weight=_int(de.get("weight", 1), f"{dw}.weight"),
                u_threshold=_int(de.get("u_threshold", 0), f"{dw}.u_threshold"),
                l_threshold=_int(de.get("l_threshold", 0), f"{dw}.l_threshold"),
                tun_type=_int(de.get("tun_type", 0), f"{dw}.tun_type"),
                tun_port=_int(de.get("tun_port", 0), f"{dw}.tun_port"),
                tun_flags=_int(de.get("tun_flags", 0), f"{dw}.tun_flags"),
                active_conns=_int(de.get("active_conns", 0), f"{dw}.active_conns"),
                inact_conns=_int(de.get("inact_conns", 0), f"{dw}.inact_conns"),
                persist_conns=_int(de.get("persist_conns", 0), f"{dw}.persist_conns"),
                stats=_stats_from_json(de.get("stats")),
            )
            try:
                dest.validate(key.af)
            except ValueInvalid as err:
                raise ValueError(f"{dw}: {err}") from None
            if dest.key in s.dests:
                raise ValueError(f"{dw}: duplicate destination {dest.key}")
            s.dests[dest.key] = dest
        st.services[key] = s
    t = doc.get("timeouts")
    if t is not None:
        if not isinstance(t, dict):
            raise TypeError("timeouts must be an object")
        st.timeouts = Timeouts(
            _int(t.get("tcp", 900), "timeouts.tcp"),
            _int(t.get("tcp_fin", 120), "timeouts.tcp_fin"),
            _int(t.get("udp", 300), "timeouts.udp"),
        )
        try:
            st.timeouts.validate()
        except ValueInvalid as err:
            raise ValueError(str(err)) from None
    for i, dd in enumerate(doc.get("daemons", [])):
        where = f"daemons[{i}]"
        if not isinstance(dd, dict):
            raise TypeError(f"{where} must be an object")
        d = SyncDaemon(
            state=_int(dd["state"], f"{where}.state"),
            mcast_ifn=_str(dd["mcast_ifn"], f"{where}.mcast_ifn"),
            syncid=_int(dd.get("syncid", 0), f"{where}.syncid"),
            sync_maxlen=_int(dd.get("sync_maxlen", 0), f"{where}.sync_maxlen"),
            mcast_group=_str(dd.get("mcast_group", ""), f"{where}.mcast_group"),
            mcast_port=_int(dd.get("mcast_port", 0), f"{where}.mcast_port"),
            mcast_ttl=_int(dd.get("mcast_ttl", 0), f"{where}.mcast_ttl"),
        )
        try:
            d.validate()
        except ValueInvalid as err:
            raise ValueError(f"{where}: {err}") from None
        if d.state in st.daemons:
            raise ValueError(f"{where}: two {DaemonState(d.state).name.lower()} daemons")
        st.daemons[d.state] = d
    conn_fields = {f.name: f.type for f in fields(Connection)}
    for i, cd in enumerate(doc.get("connections", [])):
        where = f"connections[{i}]"
        if not isinstance(cd, dict):
            raise TypeError(f"{where} must be an object")
        unknown = set(cd) - set(conn_fields)
        if unknown:
            raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        values: dict[str, Any] = {}  # each value checked against its field's type just below
        for name, typ in conn_fields.items():
            if name not in cd:
                if name in ("pe_name", "pe_data"):
                    continue
                raise KeyError(f"{where}.{name}")
            values[name] = _int(cd[name], f"{where}.{name}") if typ == "int" else _str(cd[name], f"{where}.{name}")
        st.connections.append(Connection(**values))
    return st
