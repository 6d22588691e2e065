"""The control API: aiohttp on a unix socket (lvsctl's peer), plus /metrics, optionally on TCP.

``GET /status``, ``GET /services`` (filtered and paged by its query: ``service``, ``vip``,
``state``, ``limit``, ``offset``), ``POST /reload``, ``POST /role {"role": ...}``, ``GET /metrics``.
The kernel's counters are read when a request needs them, through one cache shared by /services
and /metrics (``lvsd.daemon.kernel_stats``). The socket is created with the configured mode (0660 by default) inside
systemd's RuntimeDirectory; a stale socket left by a crash is replaced, a live one (another lvsd
answering on it) is an error. Both listeners are served within the limits of
``lvsd.daemon.listeners`` (connection cap, header and idle timeouts, a descriptor reserve for the
checks); a malformed request is answered 4xx and logged in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping

from lvsd.core.desired import server_health
from lvsd.daemon import metrics
from lvsd.daemon.kernel_stats import Dests, KernelStats
from lvsd.daemon.limits import (
    BODY_TIMEOUT,
    CONTROL_MAX_CONNECTIONS,
    IDLE_TIMEOUT,
    LINGER_TIME,
    MAX_BODY,
    METRICS_CACHE_SECONDS,
    METRICS_MAX_CONNECTIONS,
)
from lvsd.daemon.listeners import Listener
from lvsd.ipvs.model import ValueInvalid, normalize_addr

if TYPE_CHECKING:
    from lvsd.config.model import Config, ServiceConfig
    from lvsd.daemon.daemon import Daemon

log = logging.getLogger("lvsd")

ROLES = ("master", "backup", "fault")
#: the query parameters of GET /services, and the server states ``state`` takes
SERVICES_PARAMS = ("service", "vip", "state", "limit", "offset")
STATES = ("up", "down", "unknown")


class APIError(Exception):
    """The API cannot start (socket in use, bad path)."""


class _OneLine(logging.Filter):
    """aiohttp's log of a request it could not handle (a malformed request line, header or
    body): one warning line naming what was wrong, not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            what = " ".join(str(exc).split())[:300] or type(exc).__name__
            record.msg, record.args = "control API: bad request: %s", (what,)
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: the logger aiohttp reports request errors to (a child of lvsd's: same handler, one line)
_server_log = logging.getLogger("lvsd.api")
_server_log.addFilter(_OneLine())


class ControlAPI:
    """Serves the daemon's state and accepts reload/role requests."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._path: str | None = None
        self._sock: socket.socket | None = None
        self._metrics_sock: socket.socket | None = None
        self._metrics_cache: tuple[float, bytes] | None = None  # (monotonic time, rendered page)
        self._metrics_lock = asyncio.Lock()
        #: the kernel's counters for /services and /metrics: one read per period, shared
        self.kernel = KernelStats(
            lambda: daemon.backend.dump(),
            lambda key: daemon.backend.dests(key),
            writes=lambda: sum(daemon.stats.ops.values()),  # ops lvsd applied: a write makes a read stale
        )
        self._index: _Index | None = None
        self.control = Listener("control socket", CONTROL_MAX_CONNECTIONS)
        self.metrics_listener = Listener("metrics listener", METRICS_MAX_CONNECTIONS)

    def claim(self, cfg: Config) -> None:
        """Bind the API socket and the [metrics] port now, before the daemon touches the kernel: a
        second lvsd started by mistake (or a port in use) then stops here, instead of first
        rewriting the running one's table and taking a role."""
        if cfg.api.socket and self._sock is None:
            self._sock = _bind_unix(cfg.api.socket, cfg.api.mode)
            self._path = cfg.api.socket
        listen = _metrics_listen(cfg)
        if listen is not None and self._metrics_sock is None:
            host, port = listen
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts skip TIME_WAIT
                sock.bind((host, port))
                sock.listen(128)
            except OSError as e:
                sock.close()
                raise APIError(f"[metrics] listen {host}:{port}: {e.strerror or e}") from None
            sock.setblocking(False)
            self._metrics_sock = sock

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self.control.middleware()], client_max_size=MAX_BODY)
        app.router.add_get("/status", self.status)
        app.router.add_get("/services", self.services)
        app.router.add_post("/reload", self.reload)
        app.router.add_post("/role", self.role)
        app.router.add_post("/drain-director", self.drain_director)
        app.router.add_post("/undrain-director", self.undrain_director)
        app.router.add_post("/override", self.override)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self, cfg: Config) -> None:
        """Listen on the API socket (and on [metrics] listen, if set)."""
        self._runner = _runner(self._app())
        await self._runner.setup()
        path = cfg.api.socket
        self.claim(cfg)
        if path:
            sock, self._sock = self._sock, None
            assert sock is not None
            await self.control.start(sock, self._runner)
            log.info("control API on %s", path)
        listen = _metrics_listen(cfg)
        if listen is not None:
            # TCP serves /metrics only: reload and role stay on the unix socket's permissions
            app = web.Application(middlewares=[self.metrics_listener.middleware()], client_max_size=MAX_BODY)
            app.router.add_get("/metrics", self.metrics)
            self._metrics_runner = _runner(app)
            await self._metrics_runner.setup()
            host, port = listen
            msock, self._metrics_sock = self._metrics_sock, None
            assert msock is not None
            await self.metrics_listener.start(msock, self._metrics_runner)
            log.info("metrics on http://%s:%d/metrics", host, port)

    async def stop(self) -> None:
        await self.control.close()
        await self.metrics_listener.close()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None
        for s in (self._sock, self._metrics_sock):  # claimed, never served (start-up failed)
            if s is not None:
                s.close()
        self._sock = self._metrics_sock = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None

    # --- handlers ---

    async def status(self, request: web.Request) -> web.Response:
        d = self.d
        st = d.stats
        body: dict[str, Any] = {
            "state": d.state,
            "pid": os.getpid(),
            "config": d.config_path,
            "backend": d.backend.name,
            "uptime": round(time.time() - st.started, 3),
            "status": d.status_line(),
            "role": d.role,
            "services": len(d.config.services),
            "servers": sum(len(s.servers) for s in d.config.services),
            "managed": len(d.managed),
            "health": _count_health(d),
            "reconcile": {
                "ok": st.last_reconcile_ok,
                "last": st.last_reconcile,
                "duration": round(st.last_reconcile_duration, 6),
                "count": dict(st.reconciles),
                "ops": dict(st.ops),
                "errors": dict(st.op_errors),
                "repairs": st.repairs,
                "refused": d.reconciler.refused_report(),
                "refusals": _refusals_by_service(st.refusals),
            },
            "overrides": {"count": len(d.overrides.active), "error": d.overrides.error},
            "reload": {
                "ok": st.last_reload_ok,
                "last": st.last_reload,
                "error": st.last_reload_error,
                "count": dict(st.reloads),
            },
        }
        if d.ha is not None:
            try:
                an = getattr(d.ha, "announcer", None)
                if an is not None:  # bgp mode: BIRD's sessions, read through birdc off the loop
                    await an.refresh_sessions()
                body["ha"] = d.ha.status()
            except Exception as e:  # status must answer even if HA is unwell
                body["ha"] = {"error": str(e)}
        return web.json_response(body)

    async def services(self, request: web.Request) -> web.Response:
        """The configured services the query selects (every one without a query), one page of
        them: rows are built, and the kernel read, for that page only, so one service of 50,000
        servers costs its own rows (docs/operations.md lists the parameters)."""
        d = self.d
        cfg = d.config
        index = self._index
        if index is None or index.config is not cfg:  # once per config: names and VIPs to positions
            index = self._index = _Index(cfg)
        try:
            chosen, states, offset, limit = _select(request.query, index)
        except _BadQuery as e:
            return web.json_response({"ok": False, "message": str(e)}, status=e.status)
        if states:  # services with a server in those states (decided without building rows)
            health = d.health
            chosen = [s for s in chosen if any(server_health(s, srv, health).state.value in states for srv in s.servers)]
        total = len(chosen)
        page = chosen[offset:] if limit is None else chosen[offset : offset + limit]
        rows = d.server_states(page)
        if states:  # and of those, the servers in those states only
            for row in rows:
                row["servers"] = [srv for srv in row["servers"] if srv["health"] in states]
        answer: dict[str, Any] = {"services": rows, "total": total, "offset": offset, "limit": limit}
        try:
            kernel = await self.kernel.services([s.key for s in page], len(cfg.services))
        except Exception as e:  # the rows still answer, without the kernel's side
            answer["kernel_error"] = str(e)
            return web.json_response(answer)
        for row, svc in zip(rows, page, strict=True):
            dests = kernel.get(svc.key)
            row["in_kernel"] = dests is not None
            kdests = {str(k): v for k, v in dests.items()} if dests else {}
            for srv in row["servers"]:
                kd = kdests.get(srv["server"])
                srv["kernel_weight"] = kd.weight if kd else None
                srv["active_conns"] = kd.active_conns if kd else 0
                srv["inact_conns"] = kd.inact_conns if kd else 0
            for srv_cfg in svc.servers:  # every configured one, also those a state filter left out
                kdests.pop(str(srv_cfg.key), None)
            sorry = str(svc.sorry_server.key) if svc.sorry_server is not None else None
            row["other_kernel_servers"] = [
                {"server": k, "kernel_weight": v.weight, "sorry": k == sorry} for k, v in kdests.items()
            ]
        _add_overrides(d, rows, page, kernel)
        return web.json_response(answer)

    async def override(self, request: web.Request) -> web.Response:
        """``lvsctl disable|enable|drain|weight``: set or clear servers' overrides (who: the peer's uid)."""
        from lvsd.daemon.overrides import RequestError, handle, peer_of

        body = await _read_json(request, "body must be JSON")
        if isinstance(body, web.Response):
            return body
        by = peer_of(request.transport.get_extra_info("socket") if request.transport is not None else None)
        try:
            answer, changed = handle(self.d.overrides, self.d.config, body, by)
        except RequestError as e:
            return web.json_response({"ok": False, "message": str(e)}, status=e.status)
        self.d.request_services(changed)
        return web.json_response(answer)

    async def reload(self, request: web.Request) -> web.Response:
        fut = self.d.request_reload()
        try:
            ok, msg = await asyncio.wait_for(asyncio.shield(fut), 120)
        except asyncio.TimeoutError:
            return web.json_response({"ok": False, "message": "reload still running"}, status=504)
        return web.json_response({"ok": ok, "message": msg}, status=200 if ok else 422)

    async def role(self, request: web.Request) -> web.Response:
        shape = 'body must be {"role": "master|backup|fault"}'
        data = await _read_json(request, shape)
        if isinstance(data, web.Response):
            return data
        if not isinstance(data, dict) or "role" not in data:
            return web.json_response({"ok": False, "message": shape}, status=400)
        role = data["role"]
        if role not in ROLES:
            return web.json_response({"ok": False, "message": f"role must be one of {', '.join(ROLES)}, got {role!r}"}, status=400)
        ha = self.d.ha
        if ha is None:
            return web.json_response({"ok": False, "message": "HA is not running"}, status=409)
        try:
            ha.set_role(role)
        except Exception as e:  # HAError: wrong mode; one line back to lvsctl
            if type(e).__name__ != "HAError" and not isinstance(e, ValueError):
                raise
            return web.json_response({"ok": False, "message": str(e)}, status=409)
        return web.json_response({"ok": True, "role": role})

    async def drain_director(self, request: web.Request) -> web.Response:
        """bgp mode: withdraw every VIP (kept across reload and restart)."""
        return await self._drain(True)

    async def undrain_director(self, request: web.Request) -> web.Response:
        """bgp mode: announce the healthy VIPs again."""
        return await self._drain(False)

    async def _drain(self, drained: bool) -> web.Response:
        ha = self.d.ha
        if ha is None:
            return web.json_response({"ok": False, "message": "HA is not running"}, status=409)
        try:
            await ha.set_drained(drained)
        except Exception as e:  # HAError: not bgp mode; one line back to lvsctl
            if type(e).__name__ != "HAError":
                raise
            return web.json_response({"ok": False, "message": str(e)}, status=409)
        return web.json_response({"ok": True, "drained": drained})

    async def metrics(self, request: web.Request) -> web.Response:
        """The exposition, rendered at most once per METRICS_CACHE_SECONDS: scrapers in a loop
        cost one render a second, not one per request; and that render is done in chunks of a
        few milliseconds, the loop free in between (rendering 10,000 servers takes hundreds of
        ms: in one piece it would hold the checks for as long)."""
        cached = self._metrics_cache
        if cached is None or time.monotonic() - cached[0] >= METRICS_CACHE_SECONDS:
            async with self._metrics_lock:  # concurrent scrapes of a stale page: one render
                cached = self._metrics_cache
                if cached is None or time.monotonic() - cached[0] >= METRICS_CACHE_SECONDS:
                    body = await metrics.render_page(self.d, self.kernel)
                    cached = self._metrics_cache = (time.monotonic(), body)
        return web.Response(body=cached[1], headers={"Content-Type": metrics.CONTENT_TYPE})


def _refusals_by_service(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Refused ops counted since start, by service then op kind."""
    out: dict[str, dict[str, int]] = {}
    for (service, kind), n in sorted(counts.items()):
        out.setdefault(service, {})[kind] = n
    return out


async def _read_json(request: web.Request, bad: str) -> Any:
    """A control request's JSON body, or the answer that refuses it: 413/408 (connection closed)
    when too large or too slow, 400 with ``bad`` when not JSON. One bound for every endpoint
    that takes a body, so no slow client can hold one open."""
    if (request.content_length or 0) > MAX_BODY:
        return _closing(web.json_response({"ok": False, "message": "request body too large"}, status=413))
    try:
        raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        return _closing(web.json_response({"ok": False, "message": "request body too slow"}, status=408))
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        return web.json_response({"ok": False, "message": bad}, status=400)


def _closing(resp: web.Response) -> web.Response:
    """``resp``, closing the connection after it (its request's body was not read whole)."""
    resp.force_close()
    return resp


def _runner(app: web.Application) -> web.AppRunner:
    """An AppRunner with lvsd's limits: keep-alive closed after IDLE_TIMEOUT, an unread body
    discarded for at most LINGER_TIME, errors in one line."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=LINGER_TIME,
        logger=_server_log,
    )


def _add_overrides(
    d: Daemon, out: list[dict[str, Any]], services: Sequence[ServiceConfig], kernel: Mapping[Any, Dests | None]
) -> None:
    """Each server's override (kind, label, who, why, when) into /services' rows (of ``services``,
    in the same order); a server a reload removed that still drains is marked in
    ``other_kernel_servers``."""
    store = d.overrides
    if not store.active:
        return
    for svc, cfg in zip(out, services, strict=True):
        by_str = {str(srv.key): srv.id for srv in cfg.servers}
        for srv in svc["servers"]:
            sid = by_str.get(srv["server"])
            if sid is not None and sid in store.active:
                srv["override"] = store.report(sid, srv.get("active_conns", 0) + srv.get("inact_conns", 0))
        dests = kernel.get(cfg.key)
        for other in svc.get("other_kernel_servers", []):
            for (name, key), ov in store.active.items():
                if name == cfg.name and ov.dest is not None and str(key) == other["server"]:
                    kd = dests.get(key) if dests is not None else None
                    conns = kd.active_conns + kd.inact_conns if kd is not None else 0
                    other["override"] = store.report((name, key), conns)


class _BadQuery(Exception):
    """A /services query the API refuses: ``status`` (400, or 404 for an unknown service) and
    the one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Index:
    """The positions of a config's services by name and by VIP address (built once per config),
    so a query for one service or one VIP looks it up instead of walking 50,000 servers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.by_name = {s.name: i for i, s in enumerate(config.services)}
        self.by_addr: dict[str, list[int]] = {}
        for i, s in enumerate(config.services):
            if not s.key.is_fwmark:
                self.by_addr.setdefault(s.key.addr, []).append(i)


def _select(query: MultiMapping[str], index: _Index) -> tuple[list[ServiceConfig], set[str], int, int | None]:
    """The services a /services query selects, in config order, and its states, offset and
    limit; raises _BadQuery. ``service`` (repeatable): a name, or a glob (``*``, ``?``,
    ``[...]``: characters no name has); ``vip`` (repeatable): an address, or address:port;
    ``state`` (repeatable): up, down, unknown; the parameters of different names must all hold."""
    getall = query.getall
    unknown = [k for k in query if k not in SERVICES_PARAMS]
    if unknown:
        raise _BadQuery(400, f"unknown parameter {_show(unknown[0])}: /services takes {', '.join(SERVICES_PARAMS)}")
    services = index.config.services
    chosen: set[int] | None = None
    names: list[str] = getall("service", [])
    if names:
        chosen, missing = set(), []
        for name in names:
            if any(c in name for c in "*?["):
                chosen.update(i for i, s in enumerate(services) if fnmatchcase(s.name, name))
            elif (i := index.by_name.get(name)) is not None:
                chosen.add(i)
            else:
                missing.append(name)
        if missing:
            raise _BadQuery(404, "no service named " + ", ".join(_show(m) for m in missing))
    vips: list[str] = getall("vip", [])
    if vips:
        by_vip: set[int] = set()
        for v in vips:
            addr, port = _vip(v)
            by_vip.update(i for i in index.by_addr.get(addr, ()) if port is None or services[i].key.port == port)
        chosen = by_vip if chosen is None else chosen & by_vip
    states = set(getall("state", []))
    wrong = sorted(states - set(STATES))
    if wrong:
        raise _BadQuery(400, f"state: must be {', '.join(STATES)}, got {_show(wrong[0])}")
    offset = _count(getall, "offset")
    limit = _count(getall, "limit")
    picked = list(services) if chosen is None else [services[i] for i in sorted(chosen)]
    return picked, states, offset or 0, limit


def _count(getall: Any, name: str) -> int | None:
    """The query's ``name`` as a whole number 0 or more, None if absent; _BadQuery if not one."""
    values: list[str] = getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise _BadQuery(400, f"{name}: given {len(values)} times")
    v = values[0]
    if not (v.isascii() and v.isdigit()) or len(v) > 18:
        raise _BadQuery(400, f"{name}: must be a whole number 0 or more, got {_show(v)}")
    return int(v)


def _vip(text: str) -> tuple[str, int | None]:
    """``vip=``'s (canonical address, port or None): ``10.0.0.1``, ``10.0.0.1:80``,
    ``2001:db8::1``, ``[2001:db8::1]:80``."""
    bad = _BadQuery(400, f"vip: must be an address or address:port, got {_show(text)}")
    host, port = text, None
    if text.startswith("[") and "]:" in text or text.count(":") == 1:
        host, _, p = text.rpartition(":")
        if not (p.isascii() and p.isdigit()) or len(p) > 5 or int(p) > 65535:
            raise bad
        port = int(p)
    try:
        return normalize_addr(host)[1], port
    except ValueInvalid:
        raise bad from None


def _show(v: str) -> str:
    """A query value in a message: quoted, at most 100 characters, control characters escaped."""
    return repr(v[:100] + ("..." if len(v) > 100 else ""))


def _count_health(d: Daemon) -> dict[str, int]:
    """Servers by health (as /services shows them), counted without building their rows."""
    out = {"up": 0, "down": 0, "unknown": 0}
    health = d.health
    for svc in d.config.services:
        for srv in svc.servers:
            out[server_health(svc, srv, health).state.value] += 1
    return out


def _metrics_listen(cfg: Config) -> tuple[str, int] | None:
    m = cfg.metrics
    if m.address is not None and m.port is not None:
        return m.address, m.port
    if m.listen:
        host, _, port = m.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)
    return None


def _bind_unix(path: str, mode: int) -> socket.socket:
    """A listening unix socket at ``path``; replaces a stale one, refuses a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise APIError(f"{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody answers
        else:
            raise APIError(f"{path}: another daemon is listening on it")
        finally:
            probe.close()
    parent = os.path.dirname(path)
    if parent:
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except OSError as e:
            raise APIError(f"{parent}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise APIError(f"{path}: {e.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(64)
    sock.setblocking(False)
    return sock
