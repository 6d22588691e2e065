"""``lvsctl``: talk to a running lvsd over its control socket.

    lvsctl [-s SOCKET] [--json] status | services | reload | role master|backup|fault | metrics
    lvsctl services [--service NAME|GLOB]... [--vip ADDR[:PORT]]... [--state up|down|unknown]...
                    [--limit N] [--offset N]
    lvsctl disable|enable SERVICE [SERVER] | drain SERVICE [SERVER] [--timeout 10m]
    lvsctl weight SERVICE SERVER N | weight --clear SERVICE SERVER        (each with --reason TEXT)

Stdlib only (a few lines of HTTP/1.0 over AF_UNIX, not even http.client) so it starts fast and works on a minimal director.
Exit status: 0 ok, 1 the daemon refused (invalid config on reload, role not settable),
2 usage, 3 the daemon is not reachable.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

DEFAULT_SOCKET = "/run/lvsd/lvsd.sock"


class Unreachable(Exception):
    """The daemon's socket cannot be reached (or does not answer HTTP)."""


def request(path: str, method: str, url: str, body: Any = None, timeout: float = 130.0) -> tuple[int, bytes]:
    """One HTTP/1.0 request over the unix socket; (status, body).

    Written on a bare socket rather than http.client: that module pulls in the email package,
    which was most of lvsctl's start-up time, and lvsctl runs from notify scripts."""
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {url} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n"
    chunks: list[bytes] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(head.encode() + data)
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    except OSError as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise Unreachable(f"{path}: {why}") from None
    finally:
        sock.close()
    return _parse_response(path, b"".join(chunks))


def _parse_response(path: str, raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a complete HTTP/1.x response (Content-Length, chunked or until close)."""
    header, sep, rest = raw.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise Unreachable(f"{path}: no HTTP answer (is it lvsd's control socket?)")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        fields[k.strip().lower()] = v.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        out = bytearray()
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise Unreachable(f"{path}: malformed chunked answer") from None
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        rest = bytes(out)
    elif b"content-length" in fields and fields[b"content-length"].isdigit():
        rest = rest[: int(fields[b"content-length"])]
    return int(parts[1]), rest


def _print_status(s: dict[str, Any]) -> None:
    print(f"state:    {s['state']} (pid {s['pid']}, up {s['uptime']:.0f}s, backend {s['backend']})")
    print(f"config:   {s['config']}")
    print(f"status:   {s['status']}")
    h = s.get("health", {})
    print(f"servers:  {s['servers']} in {s['services']} services: {h.get('up', 0)} up, "
          f"{h.get('down', 0)} down, {h.get('unknown', 0)} unknown")
    r = s["reconcile"]
    print(f"kernel:   last reconcile {'ok' if r['ok'] else 'FAILING'} ({r['duration'] * 1000:.1f} ms), "
          f"{sum(r['ops'].values())} ops applied, {sum(r['errors'].values())} refused, {r['repairs']} repairs")
    for ref in r.get("refused", []):
        print(f"refused:  {ref['service']}: {ref['op']}: {ref['error']} "
              f"({ref['count']} times, retry in {ref['retry_in']:.0f}s)")
    ov = s.get("overrides") or {}
    if ov.get("count") or ov.get("error"):
        print(f"overrides: {ov.get('count', 0)} (lvsctl services shows them)" + (f"; {ov['error']}" if ov.get("error") else ""))
    rl = s["reload"]
    if rl["count"]:
        print(f"reload:   {'ok' if rl['ok'] else 'FAILED: ' + rl['error']}")
    if s.get("role"):
        print(f"role:     {s['role']}")
    ha = s.get("ha")
    if ha and ha.get("announce"):
        _print_announce(ha["announce"])
    if ha:
        for k, v in ha.items():
            if k not in ("role", "announce"):
                print(f"ha.{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")


def _print_announce(a: dict[str, Any]) -> None:
    """bgp mode: one line per VIP (announced or not, and why), the interface, BIRD's sessions."""
    state = "DRAINED" if a["drained"] else "announcing" if a["announce"] else "announce = false"
    print(f"announce: {a['interface']} ({state}), {a['repairs']} repairs" + (f", ERROR {a['error']}" if a["error"] else ""))
    for v in a["vips"]:
        word = "ANNOUNCED" if v["announced"] else "withdrawn"
        print(f"  vip {v['vip']:<39} {word:<9} {v['reason']:<12} {v['detail']}")
    bs = a.get("bgp_sessions")
    if bs is not None:
        names = ", ".join(f"{x['name']} {x['info'] or x['state']}" for x in bs["sessions"])
        print(f"  bgp: {bs['established']} sessions established" + (f" ({names})" if names else "")
              + (f": {bs['error']}" if bs.get("error") else ""))
    for w in a.get("warnings", []):
        print(f"  warning: {w}")
    if a.get("drain_error"):
        print(f"  drain file: {a['drain_error']}")


#: characters sent as they are in a query value (RFC 3986 unreserved); the rest percent-encoded
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _query(args: argparse.Namespace) -> str:
    """``/services``' query from ``lvsctl services``' options ("" for none). Encoded by hand:
    urllib.parse is not worth its import for a few values."""
    pairs = [(k, v) for k in ("service", "vip", "state") for v in getattr(args, k) or ()]
    pairs += [(k, str(v)) for k in ("limit", "offset") if (v := getattr(args, k)) is not None]
    query = "&".join(k + "=" + "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in v.encode()) for k, v in pairs)
    return "?" + query if query else ""


def _print_services(data: dict[str, Any]) -> None:
    for svc in data["services"]:
        flag = "" if svc.get("in_kernel", True) else "  [not in kernel]"
        q = "  [BELOW QUORUM]" if svc.get("below_quorum") else ""
        print(f"{svc['name']}  {svc['key']}  {svc['scheduler']}{flag}{q}")
        for srv in svc["servers"]:
            kw = srv.get("kernel_weight")
            kernel = "-" if kw is None else str(kw)
            reason = f"  {srv['reason']}" if srv.get("reason") else ""
            print(f"  {srv['server']:<28} {srv['health']:<8} weight {srv['weight']:>5} kernel {kernel:>5}"
                  f"  conns {srv.get('active_conns', 0)}/{srv.get('inact_conns', 0)}{reason}"
                  + _override_text(srv.get("override")))
        for other in svc.get("other_kernel_servers", []):
            if other.get("sorry"):
                print(f"  {other['server']:<28} {'sorry':<8} (sorry server, weight {other['kernel_weight']})")
            elif other.get("override"):
                print(f"  {other['server']:<28} {'removed':<8} (weight {other['kernel_weight']})"
                      + _override_text(other["override"]))
            else:
                print(f"  {other['server']:<28} {'extra':<8} (in the kernel only, weight {other['kernel_weight']})")
    if "kernel_error" in data:
        print(f"kernel: {data['kernel_error']}", file=sys.stderr)
    total, shown, offset = data.get("total"), len(data["services"]), data.get("offset") or 0
    if total is not None and shown < total:  # a page, or an offset: say where the rest is
        more = f"; --offset {offset + shown} for the next" if offset + shown < total else ""
        print(f"lvsctl: services {offset + 1}-{offset + shown} of {total} shown{more}" if shown
              else f"lvsctl: none of {total} services shown (offset {offset})", file=sys.stderr)
    elif total == 0:
        print("lvsctl: no service matches", file=sys.stderr)


def _override_text(ov: dict[str, Any] | None) -> str:
    """``  [draining (3 conns) by uid 0 (root) 2026-12-03 19:00:00: reason]``, or ""."""
    if not ov:
        return ""
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ov["at"])) if ov.get("at") else ""
    why = f": {ov['reason']}" if ov.get("reason") else ""
    return f"  [{ov['label']} by {ov['by'] or 'unknown'} {when}{why}]"


def _duration(text: str) -> float:
    """``--timeout``: seconds, or a number with ms, s, m, h or d."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip()
    for u in ("ms", "s", "m", "h", "d"):
        if t.endswith(u) and t[: -len(u)].replace(".", "", 1).isdigit():
            return float(t[: -len(u)]) * units[u]
    if t.replace(".", "", 1).isdigit():
        return float(t)
    raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 10m, 1h)")


def _count(text: str) -> int:
    """``--limit``, ``--offset``: a whole number 0 or more."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number 0 or more: {text!r}")
    return int(text)


def _control_body(args: argparse.Namespace) -> dict[str, Any]:
    """The /override request of disable, enable, drain and weight."""
    body: dict[str, Any] = {"action": args.cmd, "service": args.service, "server": args.server or None,
                            "reason": args.reason or ""}
    if args.cmd == "drain":
        body["timeout"] = args.timeout
    if args.cmd == "weight":
        body["clear"] = args.clear
        body["weight"] = args.weight
    return body


def main(argv: list[str] | None = None) -> int:
    """Console script ``lvsctl``."""
    p = argparse.ArgumentParser(prog="lvsctl", description="Control a running lvsd.")
    p.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="daemon state, health summary, last reconcile and reload")
    sv = sub.add_parser("services", help="the services (every one, or those the options select) with their servers' "
                        "health and kernel weights")
    sv.add_argument("--service", action="append", metavar="NAME", help="this service; a glob (web-*) selects by "
                    "pattern; repeat for more")
    sv.add_argument("--vip", action="append", metavar="ADDR[:PORT]", help="the services of this VIP; repeat for more")
    sv.add_argument("--state", action="append", choices=("up", "down", "unknown"),
                    help="only servers in this state (and their services); repeat for more")
    sv.add_argument("--limit", type=_count, metavar="N", help="at most N services (one page)")
    sv.add_argument("--offset", type=_count, metavar="N", help="skip the first N services selected (the next page)")
    sub.add_parser("reload", help="re-read the config (as SIGHUP) and wait for the result")
    r = sub.add_parser("role", help="set the HA role (mode = external)")
    r.add_argument("role", choices=("master", "backup", "fault"))
    sub.add_parser("metrics", help="print the Prometheus metrics")
    sub.add_parser("drain-director", help="bgp mode: withdraw every VIP (kept across restarts)")
    sub.add_parser("undrain-director", help="bgp mode: announce the healthy VIPs again")
    for name, text in (
        ("disable", "take a server (or every server of SERVICE) out now, as its on_failure says; checks keep running"),
        ("enable", "clear the overrides of a server (or every server of SERVICE)"),
        ("drain", "weight 0, then out once its connections reach 0 (or at --timeout)"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("service")
        c.add_argument("server", nargs="?", help="address:port or address (default: every server of SERVICE)")
        c.add_argument("--reason", default="", help="why, recorded and shown with the override")
        if name == "drain":
            c.add_argument("--timeout", type=_duration, default=0.0, help="take it out after this long anyway (e.g. 10m)")
    w = sub.add_parser("weight", help="pin a server's weight over the configured and dynamic ones")
    w.add_argument("service")
    w.add_argument("server", help="address:port or address")
    w.add_argument("weight", nargs="?", type=int, help="the weight to pin (0..2147483647)")
    w.add_argument("--clear", action="store_true", help="remove the pinned weight")
    w.add_argument("--reason", default="", help="why, recorded and shown with the override")
    args = p.parse_args(argv)
    if args.cmd == "weight" and (args.weight is None) == (not args.clear):
        p.error("weight: give either N or --clear")
    try:
        if args.cmd == "status":
            code, body = request(args.socket, "GET", "/status")
        elif args.cmd == "services":
            code, body = request(args.socket, "GET", "/services" + _query(args))
        elif args.cmd == "reload":
            code, body = request(args.socket, "POST", "/reload", {})
        elif args.cmd == "role":
            code, body = request(args.socket, "POST", "/role", {"role": args.role})
        elif args.cmd in ("drain-director", "undrain-director"):
            code, body = request(args.socket, "POST", "/" + args.cmd, {})
        elif args.cmd in ("disable", "enable", "drain", "weight"):
            code, body = request(args.socket, "POST", "/override", _control_body(args))
        else:
            code, body = request(args.socket, "GET", "/metrics")
            sys.stdout.write(body.decode())
            return 0 if code == 200 else 1
    except Unreachable as e:
        print(f"lvsctl: cannot reach lvsd: {e}", file=sys.stderr)
        return 3
    try:
        data = json.loads(body)
    except ValueError:
        print(f"lvsctl: unexpected answer (HTTP {code})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0 if code == 200 else 1
    if code != 200:
        print(f"lvsctl: {data.get('message', f'HTTP {code}')}", file=sys.stderr)
        return 1
    if args.cmd == "status":
        _print_status(data)
    elif args.cmd == "services":
        _print_services(data)
    elif args.cmd == "reload":
        print(data["message"])
    elif args.cmd in ("drain-director", "undrain-director"):
        print("drained: every VIP withdrawn" if data["drained"] else "undrained: healthy VIPs announced")
    elif args.cmd in ("disable", "enable", "drain", "weight"):
        servers = data.get("servers", [])
        print(f"{args.cmd}: " + (", ".join(servers) if servers else "nothing to change"))
    else:
        print(f"role {data['role']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
