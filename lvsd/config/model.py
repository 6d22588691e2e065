"""The daemon's configuration as frozen values: what ``lvsd.config.load`` builds from TOML.

Everything here is already validated and has its defaults merged: ``[defaults]`` and the
service-level server keys are folded into every server, so consumers never look at defaults.
Kernel-visible parts are ``lvsd.ipvs.model`` values (``ServiceKey``, ``Service``, ``DestKey``,
``Destination``, ``Timeouts``, ``SyncDaemon``) exactly as they should appear in the kernel.

Durations are float seconds. Hooks and script checks are argv tuples (empty = none), never
shell strings. Check values are frozen and hashable: identical checks against the same target
are one probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lvsd.checks.registry import CHECK_TYPES as CHECK_TYPES  # re-exported
from lvsd.checks.registry import check_class
from lvsd.ipvs.model import (
    DaemonState,
    Destination,
    DestKey,
    Service,
    ServiceKey,
    SyncDaemon,
    Timeouts,
)

from .checks import CheckConfig
from .checks import NetCheckConfig as NetCheckConfig  # re-exported

#: argv of a hook or script: a tuple of strings, run without a shell; () = no hook.
Argv = tuple[str, ...]

#: What identifies a real server across reloads: (service name, destination key).
ServerId = tuple[str, DestKey]

ON_START = ("adopt", "flush")
ON_STOP = ("keep", "remove")
ON_FAILURE = ("remove", "inhibit")
LOG_LEVELS = ("debug", "info", "warning", "error")
HA_MODES = ("static", "external", "vrrp")
ROLES = ("master", "backup", "fault")
SYNC_ON_FAULT = ("backup", "none")


# --- daemon-wide -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``[daemon]``: start/stop behaviour, resync period, logging."""

    on_start: str = "adopt"  # adopt | flush
    on_stop: str = "keep"  # keep | remove
    resync: float = 30.0  # seconds between full compares with the kernel; 0 = never
    log_level: str = "info"  # debug | info | warning | error
    hook_timeout: float = 10.0  # seconds a notify hook may run before it is killed
    # where lvsd records the services it manages ("" = nowhere): at start, a service recorded
    # there that the config no longer names (removed while lvsd was stopped) is deleted
    state_file: str = ""


@dataclass(frozen=True, slots=True)
class IPVSConfig:
    """``[ipvs]``: global kernel settings. ``timeouts`` None = leave the kernel's as they are;
    a 0 field inside it also means "leave this one" (as ipvsadm --set)."""

    timeouts: Timeouts | None = None


# --- health checks -----------------------------------------------------------------------------
# CheckConfig and NetCheckConfig live in lvsd.config.checks; each type's class lives in its module
# under lvsd/checks/ (lvsd.checks.registry). The type classes are importable from here, lazily.

_CHECK_CLASSES = {"TCPCheck": "tcp", "HTTPCheck": "http", "ScriptCheck": "script", "UDPCheck": "udp", "DNSCheck": "dns"}


def __getattr__(name: str) -> Any:
    """``from lvsd.config.model import TCPCheck`` imports that type's module on first use."""
    ctype = _CHECK_CLASSES.get(name)
    if ctype is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return check_class(ctype)


# --- services and servers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A real server of a service, everything inherited already.

    ``dest`` is the destination as configured (configured weight). ``checks`` empty = no check
    (the server is in with its configured weight). ``address`` is what the file said (hostname
    or IP) for messages; ``key.addr`` is the resolved address."""

    service: str  # the service's name
    key: DestKey
    dest: Destination
    address: str = ""
    checks: tuple[CheckConfig, ...] = ()
    on_failure: str = "remove"  # remove | inhibit
    notify_up: Argv = ()
    notify_down: Argv = ()

    @property
    def id(self) -> ServerId:
        return (self.service, self.key)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A virtual service: kernel service, servers, and what to do when servers fail.

    ``quorum``: when the total weight of UP servers is below it, ``sorry_server`` (if any) is
    added and ``quorum_down`` runs; at or above ``quorum + hysteresis`` the sorry server is
    removed and ``quorum_up`` runs. ``servers`` excludes servers configured ``enabled = false``.
    ``checks``/``on_failure``/``notify_*`` are the service level values (already in each server)."""

    name: str
    key: ServiceKey
    service: Service
    servers: tuple[ServerConfig, ...] = ()
    vip: str = ""  # as written, for messages
    quorum: int = 1
    hysteresis: int = 0
    sorry_server: Destination | None = None
    on_failure: str = "remove"
    notify_up: Argv = ()
    notify_down: Argv = ()
    quorum_up: Argv = ()
    quorum_down: Argv = ()
    checks: tuple[CheckConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class DefaultsConfig:
    """``[defaults]`` as resolved (for display only: already merged into every service/server)."""

    protocol: str = "tcp"
    scheduler: str = "wlc"
    forward: str = "dr"
    weight: int = 1
    on_failure: str = "remove"
    quorum: int = 1
    hysteresis: int = 0
    checks: tuple[CheckConfig, ...] = ()


# --- HA ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VipConfig:
    """A virtual address VRRP moves: address, prefix length and family."""

    af: int
    address: str
    prefixlen: int

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class HAConfig:
    """``[ha]``: where the director's role comes from.

    static: ``role`` is fixed (master or backup). external: ``role`` is the initial role, changed
    by ``lvsctl role``. vrrp: lvsd runs VRRP (``role`` is what VRRP decides; starts as backup)."""

    mode: str = "static"
    role: str = "master"
    interface: str = ""
    vrid: int = 0
    priority: int = 100
    advert_interval: float = 1.0
    vips: tuple[VipConfig, ...] = ()
    preempt: bool = True
    preempt_delay: float = 0.0
    version: int = 3
    notify_master: Argv = ()
    notify_backup: Argv = ()
    notify_fault: Argv = ()


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """``[sync]``: the kernel connection-sync daemon run by role, and the sync sysctls.

    Sysctl fields None = leave the kernel's value. The defaults make every connection reach the
    backup (handshake-only and idle ones included): threshold 3, period 0, refresh every 10 s."""

    interface: str
    syncid: int = 0
    maxlen: int = 0  # 0 = kernel default
    group: str = ""  # "" = kernel default (224.0.0.81 / ff02::81)
    port: int = 0  # 0 = kernel default (8848)
    ttl: int = 0  # 0 = kernel default (1)
    backup_always: bool = False  # also run the backup daemon while master
    on_fault: str = "backup"  # backup: run the backup daemon in fault | none: run nothing
    manage_sysctls: bool = True
    sync_threshold: tuple[int, int] = (3, 0)
    sync_refresh_period: int = 10
    sync_retries: int = 0
    sync_persist_mode: int = 0
    sync_version: int = 1
    sync_ports: int | None = None
    sync_qlen_max: int | None = None
    sync_sock_size: int | None = None

    def daemon(self, state: int) -> SyncDaemon:
        """The kernel sync daemon value for ``DaemonState.MASTER`` or ``BACKUP``."""
        return SyncDaemon(
            state=int(DaemonState(state)),
            mcast_ifn=self.interface,
            syncid=self.syncid,
            sync_maxlen=self.maxlen,
            mcast_group=self.group,
            mcast_port=self.port,
            mcast_ttl=self.ttl,
        )

    def daemons_for(self, role: str) -> tuple[SyncDaemon, ...]:
        """Which sync daemons should run in ``role`` (master/backup/fault)."""
        if role == "master":
            if self.backup_always:
                return (self.daemon(DaemonState.MASTER), self.daemon(DaemonState.BACKUP))
            return (self.daemon(DaemonState.MASTER),)
        if role == "backup" or (role == "fault" and self.on_fault == "backup"):
            return (self.daemon(DaemonState.BACKUP),)
        return ()

    def sysctls(self) -> dict[str, str]:
        """net.ipv4.vs.* name -> value text to write ({} if manage_sysctls is false)."""
        if not self.manage_sysctls:
            return {}
        out = {
            "sync_threshold": f"{self.sync_threshold[0]} {self.sync_threshold[1]}",
            "sync_refresh_period": str(self.sync_refresh_period),
            "sync_retries": str(self.sync_retries),
            "sync_persist_mode": str(self.sync_persist_mode),
            "sync_version": str(self.sync_version),
        }
        for name in ("sync_ports", "sync_qlen_max", "sync_sock_size"):
            v = getattr(self, name)
            if v is not None:
                out[name] = str(v)
        return out


# --- API, metrics, the whole ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class APIConfig:
    """``[api]``: the control socket lvsctl talks to."""

    socket: str = "/run/lvsd/lvsd.sock"
    mode: int = 0o660


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: Prometheus text over HTTP on ``listen`` ("addr:port"); None = only via the API socket."""

    listen: str | None = None
    address: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, validated, defaults merged."""

    daemon: DaemonConfig = DaemonConfig()
    ipvs: IPVSConfig = IPVSConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    services: tuple[ServiceConfig, ...] = ()
    ha: HAConfig = HAConfig()
    sync: SyncConfig | None = None  # None: lvsd runs no sync daemon and leaves the sysctls
    api: APIConfig = APIConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: str = field(default="<string>", compare=False)

    def service(self, name: str) -> ServiceConfig | None:
        """The service called ``name``, or None."""
        for s in self.services:
            if s.name == name:
                return s
        return None

    def servers(self) -> dict[ServerId, ServerConfig]:
        """Every enabled server by its ServerId."""
        return {srv.id: srv for s in self.services for srv in s.servers}
