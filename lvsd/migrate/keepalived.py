"""``lvsd import keepalived FILE``: the LVS part and the VRRP instance of a keepalived.conf as lvsd keys.

keepalived's defaults are written out (forwarding NAT, scheduler wlc, quorum 1, hysteresis 0,
delay_loop 60 s, connect_timeout 5 s, retry 1 (DNS_CHECK 3, MISC_CHECK 0), delay_before_retry 1 s
(HTTP_GET/SSL_GET 3 s, DNS_CHECK delay_loop), persistence_timeout 360 s, VRRP version 2), so a
different lvsd default never changes the behaviour silently. The traps (docs/migration.md):
``retry N`` is ``fall = N + 1`` and keepalived rises on one success (``rise = 1``); SSL_GET does not
verify certificates (``verify = false``); below quorum keepalived replaces the pool by the sorry
server (``sorry_mode = "replace"``); DR/TUN real-server ports other than the VIP's are ignored by
the kernel and refused by lvsd (the VIP's port is written, with a note).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from . import common as c
from .kconf import Stmt, parse
from .model import Imported, MigrateError, Notes, Where

FORWARD = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos")
SCHED_FLAGS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback")
CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK", "UDP_CHECK", "FILE_CHECK",
            "SMTP_CHECK", "PING_CHECK", "BFD_CHECK")
#: (retry, delay_before_retry or None = delay_loop) keepalived uses when a checker sets neither
CHECK_DEFAULTS = {"HTTP_GET": (1, 3.0), "SSL_GET": (1, 3.0), "DNS_CHECK": (3, None), "MISC_CHECK": (0, 1.0)}
#: timer keys that pass from virtual server to real server to checker
INHERITED = ("delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup", "alpha",
             "inhibit_on_failure", "virtualhost")
#: keywords known to keepalived with no effect on the IPVS table or the VRRP election lvsd does
QUIET = {"router_id", "notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout",
         "smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker", "snmp_name", "enable_script_security",
         "script_user", "checker_log_all_failures", "log_all_failures", "vrrp_skip_check_adv_addr",
         "vrrp_strict", "vrrp_garp_interval", "vrrp_gna_interval", "vrrp_garp_master_delay",
         "vrrp_garp_master_refresh", "vrrp_garp_master_repeat", "lvs_id", "garp_master_delay",
         "garp_master_refresh", "garp_master_repeat", "dont_track_primary", "max_auto_priority",
         "vrrp_mcast_group4", "vrrp_mcast_group6", "dynamic_interfaces", "net_namespace", "instance",
         "nftables", "nftables_ipvs", "vrrp_no_swap", "checker_no_swap", "vrrp_priority", "checker_priority",
         "vrrp_rt_priority", "checker_rt_priority", "process_names", "linkbeat_use_polling"}
TOP_BLOCKS = {"global_defs", "virtual_server", "virtual_server_group", "vrrp_instance", "vrrp_sync_group",
              "vrrp_script", "track_file", "vrrp_track_file", "static_ipaddress", "static_routes", "static_rules",
              "SSL", "bfd_instance", "vrrp_track_process", "garp_group", "linkbeat_interfaces",
              "static_track_group", "net_namespace", "instance", "use_pid_dir", "local_address_group"}


def default_config_id() -> str:
    """keepalived's default config id: the first part of the host name."""
    return socket.gethostname().split(".", 1)[0]


def _bool(s: Stmt) -> bool:
    """``alpha``, ``alpha on``, ``inhibit_on_failure off``: a flag with an optional BOOL."""
    if not s.args:
        return True
    v = s.args[0].lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise MigrateError(f"{s.where}: {s.key}: expected on|off|true|false|yes|no, got {s.args[0]!r}")


def _arg(s: Stmt, i: int = 0) -> str:
    if len(s.args) <= i:
        raise MigrateError(f"{s.where}: {s.key}: missing value")
    return s.args[i]


class Importer:
    """One keepalived.conf translated: call ``run()``, then read ``out``."""

    def __init__(self, path: str, config_id: str | None = None) -> None:
        self.path = path
        self.config_id = config_id if config_id is not None else default_config_id()
        self.out = Imported(source=path)
        self.notes: Notes = self.out.notes
        self.groups: dict[str, Stmt] = {}
        self.track_files: dict[str, Stmt] = {}
        self.scripts: dict[str, Stmt] = {}
        self.vrrp_names: list[str] = []
        self.alpha_noted = False

    def note(self, where: Where | None, msg: str) -> None:
        """Something not translated (or translated with a difference)."""
        self.notes.add(where, msg)

    def run(self) -> Imported:
        """Translate the file (raises MigrateError for input keepalived refuses)."""
        tree, rd = parse(self.path, self.config_id)
        for m in rd.missing_includes:
            self.notes.lines.append(m)
        if rd.skipped_conditional:
            self.note(None, f"{rd.skipped_conditional} conditional '@' lines skipped: they are not for config id "
                      f"{self.config_id!r} (--config-id ID picks another director's lines)")
        for s in tree:
            if s.key not in TOP_BLOCKS and s.key not in QUIET:
                raise MigrateError(f"{s.where}: unknown keyword {s.key!r}")
            if s.key == "virtual_server_group":
                self.groups[_arg(s)] = s
            elif s.key in ("track_file", "vrrp_track_file"):
                self.track_files[_arg(s)] = s
            elif s.key == "vrrp_script":
                self.scripts[_arg(s)] = s
        for s in tree:
            if s.key == "global_defs":
                self.global_defs(s)
            elif s.key == "virtual_server":
                self.virtual_server(s)
            elif s.key == "vrrp_instance":
                self.vrrp_instance(s)
            elif s.key in ("virtual_server_group", "track_file", "vrrp_track_file"):
                pass
            elif s.key == "vrrp_script":
                pass  # translated where an instance tracks it
            elif s.key in ("vrrp_sync_group", "static_ipaddress", "static_routes", "static_rules",
                           "bfd_instance", "vrrp_track_process", "garp_group", "SSL", "static_track_group",
                           "local_address_group", "linkbeat_interfaces"):
                self.note(s.where, f"{s.key} is not translated (lvsd has no equivalent)")
            elif s.key not in QUIET:
                self.note(s.where, f"{s.key} is not translated")
        if not self.out.services:
            self.note(None, "no virtual_server in the file: the output has no [[service]]")
        return self.out

    # --- global_defs ------------------------------------------------------------------------------

    def global_defs(self, g: Stmt) -> None:
        for s in g.block or []:
            if s.key == "lvs_timeouts":
                self.lvs_timeouts(s)
            elif s.key == "lvs_sync_daemon":
                self.lvs_sync_daemon(s)
            elif s.key == "lvs_sync_daemon_interface":
                self.out.sections.setdefault("sync", {})["interface"] = _arg(s)
            elif s.key == "lvs_flush":
                if _bool(s):
                    self.out.sections.setdefault("daemon", {})["on_start"] = "flush"
            elif s.key == "lvs_flush_onstop":
                if _bool(s):
                    self.out.sections.setdefault("daemon", {})["on_stop"] = "remove"
            elif s.key == "vrrp_version":
                self.vrrp_version = c.integer(_arg(s), s.where, "vrrp_version", 2, 3)
            elif s.key not in QUIET:
                self.note(s.where, f"global_defs {s.key} is not translated")

    vrrp_version = 2

    def lvs_timeouts(self, s: Stmt) -> None:
        t: dict[str, Any] = {}
        args = s.args
        for i in range(0, len(args) - 1, 2):
            k = args[i].lower()
            if k not in ("tcp", "tcpfin", "udp"):
                raise MigrateError(f"{s.where}: lvs_timeouts: unknown protocol {args[i]!r} (tcp, tcpfin, udp)")
            t[k] = c.duration(c.integer(args[i + 1], s.where, f"lvs_timeouts {k}", 0, 2147483))
        if len(args) % 2:
            raise MigrateError(f"{s.where}: lvs_timeouts: {args[-1]!r} has no value")
        self.out.sections.setdefault("ipvs", {})["timeouts"] = t

    def lvs_sync_daemon(self, s: Stmt) -> None:
        sync: dict[str, Any] = self.out.sections.setdefault("sync", {})
        sync["interface"] = _arg(s)
        args = s.args[1:]
        if args and args[0] not in ("id", "maxlen", "port", "ttl", "group"):
            args = args[1:]  # the VRRP instance whose state drives the daemon: lvsd uses its own role
        for i in range(0, len(args) - 1, 2):
            k, v = args[i], args[i + 1]
            if k == "id":
                sync["syncid"] = c.integer(v, s.where, "lvs_sync_daemon id", 0, 255)
            elif k == "maxlen":
                sync["maxlen"] = c.integer(v, s.where, "lvs_sync_daemon maxlen", 0, 65487)
            elif k == "port":
                sync["port"] = c.port(v, s.where)
            elif k == "ttl":
                sync["ttl"] = c.integer(v, s.where, "lvs_sync_daemon ttl", 0, 255)
            elif k == "group":
                sync["group"] = c.ip(v, s.where, "lvs_sync_daemon group")
            else:
                raise MigrateError(f"{s.where}: lvs_sync_daemon: unknown option {k!r}")

    # --- VRRP -----------------------------------------------------------------------------------

    def vrrp_instance(self, v: Stmt) -> None:
        name = v.args[0] if v.args else "?"
        if self.vrrp_names:
            self.note(v.where, f"vrrp_instance {name} not translated: lvsd runs one VRRP instance "
                      f"(translated: {self.vrrp_names[0]})")
            return
        self.vrrp_names.append(name)
        ha: dict[str, Any] = {"mode": "vrrp", "priority": 100, "advert_interval": "1s", "preempt": True,
                              "version": self.vrrp_version}
        vips: list[str] = []
        for s in v.block or []:
            k = s.key
            if k == "interface":
                ha["interface"] = _arg(s)
            elif k == "virtual_router_id":
                ha["vrid"] = c.integer(_arg(s), s.where, "virtual_router_id", 1, 255)
            elif k == "priority":
                p = c.integer(_arg(s), s.where, "priority", 1, 255)
                if p == 255:
                    self.note(s.where, "priority 255 (address owner) becomes 254: lvsd does not own the VIPs")
                    p = 254
                ha["priority"] = p
            elif k == "advert_int":
                ha["advert_interval"] = c.duration(c.seconds(_arg(s), s.where, "advert_int"))
            elif k == "nopreempt":
                ha["preempt"] = False
            elif k == "preempt_delay":
                ha["preempt_delay"] = c.duration(c.seconds(_arg(s), s.where, "preempt_delay"))
            elif k == "version":
                ha["version"] = c.integer(_arg(s), s.where, "version", 2, 3)
            elif k == "virtual_ipaddress":
                for a in s.block or []:
                    vips.append(self.vip_of(a))
            elif k == "unicast_peer":
                ha["unicast_peers"] = [c.ip(a.key, a.where, "unicast_peer") for a in s.block or []]
            elif k == "unicast_src_ip":
                ha["unicast_src"] = c.ip(_arg(s), s.where, "unicast_src_ip")
            elif k == "track_interface":
                ha["track_interfaces"] = [self.tracked(a, "name") for a in s.block or []]
            elif k == "track_script":
                ha["track_scripts"] = [self.track_script(a) for a in s.block or []]
            elif k == "virtual_ipaddress_excluded":
                self.note(s.where, "virtual_ipaddress_excluded not translated: add them to vips if lvsd should hold them")
            elif k == "authentication":
                self.authentication(s, ha)
            elif k in ("notify_master", "notify_backup", "notify_fault"):
                ha[k] = self.script(s)
            elif k == "state":
                if _arg(s).upper() not in ("MASTER", "BACKUP"):
                    raise MigrateError(f"{s.where}: state must be MASTER or BACKUP, got {_arg(s)!r}")
                self.note(s.where, "state is not translated: in vrrp mode the priority decides (both start as backup)")
            elif k in QUIET:
                pass
            else:
                self.note(s.where, f"vrrp_instance {k} is not translated")
        fams = {":" in x for x in vips}
        if len(fams) > 1:
            v6 = ":" in vips[0]
            self.note(v.where, "virtual_ipaddress mixes IPv4 and IPv6: lvsd's instance keeps the "
                      f"{'IPv6' if v6 else 'IPv4'} ones (a second instance would hold the others)")
            vips = [x for x in vips if (":" in x) == v6]
        if vips and ":" in vips[0] and ha["version"] == 2:
            self.note(v.where, "IPv6 addresses: keepalived runs VRRPv3 for them, so does lvsd (version = 3)")
            ha["version"] = 3
        if ha["version"] == 3 and ha.pop("auth_pass", None) is not None:
            self.note(v.where, "auth_pass dropped: VRRPv3 has no authentication (keepalived ignores it too)")
        ha["vips"] = vips
        for key in ("interface", "vrid"):
            if key not in ha:
                raise MigrateError(f"{v.where}: vrrp_instance {name} has no "
                                   f"{'interface' if key == 'interface' else 'virtual_router_id'}")
        self.out.sections["ha"] = ha

    def tracked(self, a: Stmt, key: str) -> dict[str, Any]:
        """``NAME [weight N]`` of a track_* block -> ``{ key = NAME, weight = N }`` (weight 0:
        fault while it fails, keepalived's default)."""
        out: dict[str, Any] = {key: a.key, "weight": 0}
        if len(a.words) >= 3 and a.words[1] == "weight":
            out["weight"] = c.integer(a.words[2], a.where, "weight", -253, 253)
        elif len(a.words) > 1:
            self.note(a.where, f"{' '.join(a.words[1:])!r} not translated")
        return out

    def track_script(self, a: Stmt) -> dict[str, Any]:
        """A ``track_script`` entry with its ``vrrp_script`` block (keepalived's defaults written)."""
        decl = self.scripts.get(a.key)
        if decl is None:
            raise MigrateError(f"{a.where}: vrrp_script {a.key!r} is not defined")
        out: dict[str, Any] = {"argv": [], "interval": "1s", "timeout": "1s", "rise": 1, "fall": 1, "weight": 0}
        for s in decl.block or []:
            if s.key == "script":
                out["argv"] = c.argv_of(_arg(s), s.where, self.note)
            elif s.key in ("interval", "timeout"):
                out[s.key] = c.duration(max(c.seconds(_arg(s), s.where, s.key), 0.01))
            elif s.key in ("rise", "fall"):
                out[s.key] = c.integer(_arg(s), s.where, s.key, 1, 1000)
            elif s.key == "weight":
                out["weight"] = c.integer(_arg(s), s.where, "weight", -253, 253)
            elif s.key not in ("user", "init_fail"):
                self.note(s.where, f"vrrp_script {s.key} is not translated")
        if not out["argv"]:
            raise MigrateError(f"{decl.where}: vrrp_script {a.key} has no script")
        tw = self.tracked(a, "name")["weight"]
        if len(a.words) >= 3:
            out["weight"] = tw
        return out

    def vip_of(self, a: Stmt) -> str:
        w = a.words
        addr, _, plen = w[0].partition("/")
        norm = c.ip(addr, a.where, "virtual_ipaddress")
        if len(w) > 1:
            self.note(a.where, f"virtual_ipaddress options {' '.join(w[1:])!r} not translated (lvsd adds the "
                      "address to [ha] interface)")
        return f"{norm}/{plen}" if plen else norm

    def authentication(self, s: Stmt, ha: dict[str, Any]) -> None:
        kind = pw = None
        for a in s.block or []:
            if a.key == "auth_type":
                kind = _arg(a).upper()
            elif a.key == "auth_pass":
                pw = _arg(a)
        if kind == "PASS":
            ha["auth_pass"] = (pw or "")[:8]
            self.note(s.where, "auth_type PASS becomes [ha] auth_pass: a clear-text password, not security")
        elif kind == "AH":
            self.note(s.where, "auth_type AH is not supported by lvsd: the pair must drop it (or lvsd cannot join)")
        else:
            raise MigrateError(f"{s.where}: authentication needs auth_type PASS or AH")

    # --- scripts ----------------------------------------------------------------------------------

    def script(self, s: Stmt) -> list[str]:
        """``notify_up "/path arg" [user [group]]`` -> argv (the user part gets a note)."""
        cmd = _arg(s)
        if len(s.args) > 1:
            self.note(s.where, f"{s.key}: user {' '.join(s.args[1:])!r} not translated: lvsd runs hooks as itself")
        return c.argv_of(cmd, s.where, self.note)

    # --- virtual servers ----------------------------------------------------------------------------

    def virtual_server(self, vs: Stmt) -> None:
        if vs.block is None:
            raise MigrateError(f"{vs.where}: virtual_server without a {{ }} block")
        targets = self.vs_targets(vs)
        opts: dict[str, Stmt] = {}
        proto = "tcp"
        svc: dict[str, Any] = {}
        forward = "nat"
        tunnel: dict[str, Any] | None = None
        sched = "wlc"
        flags: list[str] = []
        persistence: dict[str, Any] | None = None
        quorum, hysteresis = 1, 0
        sorry: dict[str, Any] | None = None
        sorry_method: Stmt | None = None
        sorry_inhibit = False
        servers: list[Stmt] = []
        for s in vs.block:
            k = s.key
            if k in ("lvs_sched", "lb_algo"):
                v = _arg(s).lower()
                if v not in SCHEDULERS:
                    raise MigrateError(f"{s.where}: {k}: unknown scheduler {_arg(s)!r}")
                sched = v
            elif k in SCHED_FLAGS:
                flags.append(k)
            elif k == "ops":
                svc["one_packet"] = True
            elif k in ("lvs_method", "lb_kind"):
                forward, tunnel = self.method(s)
            elif k == "protocol":
                proto = _arg(s).lower()
                if proto not in ("tcp", "udp", "sctp"):
                    raise MigrateError(f"{s.where}: protocol must be TCP, UDP or SCTP, got {_arg(s)!r}")
            elif k == "persistence_timeout":
                t = c.integer(s.args[0], s.where, "persistence_timeout", 0, 4294967) if s.args else 360
                if t == 0:
                    self.note(s.where, "persistence_timeout 0 is invalid to keepalived, which ignores it: "
                              "not persistent")
                    continue
                persistence = persistence or {}
                persistence["timeout"] = t
            elif k == "persistence_granularity":
                persistence = persistence or {}
                persistence["netmask"] = _arg(s)
            elif k == "persistence_engine":
                persistence = persistence or {}
                persistence["engine"] = _arg(s)
            elif k == "quorum":
                quorum = c.integer(_arg(s), s.where, "quorum", 0)
            elif k == "hysteresis":
                hysteresis = c.integer(_arg(s), s.where, "hysteresis", 0)
            elif k in ("quorum_up", "quorum_down"):
                svc[k] = self.script(s)
            elif k == "sorry_server":
                a = c.ip(_arg(s), s.where, "sorry_server")
                sorry = {"address": a, "_where": s.where}
                if len(s.args) > 1:
                    sorry["port"] = c.port(s.args[1], s.where)
            elif k == "sorry_server_lvs_method":
                sorry_method = s
            elif k == "sorry_server_inhibit":
                sorry_inhibit = _bool(s)
            elif k in INHERITED:
                opts[k] = s
            elif k == "real_server":
                servers.append(s)
            elif k in ("ha_suspend", "omega", "ip_family", "smtp_alert", "snmp_name", "nat_mask"):
                if k in ("ha_suspend", "omega"):
                    self.note(s.where, f"{k} is not translated (lvsd has no equivalent)")
            elif k == "virtualhost":
                opts[k] = s
            else:
                raise MigrateError(f"{s.where}: unknown virtual_server keyword {k!r}")
        svc_base: dict[str, Any] = {"protocol": proto, "scheduler": sched}
        if flags:
            svc_base["sched_flags"] = flags
        if persistence is not None:
            persistence.setdefault("timeout", 360)
            persistence["timeout"] = c.duration(persistence["timeout"])
            svc_base["persistence"] = persistence
        svc_base.update({"forward": forward, "quorum": quorum, "hysteresis": hysteresis})
        if quorum == 0 and hysteresis:
            self.note(vs.where, "hysteresis without quorum is meaningless: dropped")
            svc_base["hysteresis"] = 0
        if tunnel:
            svc_base["tunnel"] = tunnel
        if "inhibit_on_failure" in opts and _bool(opts["inhibit_on_failure"]):
            svc_base["on_failure"] = "inhibit"
        svc_base.update(svc)
        for key in ("warmup",):
            if key in opts:
                self.note(opts[key].where, "warmup is not translated: lvsd spreads first checks over the interval")
        for (family_proto, vip, fwmark, family), where in targets:
            out: dict[str, Any] = {"_comment": f"{where} virtual_server {' '.join(vs.args)}"}
            if fwmark is not None:
                out["fwmark"] = fwmark
                if family == "inet6":
                    out["family"] = "inet6"
                out.update({k: v for k, v in svc_base.items() if k != "protocol"})
            else:
                out["vip"] = vip
                out.update(svc_base)
                if family_proto:
                    out["protocol"] = family_proto
            vip_port = int(vip.rsplit(":", 1)[1]) if vip else 0
            if vip is not None and vip_port == 0 and "persistence" not in out:
                raise MigrateError(f"{where}: a virtual server without a port must be persistent")
            if sorry is not None:
                out["sorry_server"] = self.sorry(sorry, sorry_method, forward, tunnel, vip_port)
                out["sorry_mode"] = "replace"
                if sorry_inhibit:
                    out["sorry_inhibit"] = True
            out["server"] = [self.real_server(s, opts, forward, vip_port, out) for s in servers]
            self.out.services.append(out)

    def sorry(self, sorry: dict[str, Any], method: Stmt | None, forward: str, tunnel: dict[str, Any] | None,
              vip_port: int) -> dict[str, Any]:
        out = {k: v for k, v in sorry.items() if not k.startswith("_")}
        fwd = forward
        if method is not None:
            fwd, tun = self.method(method)
            out["forward"] = fwd
            if tun:
                out["tunnel"] = tun
        if fwd != "nat" and "port" in out and out["port"] != vip_port:
            self.note(sorry["_where"], f"sorry_server port {out['port']} under {fwd.upper()}: keepalived and the "
                      f"kernel use the virtual server's port {vip_port}; lvsd writes that")
            out["port"] = vip_port
        return out

    def vs_targets(self, vs: Stmt) -> list[tuple[tuple[str | None, str | None, int | None, str | None], Where]]:
        """(protocol override, vip, fwmark, family) of each service this virtual_server makes."""
        a = vs.args
        if not a:
            raise MigrateError(f"{vs.where}: virtual_server needs an address, fwmark N or group NAME")
        if a[0] == "fwmark":
            mark = c.integer(_arg(vs, 1), vs.where, "fwmark", 1, 4294967295)
            return [((None, None, mark, None), vs.where)]
        if a[0] == "group":
            name = _arg(vs, 1)
            g = self.groups.get(name)
            if g is None:
                raise MigrateError(f"{vs.where}: virtual_server_group {name!r} is not defined")
            out: list[tuple[tuple[str | None, str | None, int | None, str | None], Where]] = []
            for e in g.block or []:
                if e.key == "fwmark":
                    mark = c.integer(_arg(e), e.where, "fwmark", 1, 4294967295)
                    fam = e.args[1] if len(e.args) > 1 else None
                    out.append(((None, None, mark, fam), e.where))
                    continue
                p = c.port(e.args[0], e.where) if e.args else 0
                for addr in self.expand_range(e.key, e.where):
                    out.append(((None, c.hostport(addr, p), None, None), e.where))
            if not out:
                raise MigrateError(f"{g.where}: virtual_server_group {name} is empty")
            return out
        addr = c.ip(a[0], vs.where, "virtual_server address")
        p = c.port(a[1], vs.where) if len(a) > 1 else 0
        return [((None, c.hostport(addr, p), None, None), vs.where)]

    def expand_range(self, text: str, w: Where) -> list[str]:
        """``10.0.0.1``, ``10.0.0.1-10``, ``10.0.0.250-10.0.1.10``, ``10.0.0.8/29`` -> addresses."""
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise MigrateError(f"{w}: {text!r} is not an address range") from None
            if net.num_addresses > 4096:
                raise MigrateError(f"{w}: {text} is {net.num_addresses} addresses: more than lvsd import expands (4096)")
            return [str(x) for x in net]
        if "-" not in text:
            return [c.ip(text, w, "virtual_server_group address")]
        lo_text, _, hi_text = text.partition("-")
        lo = ipaddress.ip_address(c.ip(lo_text, w, "range start"))
        if ":" in hi_text or "." in hi_text:
            hi = ipaddress.ip_address(c.ip(hi_text, w, "range end"))
        else:
            sep = ":" if lo.version == 6 else "."
            head = str(lo).rsplit(sep, 1)[0]
            try:
                hi = ipaddress.ip_address(f"{head}{sep}{hi_text}")
            except ValueError:
                raise MigrateError(f"{w}: {text!r} is not an address range") from None
        n = int(hi) - int(lo) + 1
        if n < 1 or n > 4096 or hi.version != lo.version:
            raise MigrateError(f"{w}: address range {text} is empty, mixed or over 4096 addresses")
        return [str(ipaddress.ip_address(int(lo) + i)) for i in range(n)]

    def method(self, s: Stmt) -> tuple[str, dict[str, Any] | None]:
        """``lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]``."""
        m = _arg(s).upper()
        if m not in FORWARD:
            raise MigrateError(f"{s.where}: {s.key} must be NAT, DR or TUN, got {_arg(s)!r}")
        rest = s.args[1:]
        if not rest:
            return FORWARD[m], None
        if m != "TUN":
            raise MigrateError(f"{s.where}: {s.key}: options only with TUN")
        tun: dict[str, Any] = {}
        i = 0
        while i < len(rest):
            w = rest[i].lower()
            if w == "type" and i + 1 < len(rest):
                tun["type"] = rest[i + 1].lower()
                i += 2
            elif w == "port" and i + 1 < len(rest):
                tun["port"] = c.port(rest[i + 1], s.where)
                i += 2
            elif w in ("nocsum", "csum", "remcsum"):
                tun["csum"] = "none" if w == "nocsum" else w
                i += 1
            else:
                raise MigrateError(f"{s.where}: {s.key}: unknown TUN option {rest[i]!r}")
        return "tun", tun

    # --- real servers and checkers --------------------------------------------------------------------

    def real_server(self, rs: Stmt, vs_opts: dict[str, Stmt], forward: str, vip_port: int,
                    svc: dict[str, Any]) -> dict[str, Any]:
        a = rs.args
        if not a:
            raise MigrateError(f"{rs.where}: real_server needs an address")
        out: dict[str, Any] = {"address": c.ip(a[0], rs.where, "real_server address")}
        fwd = forward
        opts = dict(vs_opts)
        checkers: list[Stmt] = []
        for s in rs.block or []:
            k = s.key
            if k == "weight":
                out["weight"] = c.integer(_arg(s), s.where, "weight", 0)
            elif k in ("lvs_method", "lb_kind"):
                fwd, tun = self.method(s)
                if fwd != forward:
                    out["forward"] = fwd
                if tun:
                    out["tunnel"] = tun
            elif k in ("notify_up", "notify_down"):
                out[k] = self.script(s)
            elif k in ("uthreshold", "lthreshold"):
                th = out.setdefault("thresholds", {"upper": 0, "lower": 0})
                th["upper" if k == "uthreshold" else "lower"] = c.integer(_arg(s), s.where, k, 0)
            elif k in INHERITED:
                opts[k] = s
            elif k in CHECKERS:
                checkers.append(s)
            elif k in ("smtp_alert", "snmp_name"):
                pass
            else:
                raise MigrateError(f"{s.where}: unknown real_server keyword {k!r}")
        out.setdefault("weight", 1)
        if len(a) > 1:
            p = c.port(a[1], rs.where)
            if fwd != "nat" and p != vip_port:
                # keepalived gives the kernel the virtual server's port (0 for fwmark) under DR/TUN
                self.note(rs.where, f"real_server port {p} under {fwd.upper()}: keepalived and the kernel use the "
                          f"virtual server's port {vip_port}; lvsd writes that (checks still probe port {p})")
                opts["_probe_port"] = Stmt(["_probe_port", str(p)], rs.where)
                p = vip_port
            if p != vip_port:
                out["port"] = p
        inhibit = opts.get("inhibit_on_failure")
        if inhibit is not None and inhibit is not vs_opts.get("inhibit_on_failure"):  # set on this server
            out["on_failure"] = "inhibit" if _bool(inhibit) else "remove"
        alpha = opts.get("alpha")
        if (alpha is None or not _bool(alpha)) and checkers and not self.alpha_noted:
            self.alpha_noted = True
            self.note(rs.where, "keepalived without alpha puts a server in at start before its first check; lvsd "
                      "waits for the first pass (rise = 1): servers enter seconds later at start")
        checks: list[dict[str, Any]] = []
        for ck in checkers:
            checks.extend(self.checker(ck, opts, out, svc))
        out["check"] = checks
        out["_comment"] = f"{rs.where} real_server {' '.join(a)}"
        return out

    def checker(self, ck: Stmt, inherited: dict[str, Stmt], rs: dict[str, Any], svc: dict[str, Any]) -> list[dict[str, Any]]:
        opts = dict(inherited)
        kind = ck.key
        body: dict[str, Any] = {}
        urls: list[Stmt] = []
        for s in ck.block or []:
            k = s.key
            if k in INHERITED:
                opts[k] = s
            elif k == "nb_get_retry":
                opts["retry"] = s
            elif k == "url":
                urls.append(s)
            else:
                body[k] = s
        if kind in ("PING_CHECK", "BFD_CHECK"):
            self.note(ck.where, f"{kind} is not translated (lvsd has no {kind.split('_')[0].lower()} check): "
                      "the server is kept without it")
            return []
        if kind == "FILE_CHECK":
            return [self.file_check(ck, body)]
        retry_default, dbr_default = CHECK_DEFAULTS.get(kind, (1, 1.0))
        delay_loop = c.seconds(_arg(opts["delay_loop"]), opts["delay_loop"].where, "delay_loop") if "delay_loop" in opts else 60.0
        timeout = (c.seconds(_arg(opts["connect_timeout"]), opts["connect_timeout"].where, "connect_timeout")
                   if "connect_timeout" in opts else 5.0)
        retry = c.integer(_arg(opts["retry"]), opts["retry"].where, "retry", 0, 999) if "retry" in opts else retry_default
        dbr = (c.seconds(_arg(opts["delay_before_retry"]), opts["delay_before_retry"].where, "delay_before_retry")
               if "delay_before_retry" in opts else (dbr_default if dbr_default is not None else delay_loop))
        base: dict[str, Any] = {}
        if kind == "MISC_CHECK":
            mt = body.pop("misc_timeout", None)
            timeout = c.integer(_arg(mt), mt.where, "misc_timeout", 0) if mt is not None else delay_loop
            timeout = timeout or delay_loop
        base.update({"interval": c.duration(max(delay_loop, 0.01)), "timeout": c.duration(max(timeout, 0.001)),
                     "rise": 1, "fall": retry + 1, "retry_delay": c.duration(max(dbr, 0.01))})
        net: dict[str, Any] = {}
        cip = body.pop("connect_ip", None)
        cport = body.pop("connect_port", None)
        probe_port = inherited.get("_probe_port")
        if cip is not None or cport is not None or probe_port is not None:
            host = c.ip(_arg(cip), cip.where, "connect_ip") if cip is not None else ""
            pnum = (c.port(_arg(cport), cport.where) if cport is not None
                    else int(probe_port.args[0]) if probe_port is not None else None)
            if pnum is None:
                pnum = rs.get("port") or (int(svc["vip"].rsplit(":", 1)[1]) if svc.get("vip") else 0)
            if pnum == 0:
                raise MigrateError(f"{ck.where}: {kind} of a server without a port needs connect_port")
            net["connect"] = c.hostport(host, pnum) if host else f":{pnum}"
        bindto = body.pop("bindto", None)
        if bindto is not None:
            net["bind"] = c.ip(_arg(bindto), bindto.where, "bindto")
        for k in ("bind_port", "bind_if", "fwmark", "log_all_failures"):
            s = body.pop(k, None)
            if s is not None and k != "log_all_failures":
                self.note(s.where, f"{kind} {k} is not translated")
        if kind == "TCP_CHECK":
            out = [{"type": "tcp", **net, **base}]
        elif kind == "SMTP_CHECK":
            helo = body.pop("helo_name", None)
            if helo is not None:
                self.note(helo.where, "SMTP_CHECK helo_name not translated")
            self.note(ck.where, "SMTP_CHECK becomes a tcp check expecting the \"220\" greeting (no HELO sent)")
            out = [{"type": "tcp", **net, "expect": "220", **base}]
        elif kind in ("HTTP_GET", "SSL_GET"):
            out = self.http(ck, kind, urls, body, opts, net, base)
        elif kind == "MISC_CHECK":
            out = [self.misc(ck, body, base)]
        elif kind == "DNS_CHECK":
            qtype = body.pop("type", None)
            name = body.pop("name", None)
            out = [{"type": "dns", **net, "name": _arg(name) if name is not None else ".",
                    "qtype": _arg(qtype).upper() if qtype is not None else "SOA", **base}]
        elif kind == "UDP_CHECK":
            out = [self.udp(ck, body, net, base)]
        else:
            raise MigrateError(f"{ck.where}: unknown checker {kind}")
        for k, s in body.items():
            self.note(s.where, f"{kind} {k} is not translated")
        return out

    def http(self, ck: Stmt, kind: str, urls: list[Stmt], body: dict[str, Stmt], opts: dict[str, Stmt],
             net: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
        typ = "https" if kind == "SSL_GET" else "http"
        vhost = opts.get("virtualhost")
        tls: dict[str, Any] = {}
        if kind == "SSL_GET":
            tls["verify"] = False
            self.note(ck.where, "SSL_GET does not verify certificates: written as verify = false; set verify = true "
                      "with host/sni (and ca) to get what SSL_GET never checked")
            sni = body.pop("enable_sni", None)
            sni_name = body.pop("sni_name", None)
            if sni_name is not None:
                tls["sni"] = _arg(sni_name)
            elif sni is not None and vhost is not None:
                tls["sni"] = _arg(vhost)
            body.pop("tls_compliant", None)
        for k in ("http_protocol", "fast_recovery"):
            s = body.pop(k, None)
            if s is not None:
                self.note(s.where, f"{kind} {k} not translated (lvsd speaks HTTP/1.1 with Connection: close)")
        if not urls:
            self.note(ck.where, f"{kind} without url: checks path / for a 2xx status")
            urls = [Stmt(["url"], ck.where, [])]
        out: list[dict[str, Any]] = []
        for u in urls:
            chk: dict[str, Any] = {"type": typ, **net, "path": "/", "status": "200-299"}
            host = vhost
            for s in u.block or []:
                if s.key == "path":
                    p = _arg(s)
                    chk["path"] = p if p.startswith("/") else "/" + p
                elif s.key == "status_code":
                    codes: list[Any] = [int(x) if x.isdigit() else x for x in s.args]
                    chk["status"] = codes[0] if len(codes) == 1 else codes
                elif s.key == "digest":
                    chk["digest"] = _arg(s).lower()
                elif s.key == "regex":
                    chk["body"] = _arg(s)
                    self.note(s.where, "regex is PCRE in keepalived and Python re in lvsd: check that it means the same")
                elif s.key == "virtualhost":
                    host = s
                elif s.key == "tls_compliant":
                    pass
                else:
                    self.note(s.where, f"url {s.key} is not translated")
            if host is not None:
                chk["host"] = _arg(host)
            if "body" in chk and "digest" in chk:
                self.note(u.where, "url with both digest and regex: lvsd keeps the digest only")
                del chk["body"]
            chk.update(tls)
            chk.update(base)
            out.append(chk)
        return out

    def misc(self, ck: Stmt, body: dict[str, Stmt], base: dict[str, Any]) -> dict[str, Any]:
        path = body.pop("misc_path", None)
        if path is None:
            raise MigrateError(f"{ck.where}: MISC_CHECK needs misc_path")
        out: dict[str, Any] = {"type": "script", "argv": c.argv_of(_arg(path), path.where, self.note)}
        dyn = body.pop("misc_dynamic", None)
        if dyn is not None and _bool(dyn):
            out["dynamic_weight"] = True
        user = body.pop("user", None)
        if user is not None:
            name = _arg(user)
            u, _, g = name.partition(":")
            out["user"] = u
            grp = g or (user.args[1].lstrip(":") if len(user.args) > 1 else "")
            if grp:
                out["group"] = grp
        out.update(base)
        return out

    def udp(self, ck: Stmt, body: dict[str, Stmt], net: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        payload = body.pop("payload", None)
        out: dict[str, Any] = {"type": "udp", **net, "send": ""}
        if payload is not None:
            data = self.hexstr(payload)
            if any(b >= 0x80 for b in data):
                self.note(payload.where, "payload bytes above 0x7f cannot be written in lvsd's send (UTF-8 text)")
            else:
                out["send"] = data.decode("ascii")
        else:
            self.note(ck.where, "UDP_CHECK without payload sends random bytes; lvsd sends an empty datagram")
        rr = body.pop("require_reply", None)
        if rr is None:
            self.note(ck.where, "UDP_CHECK without require_reply passes on no ICMP error; lvsd's udp check needs a reply")
        elif rr.args:
            data = self.hexstr(rr)
            if "x" in "".join(rr.args).lower() or any(b >= 0x80 for b in data):
                self.note(rr.where, "require_reply with wildcards or bytes above 0x7f: any reply is accepted")
            else:
                out["expect"] = data.decode("ascii")
        for k in ("min_reply_length", "max_reply_length"):
            s = body.pop(k, None)
            if s is not None:
                self.note(s.where, f"UDP_CHECK {k} is not translated")
        out.update(base)
        return out

    def hexstr(self, s: Stmt) -> bytes:
        """keepalived's free-form HEX_STR (groups of hex digits, odd groups zero-padded)."""
        out = bytearray()
        for group in s.args:
            g = group.lower().replace("x", "0")
            if any(ch not in "0123456789abcdef" for ch in g):
                raise MigrateError(f"{s.where}: {s.key}: {group!r} is not hexadecimal")
            if len(g) % 2:
                g = g[:-1] + "0" + g[-1]
            out.extend(bytes.fromhex(g))
        return bytes(out)

    def file_check(self, ck: Stmt, body: dict[str, Stmt]) -> dict[str, Any]:
        tf = body.pop("track_file", None)
        if tf is None:
            raise MigrateError(f"{ck.where}: FILE_CHECK needs track_file")
        name = _arg(tf)
        decl = self.track_files.get(name)
        if decl is None:
            raise MigrateError(f"{tf.where}: track_file {name!r} is not defined")
        path = weight = None
        for s in decl.block or []:
            if s.key == "file":
                path = _arg(s)
            elif s.key == "weight":
                weight = s
            elif s.key == "init_file":
                self.note(s.where, "track_file init_file is not translated: lvsd never writes the file")
        if path is None:
            raise MigrateError(f"{decl.where}: track_file {name} has no file")
        w = body.pop("weight", None) or weight
        wv = c.integer(_arg(w), w.where, "weight", -2147483647, 2147483647) if w is not None else 1
        body.pop("dynamic", None)
        now = {"interval": "1s", "rise": 1, "fall": 1}  # keepalived acts on the file's change at once
        if wv == 0:
            return {"type": "file", "path": path, "mode": "status", **now}
        if wv != 1 or (w is not None and "reverse" in w.args):
            self.note(w.where if w else ck.where, f"FILE_CHECK weight {wv}: lvsd's weight mode uses the file's "
                      "value as the weight itself (not multiplied and added)")
        else:
            self.note(ck.where, "FILE_CHECK adds the file's value to the weight; lvsd's weight mode sets the "
                      "weight to the value (0 = out)")
        return {"type": "file", "path": path, "mode": "weight", **now}


def import_keepalived(path: str, config_id: str | None = None) -> Imported:
    """Translate keepalived.conf ``path`` (raises MigrateError for what keepalived refuses)."""
    return Importer(path, config_id).run()
