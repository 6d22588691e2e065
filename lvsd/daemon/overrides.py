"""The operator's overrides as the daemon keeps them: the state file, the drain watch, reloads.

The rules are pure (``lvsd.core.overrides``); here is what has I/O or a clock:

* the state file: ``overrides.json`` in ``daemon.state_file``'s directory (no state file: the
  overrides live in memory only, and a warning says so once). JSON ``{"version": 1, "overrides":
  [...]}``, written atomically (a new file, fsync, renamed over the old) after every change; a
  corrupt, unreadable or newer-version file is reported and ignored (lvsd starts without
  overrides), never fatal;
* the drain watch: while any drain runs, the connection counts of its services are read every
  ``DRAIN_POLL`` seconds; a finished drain takes its server out (``drained``), a drain of a server
  a reload removed is forgotten (the server leaves the table);
* reloads (``reloaded``): an override of a server the new config no longer has is dropped and
  logged, unless its service sets ``drain_on_remove``: then the removed server drains.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any

from lvsd.config.model import Config, ServiceConfig
from lvsd.core.overrides import KINDS, Override, ServerId, drain_finished
from lvsd.ipvs.backend import Backend, IPVSError
from lvsd.ipvs.model import Destination, DestKey

log = logging.getLogger("lvsd")

VERSION = 1
FILE_NAME = "overrides.json"
#: seconds between reads of a draining server's connection counts
DRAIN_POLL = 1.0
#: the largest overrides file read (a real one holds a few KiB)
MAX_BYTES = 16 * 1024 * 1024


def overrides_path(config: Config) -> str:
    """Where the overrides are kept: next to ``daemon.state_file`` ("" = nowhere)."""
    sf = config.daemon.state_file
    return os.path.join(os.path.dirname(sf) or ".", FILE_NAME) if sf else ""


def _dest_to_json(d: Destination) -> dict[str, Any]:
    return {
        "af": d.key.af, "addr": d.key.addr, "port": d.key.port, "forward": int(d.forward), "weight": d.weight,
        "u_threshold": d.u_threshold, "l_threshold": d.l_threshold,
        "tun_type": int(d.tun_type), "tun_port": d.tun_port, "tun_flags": d.tun_flags,
    }


def _dest_from_json(v: dict[str, Any]) -> Destination:
    key = DestKey(int(v["af"]), str(v["addr"]), int(v["port"]))
    return Destination(
        key, int(v["forward"]), int(v["weight"]), int(v["u_threshold"]), int(v["l_threshold"]),
        int(v["tun_type"]), int(v["tun_port"]), int(v["tun_flags"]),
    )


def encode(overrides: dict[ServerId, Override]) -> dict[str, Any]:
    """The state file's document."""
    rows = []
    for (name, key), ov in sorted(overrides.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        row = asdict(ov)
        row["dest"] = _dest_to_json(ov.dest) if ov.dest is not None else None
        row.update(service=name, af=key.af, addr=key.addr, port=key.port)
        rows.append(row)
    return {"version": VERSION, "overrides": rows}


def decode(doc: Any) -> dict[ServerId, Override]:
    """The overrides of a state file's document (raises ValueError/KeyError/TypeError if malformed)."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        got = doc.get("version") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"version {got!r}, this lvsd reads version {VERSION}")
    out: dict[ServerId, Override] = {}
    for row in doc["overrides"]:
        kind = row["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown override kind {kind!r}")
        w = row.get("weight")
        if w is not None and (type(w) is not int or not 0 <= w <= 0x7FFFFFFF):
            raise ValueError(f"weight {w!r} out of range")
        dest = _dest_from_json(row["dest"]) if row.get("dest") else None
        key = DestKey(int(row["af"]), str(row["addr"]), int(row["port"]))
        out[(str(row["service"]), key)] = Override(
            kind, w, str(row.get("reason", "")), str(row.get("by", "")), float(row.get("at", 0.0)),
            float(row.get("until", 0.0)), bool(row.get("drained", False)), dest,
        )
    return out


class OverrideStore:
    """The overrides in force (``active``: the reconciler plans with this very dict) and their file."""

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = path
        #: never write the file (``lvsd --plan`` applies nothing, not even a file)
        self.read_only = read_only
        self.active: dict[ServerId, Override] = {}
        #: why the file could not be read or written ("" = fine), for /status
        self.error = ""
        self._warned_memory = False

    # ------------------------------------------------------------------ the file

    def load(self) -> None:
        """Read the file (a missing one is no override); a bad one is logged and ignored."""
        self.active.clear()
        if not self.path:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read(MAX_BYTES + 1)
            if len(text) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
            self.active.update(decode(json.loads(text)))
            self.error = ""
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            why = getattr(e, "strerror", None) or " ".join(str(e).split())[:200] or type(e).__name__
            self.error = f"{self.path}: unreadable, ignored ({why})"
            self.active.clear()
            log.error("overrides %s: lvsd runs without the overrides it held", self.error)
            return
        if self.active:
            log.info("overrides: %d restored from %s", len(self.active), self.path)

    def save(self) -> None:
        """Write the file atomically; a failure is logged, never fatal."""
        if self.read_only:
            return
        if not self.path:
            if not self._warned_memory and self.active:
                log.warning("overrides: no daemon.state_file, so they are kept in memory only (lost at restart)")
                self._warned_memory = True
            return
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o750, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(encode(self.active), f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.error = ""
        except OSError as e:
            self.error = f"{self.path}: cannot write ({e.strerror or e})"
            log.error("overrides %s", self.error)

    # ------------------------------------------------------------------ changes

    def put(self, sid: ServerId, ov: Override) -> None:
        """Set one server's override (replacing any) and save."""
        self.active[sid] = ov
        self.save()

    def clear(self, sids: Iterable[ServerId], kinds: tuple[str, ...] = KINDS) -> list[ServerId]:
        """Remove the overrides of ``sids`` whose kind is in ``kinds``; save; the ones removed."""
        gone = [sid for sid in sids if (ov := self.active.get(sid)) is not None and ov.kind in kinds]
        for sid in gone:
            del self.active[sid]
        if gone:
            self.save()
        return gone

    def reloaded(
        self, old: Config, new: Config, now: float | None = None, why: str = "the reload removed the server"
    ) -> set[str]:
        """After a reload: drop the overrides of servers ``new`` no longer has (logged with ``why``),
        and drain the servers it removed from services that set ``drain_on_remove``. At start
        (``old`` is ``new``) this drops what a config edited while lvsd was stopped removed. The
        services touched."""
        if not self.active and not any(s.drain_on_remove > 0 for s in new.services):
            return set()  # nothing to drop or drain: skip the server-id set (98 ms of a reload at 50,000)
        now = time.time() if now is None else now
        servers = {srv.id for s in new.services for srv in s.servers}
        new_svc = {s.name: s for s in new.services}
        touched: set[str] = set()
        for sid, ov in list(self.active.items()):
            if ov.dest is not None and sid in servers:  # a removed server is configured again
                del self.active[sid]
                touched.add(sid[0])
                continue
            if sid in servers or (ov.dest is not None and sid[0] in new_svc):
                continue
            del self.active[sid]
            touched.add(sid[0])
            log.info("override %s of %s %s dropped: %s", ov.kind, sid[0], sid[1], why)
        for svc in old.services:
            nsvc = new_svc.get(svc.name)
            if nsvc is None or nsvc.drain_on_remove <= 0:
                continue
            for srv in svc.servers:
                if srv.id in servers:
                    continue
                self.active[srv.id] = Override(
                    "drain", reason="removed by reload (drain_on_remove)", by="config", at=now,
                    until=now + nsvc.drain_on_remove, dest=srv.dest,
                )
                touched.add(svc.name)
                log.info("%s %s: removed by the reload, draining (up to %gs)", svc.name, srv.key, nsvc.drain_on_remove)
        if touched:
            self.save()
        return touched

    def draining(self) -> bool:
        """Whether any drain is still running."""
        return any(ov.kind == "drain" and not ov.drained for ov in self.active.values())

    def check_drains(self, config: Config, backend: Backend, now: float | None = None) -> dict[str, str]:
        """Read the draining servers' connections; finish the drains that are over. Returns the
        services whose table changes (name -> why)."""
        now = time.time() if now is None else now
        by_name: dict[str, ServiceConfig] = {s.name: s for s in config.services}
        per_service: dict[str, list[ServerId]] = {}
        for sid, ov in self.active.items():
            if ov.kind == "drain" and not ov.drained:
                per_service.setdefault(sid[0], []).append(sid)
        changed: dict[str, str] = {}
        for name, sids in per_service.items():
            svc = by_name.get(name)
            if svc is None:
                continue
            try:
                dests = {d.key: d for d in backend.dests(svc.key)}
            except IPVSError as e:
                log.debug("drain watch: %s: %s", name, e)
                dests = {}
            for sid in sids:
                ov = self.active[sid]
                d = dests.get(sid[1])
                if not drain_finished(ov, d, now):
                    continue
                why = "timeout" if d is not None and d.active_conns + d.inact_conns else "no connections left"
                if ov.dest is not None:
                    del self.active[sid]  # a removed server: it leaves the table with its drain
                else:
                    self.active[sid] = replace(ov, drained=True)
                log.info("%s %s: drain finished (%s), out of the table", name, sid[1], why)
                changed[name] = f"{name} {sid[1]} drained ({why})"
        if changed:
            self.save()
        return changed

    async def watch(self, config: Callable[[], Config], backend: Backend, changed: Callable[[dict[str, str]], None]) -> None:
        """Forever: while drains run, check them every DRAIN_POLL seconds and report the changes."""
        while True:
            await asyncio.sleep(DRAIN_POLL)
            if not self.draining():
                continue
            try:
                done = self.check_drains(config(), backend)
            except Exception as e:  # a bug must not end the watch
                log.error("drain watch failed: %s", e)
                continue
            if done:
                changed(done)

    def report(self, sid: ServerId, conns: int | None = None) -> dict[str, Any] | None:
        """One server's override for the API: kind, label, weight, reason, by, at, until."""
        ov = self.active.get(sid)
        if ov is None:
            return None
        return {
            "kind": ov.kind,
            "label": ov.label(conns),
            "weight": ov.weight,
            "reason": ov.reason,
            "by": ov.by,
            "at": round(ov.at, 3),
            "until": round(ov.until, 3) if ov.until else None,
            "drained": ov.drained,
        }


# ---------------------------------------------------------------------- the API's side

ACTIONS = ("disable", "enable", "drain", "weight")


class RequestError(Exception):
    """A control request that cannot be done: (HTTP status, one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def peer_of(sock: Any) -> str:
    """Who is on the other end of a unix socket: ``uid N (name)`` from SO_PEERCRED, else "unknown"."""
    try:
        if sock is None or sock.family != socket.AF_UNIX:
            return "unknown"
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", raw)
    except (OSError, AttributeError, struct.error):
        return "unknown"
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _targets(config: Config, service: Any, server: Any) -> list[ServerId]:
    """The servers a request names: every server of ``service``, or the one ``server`` names
    (``addr:port``, an address or the hostname the config wrote)."""
    if not isinstance(service, str) or not service:
        raise RequestError(400, '"service" must be a service name')
    svc = config.service(service)
    if svc is None:
        raise RequestError(404, f"no service named {service!r}")
    if server is None or server == "":
        return [srv.id for srv in svc.servers]
    if not isinstance(server, str):
        raise RequestError(400, '"server" must be a string "address:port" or "address"')
    hits = [srv.id for srv in svc.servers if server in (str(srv.key), srv.key.addr, srv.address)]
    if not hits:
        raise RequestError(404, f"service {service!r} has no server {server!r}")
    if len(hits) > 1:
        raise RequestError(400, f"{server!r} names {len(hits)} servers of {service!r}: give address:port")
    return hits


def handle(store: OverrideStore, config: Config, body: Any, by: str, now: float | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Do one control request ``{"action", "service", "server", "reason", "timeout", "weight",
    "clear"}``. Returns (the answer, the services whose table changes: name -> why); raises
    RequestError."""
    now = time.time() if now is None else now
    if not isinstance(body, dict):
        raise RequestError(400, "body must be a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise RequestError(400, f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    reason = body.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 500:
        raise RequestError(400, '"reason" must be a string of at most 500 characters')
    reason = " ".join(reason.split())
    server = body.get("server")
    clear = bool(body.get("clear"))
    if action == "weight" and not server:
        raise RequestError(400, "weight needs a server")
    sids = _targets(config, body.get("service"), server)
    what = f"{action}" + (f" ({reason})" if reason else "") + f" by {by}"
    if action == "enable" or (action == "weight" and clear):
        gone = store.clear(sids, KINDS if action == "enable" else ("weight",))
        return _answer(action, gone), {sid[0]: f"{sid[0]}: {what}" for sid in gone}
    if action == "weight":
        w = body.get("weight")
        if type(w) is not int or not 0 <= w <= 0x7FFFFFFF:
            raise RequestError(400, f"weight must be an integer 0..2147483647, got {w!r}")
        ov = Override("weight", weight=w, reason=reason, by=by, at=now)
    elif action == "drain":
        t = body.get("timeout") or 0
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 7 * 86400:
            raise RequestError(400, f"timeout must be 0..604800 seconds, got {t!r}")
        ov = Override("drain", reason=reason, by=by, at=now, until=now + t if t else 0.0)
    else:
        ov = Override("disable", reason=reason, by=by, at=now)
    changed = []
    for sid in sids:
        cur = store.active.get(sid)
        if action == "drain" and cur is not None and cur.kind == "drain":
            continue  # draining already (or drained): a second drain does not restart it
        store.active[sid] = ov
        changed.append(sid)
        log.info("%s %s: %s", sid[0], sid[1], what)
    if changed:
        store.save()
    return _answer(action, changed), {sid[0]: f"{sid[0]}: {what}" for sid in changed}


def _answer(action: str, sids: list[ServerId]) -> dict[str, Any]:
    return {"ok": True, "action": action, "servers": [f"{n} {k}" for n, k in sids]}
