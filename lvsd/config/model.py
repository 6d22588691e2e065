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
    Destination,
    DestKey,
    Service,
    ServiceKey,
)

from .checks import CheckConfig
from .checks import NetCheckConfig as NetCheckConfig  # re-exported
from .layers import BUILTIN_SERVER, BUILTIN_SERVICE
from .layers import ON_FAILURE as ON_FAILURE  # re-exported
from .sections import (  # re-exported: each section's value lives with its key rows
    HA_MODES,
    LOG_LEVELS,
    ON_START,
    ON_STOP,
    ROLES,
    SYNC_ON_FAULT,
    APIConfig,
    Argv,
    DaemonConfig,
    HAConfig,
    IPVSConfig,
    MetricsConfig,
    SyncConfig,
    VipConfig,
)

__all__ = [
    "CHECK_TYPES",
    "HA_MODES",
    "LOG_LEVELS",
    "ON_FAILURE",
    "ON_START",
    "ON_STOP",
    "ROLES",
    "SYNC_ON_FAULT",
    "APIConfig",
    "Argv",
    "CheckConfig",
    "Config",
    "DaemonConfig",
    "DefaultsConfig",
    "HAConfig",
    "IPVSConfig",
    "MetricsConfig",
    "NetCheckConfig",
    "ServerConfig",
    "ServerId",
    "ServiceConfig",
    "SyncConfig",
    "VipConfig",
]

#: What identifies a real server across reloads: (service name, destination key).
ServerId = tuple[str, DestKey]

#: built-in defaults of the inheritable keys (their rows in lvsd.config.layers)
_SRV = BUILTIN_SERVER
_SVC = BUILTIN_SERVICE


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
    checks: tuple[CheckConfig, ...] = _SRV["check"]
    on_failure: str = _SRV["on_failure"]  # remove | inhibit
    notify_up: Argv = _SRV["notify_up"]
    notify_down: Argv = _SRV["notify_down"]

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
    quorum: int = _SVC["quorum"]
    hysteresis: int = _SVC["hysteresis"]
    sorry_server: Destination | None = None
    on_failure: str = _SRV["on_failure"]
    notify_up: Argv = _SRV["notify_up"]
    notify_down: Argv = _SRV["notify_down"]
    quorum_up: Argv = _SVC["quorum_up"]
    quorum_down: Argv = _SVC["quorum_down"]
    checks: tuple[CheckConfig, ...] = _SRV["check"]
    sorry_mode: str = _SVC["sorry_mode"]  # add | replace (issue 12: runtime control)
    sorry_inhibit: bool = _SVC["sorry_inhibit"]
    drain_on_remove: float = _SVC["drain_on_remove"]  # seconds; 0 = a removed server is cut


@dataclass(frozen=True, slots=True)
class DefaultsConfig:
    """``[defaults]`` as resolved (for display only: already merged into every service/server)."""

    protocol: str = _SVC["protocol"]
    scheduler: str = _SVC["scheduler"]
    forward: str = _SRV["forward"]
    weight: int = _SRV["weight"]
    on_failure: str = _SRV["on_failure"]
    quorum: int = _SVC["quorum"]
    hysteresis: int = _SVC["hysteresis"]
    checks: tuple[CheckConfig, ...] = _SRV["check"]


# --- the whole ---------------------------------------------------------------------


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
