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

from lvsd.ipvs.model import (
    DaemonState,
    Destination,
    DestKey,
    Service,
    ServiceKey,
    SyncDaemon,
    Timeouts,
)

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
CHECK_TYPES = ("tcp", "http", "https", "script", "udp", "dns")


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


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Keys common to every check. Subclasses add their type's keys; ``type`` tells them apart.

    ``retry_delay`` is the interval while a check is failing (already defaulted to ``interval``).
    """

    type: str = ""
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    retry_delay: float = 2.0


@dataclass(frozen=True, slots=True)
class NetCheckConfig(CheckConfig):
    """A check that talks to the network. ``connect_address``/``connect_port`` None = the
    server's own; ``bind`` is the source address (None = the kernel picks)."""

    connect_address: str | None = None
    connect_port: int | None = None
    bind: str | None = None

    def target(self, server: DestKey) -> tuple[str, int]:
        """(address, port) to probe for this server."""
        return (
            self.connect_address if self.connect_address is not None else server.addr,
            self.connect_port if self.connect_port is not None else server.port,
        )


@dataclass(frozen=True, slots=True)
class TCPCheck(NetCheckConfig):
    """``type = "tcp"``: connect; optionally send bytes and expect the reply to contain ``expect``."""

    type: str = "tcp"
    send: bytes | None = None
    expect: bytes | None = None


@dataclass(frozen=True, slots=True)
class HTTPCheck(NetCheckConfig):
    """``type = "http" | "https"``. ``status`` is a tuple of inclusive (low, high) ranges.
    ``body`` is a regex (re.search over the body read, at most ``max_body`` bytes); ``digest``
    is the lowercase hex ``digest_algorithm`` hash of that body (keepalived genhash style).
    TLS keys only matter for https; ``sni`` is already defaulted to ``host``."""

    type: str = "http"
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    status: tuple[tuple[int, int], ...] = ((200, 299),)
    body: str | None = None
    digest: str | None = None
    digest_algorithm: str = "md5"
    headers: tuple[tuple[str, str], ...] = ()
    verify: bool = True
    ca: str | None = None
    sni: str | None = None
    cert: str | None = None
    key: str | None = None
    max_body: int = 1048576

    @property
    def tls(self) -> bool:
        return self.type == "https"

    def status_ok(self, code: int) -> bool:
        """True if ``code`` is in one of the accepted ranges."""
        return any(lo <= code <= hi for lo, hi in self.status)


@dataclass(frozen=True, slots=True)
class ScriptCheck(CheckConfig):
    """``type = "script"``: run ``argv`` (no shell) as ``user``/``group``; exit 0 = up.
    ``dynamic_weight``: exit status 2..255 sets the weight to status - 2 (keepalived misc_dynamic)."""

    type: str = "script"
    argv: Argv = ()
    user: str | int | None = None  # a name, or a numeric id as an int (None = lvsd's own)
    group: str | int | None = None
    dynamic_weight: bool = False


@dataclass(frozen=True, slots=True)
class UDPCheck(NetCheckConfig):
    """``type = "udp"``: send a datagram; up if a reply comes (containing ``expect`` if set)."""

    type: str = "udp"
    send: bytes = b""
    expect: bytes | None = None


@dataclass(frozen=True, slots=True)
class DNSCheck(NetCheckConfig):
    """``type = "dns"``: query ``name``/``qtype`` over UDP; up if the reply's rcode is ``rcode``
    and, when ``expect`` is set, every expected value is among the answers' data (text form)."""

    type: str = "dns"
    name: str = ""
    qtype: str = "A"
    rcode: str = "NOERROR"
    expect: tuple[str, ...] = ()


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
