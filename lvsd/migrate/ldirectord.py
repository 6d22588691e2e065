"""``lvsd import ldirectord FILE``: an ldirectord.cf as lvsd keys.

ldirectord.cf is ``key = value`` lines; a ``virtual=`` line opens a section that its indented lines
belong to; global keys are defaults for every section. ldirectord's defaults are written out:
checkinterval 10 s, checktimeout 5 s, negotiatetimeout 30 s, failurecount 1 (``fall = 1``,
``rise = 1``), scheduler wrr, forwarding gate (DR), weight 1, quiescent yes (``on_failure =
"inhibit"``), cleanstop yes (``[daemon] on_stop = "remove"``). ``fallback`` is the sorry server in
lvsd's own ``add`` mode (ldirectord adds it when every real server is down: quorum 1). A
``maintenancedir`` becomes two ``file`` checks per server (presence of ``DIR/IP:PORT`` or ``DIR/IP``).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from . import common as c
from .kconf import split_words
from .model import Imported, MigrateError, Notes, Where

FORWARD = {"gate": "dr", "masq": "nat", "ipip": "tun"}
#: keys that only matter to ldirectord's own running (logging, mail, reload)
QUIET = {"autoreload", "logfile", "callback", "supervised", "fork", "emailalert", "emailalertfreq",
         "emailalertstatus", "emailalertfrom", "smtp", "execute", "monitorfile", "cleanstop", "readdquiescent"}
VIRTUAL_KEYS = {"real", "service", "request", "receive", "checktype", "checkport", "checkinterval", "checktimeout",
                "negotiatetimeout", "connecttimeout", "failurecount", "quiescent", "scheduler", "persistent",
                "netmask", "protocol", "virtualhost", "httpmethod", "fallback", "checkcommand", "checkcount",
                "login", "passwd", "database", "secret", "fallbackcommand", "emailalert", "emailalertfreq",
                "emailalertstatus", "monitorfile", "cleanstop", "readdquiescent", "sched_flags"}
GLOBAL_KEYS = {"checkinterval", "checktimeout", "negotiatetimeout", "connecttimeout", "failurecount", "quiescent",
               "fallback", "maintenancedir", "cleanstop"} | QUIET
#: port -> the service ldirectord guesses for a negotiate check when ``service`` is not set
PORT_SERVICE = {80: "http", 443: "https", 53: "dns", 21: "ftp", 25: "smtp", 110: "pop", 143: "imap", 3306: "mysql"}


def _port_of(text: str, where: Where) -> int:
    if text.isdigit():
        return c.port(text, where)
    try:
        return socket.getservbyname(text)
    except OSError:
        raise MigrateError(f"{where}: unknown port or service name {text!r}") from None


def _split_hostport(text: str, where: Where, need_port: bool) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, (_port_of(rest[1:], where) if rest.startswith(":") else None)
    if text.count(":") == 1:
        host, _, p = text.partition(":")
        return host, _port_of(p, where)
    if need_port:
        raise MigrateError(f"{where}: {text!r} needs a port (ADDRESS:PORT)")
    return text, None


class Importer:
    """One ldirectord.cf translated: ``run()`` returns the model."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.out = Imported(source=path)
        self.notes: Notes = self.out.notes
        self.glob: dict[str, tuple[str, Where]] = {}

    def note(self, where: Where | None, msg: str) -> None:
        self.notes.add(where, msg)

    def lines(self) -> list[tuple[str, str, bool, Where]]:
        """(key, value, indented, where) of every setting line."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(64 << 20)
        except OSError as e:
            raise MigrateError(f"{self.path}: {e.strerror or e}") from None
        out = []
        for i, line in enumerate(raw.decode("utf-8", errors="surrogateescape").split("\n")):
            w = Where(self.path, i + 1)
            body = line.rstrip("\r")
            text = body.split("#", 1)[0] if '"' not in body else _strip_comment(body)
            if not text.strip():
                continue
            if "=" not in text:
                raise MigrateError(f"{w}: expected key=value, got {text.strip()!r}")
            k, _, v = text.partition("=")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise MigrateError(f"{w}: not UTF-8 text") from None
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"' and '"' not in v[1:-1]:
                v = v[1:-1]  # a quoted value: logfile="/var/log/x", checkcommand="/bin/x -y"
            out.append((k.strip().lower(), v, text[:1].isspace(), w))
        return out

    def run(self) -> Imported:
        sections: list[tuple[str, Where, list[tuple[str, str, Where]]]] = []
        for k, v, indented, w in self.lines():
            if k == "virtual":
                sections.append((v, w, []))
            elif indented and sections:
                if k not in VIRTUAL_KEYS:
                    raise MigrateError(f"{w}: unknown virtual server key {k!r}")
                sections[-1][2].append((k, v, w))
            else:
                if k not in GLOBAL_KEYS:
                    raise MigrateError(f"{w}: unknown global key {k!r}" + (" (virtual server keys must be indented)"
                                                                          if k in VIRTUAL_KEYS else ""))
                self.glob[k] = (v, w)
        cleanstop = self.glob.get("cleanstop", ("yes", None))[0].lower()
        self.out.sections["daemon"] = {"on_stop": "keep" if cleanstop == "no" else "remove"}
        for k in self.glob:
            if k in QUIET and k not in ("cleanstop",):
                self.note(self.glob[k][1], f"{k} is not translated (lvsd logs to the journal, reloads on SIGHUP)")
        for v, w, keys in sections:
            self.virtual(v, w, keys)
        if not sections:
            self.note(None, "no virtual= section: the output has no [[service]]")
        return self.out

    def virtual(self, spec: str, w: Where, keys: list[tuple[str, str, Where]]) -> None:
        opts: dict[str, tuple[str, Where]] = {k: v for k, v in self.glob.items()}
        reals: list[tuple[str, Where]] = []
        for k, v, kw in keys:
            if k == "real":
                reals.append((v, kw))
            else:
                opts[k] = (v, kw)
        svc: dict[str, Any] = {"_comment": f"{w} virtual={spec}"}
        proto = opts.get("protocol", ("tcp", w))[0].lower()
        if spec.isdigit():
            svc["fwmark"] = c.integer(spec, w, "fwmark", 1, 4294967295)
            vport = 0
        else:
            host, p = _split_hostport(spec, w, need_port=True)
            addr = c.ip(host, w, "virtual address")
            assert p is not None
            vport = p
            svc["vip"] = c.hostport(addr, p)
            if proto not in ("tcp", "udp", "sctp"):
                raise MigrateError(f"{opts['protocol'][1]}: protocol must be tcp, udp or sctp (fwm for a fwmark)")
            svc["protocol"] = proto
        svc["scheduler"] = opts.get("scheduler", ("wrr", w))[0]
        if "persistent" in opts:
            pv, pw = opts["persistent"]
            svc["persistence"] = {"timeout": c.duration(c.integer(pv, pw, "persistent", 1, 4294967))}
            if "netmask" in opts:
                svc["persistence"]["netmask"] = opts["netmask"][0]
        svc["quorum"], svc["hysteresis"] = 1, 0
        quiescent = opts.get("quiescent", ("yes", w))[0].lower() != "no"
        svc["on_failure"] = "inhibit" if quiescent else "remove"
        if "fallback" in opts:
            fv, fw = opts["fallback"]
            words = fv.split()
            host, p = _split_hostport(words[0], fw, need_port=False)
            sorry: dict[str, Any] = {"address": c.ip(host, fw, "fallback address")}
            fwd = FORWARD.get(words[1].lower()) if len(words) > 1 else "dr"
            if fwd is None:
                raise MigrateError(f"{fw}: fallback forwarding must be gate, masq or ipip, got {words[1]!r}")
            sorry["forward"] = fwd
            if p is not None and (fwd == "nat" or p == vport):
                sorry["port"] = p
            elif p is not None:
                self.note(fw, f"fallback port {p} under {fwd}: the kernel forwards to the VIP's port; lvsd writes that")
            svc["sorry_server"] = sorry
        for k in ("fallbackcommand", "emailalert", "monitorfile", "login", "passwd", "database", "secret",
                  "checkcount", "sched_flags"):
            if k in opts and k not in self.glob:
                self.note(opts[k][1], f"{k} is not translated")
        checks = self.checks(opts, w, vport)
        servers = []
        for rv, rw in reals:
            servers.extend(self.real(rv, rw, vport, checks, opts, "fwmark" in svc))
        svc["server"] = servers
        self.out.services.append(svc)

    def checks(self, opts: dict[str, tuple[str, Where]], w: Where, vport: int) -> list[dict[str, Any]]:
        def num(k: str, default: float) -> float:
            if k not in opts:
                return default
            return c.seconds(opts[k][0], opts[k][1], k)

        ctype = opts.get("checktype", ("negotiate", w))[0].lower()
        interval = num("checkinterval", 10.0)
        timeout = num("checktimeout", num("connecttimeout", 5.0))
        ntimeout = num("negotiatetimeout", timeout if "checktimeout" in opts else 30.0)
        fall = int(num("failurecount", 1)) or 1
        common = {"interval": c.duration(interval), "rise": 1, "fall": fall, "retry_delay": c.duration(interval)}
        conn: dict[str, Any] = {}
        if "checkport" in opts:
            conn["connect"] = f":{_port_of(opts['checkport'][0], opts['checkport'][1])}"
        if ctype in ("off", "on"):
            return []
        if ctype == "connect":
            return [{"type": "tcp", **conn, "timeout": c.duration(timeout), **common}]
        if ctype == "ping":
            self.note(opts.get("checktype", ("", w))[1], "checktype ping is not translated (lvsd has no ping check)")
            return []
        if ctype == "external" or ctype == "external-perl":
            cmd = opts.get("checkcommand")
            if cmd is None:
                raise MigrateError(f"{w}: checktype {ctype} needs checkcommand")
            self.note(cmd[1], "checkcommand gets VIP VPORT RIP RPORT as arguments in ldirectord; lvsd passes "
                      "LVSD_CHECK_ADDR/LVSD_CHECK_PORT in the environment: adapt the script")
            return [{"type": "script", "argv": c.argv_of(cmd[0], cmd[1], self.note), "timeout": c.duration(timeout),
                     **common}]
        if ctype.isdigit():
            self.note(opts["checktype"][1], f"checktype {ctype} (negotiate every {ctype}th check, connect between): "
                      "lvsd negotiates every time")
        elif ctype != "negotiate":
            raise MigrateError(f"{opts['checktype'][1]}: unknown checktype {ctype!r}")
        port = int(conn["connect"][1:]) if conn else vport
        service = opts.get("service", (PORT_SERVICE.get(port, "none"), w))[0].lower()
        request = opts.get("request", ("", w))[0].strip('"')
        receive = opts.get("receive", ("", w))[0].strip('"')
        if service in ("http", "https"):
            chk: dict[str, Any] = {"type": service, **conn, "path": "/" + request.lstrip("/"), "status": "200-299"}
            if receive:
                chk["body"] = receive
            if "virtualhost" in opts:
                chk["host"] = opts["virtualhost"][0]
            if "httpmethod" in opts:
                chk["method"] = opts["httpmethod"][0].upper()
            if service == "https":
                chk["verify"] = False
                self.note(opts.get("service", ("", w))[1], "ldirectord's https check does not verify "
                          "certificates: written as verify = false")
            return [{**chk, "timeout": c.duration(ntimeout), **common}]
        if service == "dns" and request:
            d: dict[str, Any] = {"type": "dns", **conn, "name": request.rstrip(".") or "."}
            if receive:
                d["expect"] = receive
            return [{**d, "timeout": c.duration(ntimeout), **common}]
        if service != "none":
            self.note(opts.get("service", ("", w))[1], f"service {service} negotiate check becomes a tcp connect check")
        return [{"type": "tcp", **conn, "timeout": c.duration(timeout), **common}]

    def real(self, spec: str, w: Where, vport: int, checks: list[dict[str, Any]],
             opts: dict[str, tuple[str, Where]], fwmark: bool) -> list[dict[str, Any]]:
        words = split_words(spec.replace(",", " "), w)
        if not words:
            raise MigrateError(f"{w}: real= needs an address")
        host, p = _split_hostport(words[0], w, need_port=False)
        fwd = "dr"
        weight = 1
        rest = words[1:]
        if rest and rest[0].lower() in FORWARD:
            fwd = FORWARD[rest.pop(0).lower()]
        if rest and rest[0].lstrip("-").isdigit():
            weight = c.integer(rest.pop(0), w, "weight", 0)
        own_checks = checks
        if rest:  # "request", "receive" of this server
            self.note(w, "a per-server request/receive replaces the virtual's for this server")
            own_checks = [dict(ck) for ck in checks]
            for ck in own_checks:
                if ck["type"] in ("http", "https"):
                    ck["path"] = "/" + rest[0].lstrip("/")
                    if len(rest) > 1:
                        ck["body"] = rest[1]
        addrs = self.expand(host, w)
        out = []
        for a in addrs:
            srv: dict[str, Any] = {"_comment": f"{w} real={spec}", "address": a, "weight": weight}
            if fwd != "dr":
                srv["forward"] = fwd
            if p is not None:
                if fwd != "nat" and not fwmark and p != vport:
                    self.note(w, f"real server port {p} under {fwd}: the kernel forwards to the VIP's port "
                              f"{vport}; lvsd writes that")
                elif p != vport or fwmark:
                    srv["port"] = p
            cks = [dict(ck) for ck in own_checks]
            if "maintenancedir" in self.glob:
                d = self.glob["maintenancedir"][0].rstrip("/")
                pp = p if p is not None else vport
                names = [f"{a}:{pp}", a] if pp else [a]
                cks += [{"type": "file", "path": f"{d}/{n}", "mode": "presence", "interval": "1s", "rise": 1,
                         "fall": 1} for n in names]
            if cks:
                srv["check"] = cks
            out.append(srv)
        return out

    def expand(self, host: str, w: Where) -> list[str]:
        """``a.b.c.d->a.b.c.e`` ranges, else one address (a host name passes as it is: lvsd resolves it)."""
        if "->" in host:
            lo_t, _, hi_t = host.partition("->")
            lo = ipaddress.ip_address(c.ip(lo_t, w, "range start"))
            hi = ipaddress.ip_address(c.ip(hi_t, w, "range end"))
            n = int(hi) - int(lo) + 1
            if hi.version != lo.version or not 1 <= n <= 4096:
                raise MigrateError(f"{w}: range {host} is empty, mixed or over 4096 addresses")
            return [str(ipaddress.ip_address(int(lo) + i)) for i in range(n)]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            self.note(w, f"{host!r} is a host name: lvsd resolves it when the config is loaded")
            return [host]


def _strip_comment(line: str) -> str:
    q = False
    for i, ch in enumerate(line):
        if ch == '"':
            q = not q
        elif ch == "#" and not q:
            return line[:i]
    return line


def import_ldirectord(path: str) -> Imported:
    """Translate ldirectord.cf ``path`` (raises MigrateError for what ldirectord refuses)."""
    return Importer(path).run()
