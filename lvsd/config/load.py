"""TOML -> validated ``Config``, collecting every error in one pass: the entry points.

Each error is one line ``path: what is wrong``. Paths name TOML keys joined by dots; a service is
``service[NAME]`` when it has a name, else ``service[INDEX]``; servers, checks and list items are
``[INDEX]`` counted from 0 as they appear in the file (``service[web].server[2].weight``).
Nothing raises a Python traceback for a user mistake: ``ConfigError`` carries every line.

The work is split by concern: ``reader`` (the error collector), ``keys`` (the key table),
``services`` (services, servers, inheritance), ``checks`` (check tables, by type through
``lvsd.checks.registry``) and ``sections`` (the daemon-wide tables). The names tests and tools
import from here are re-exported.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import re
import stat
import zlib
from collections.abc import Collection
from typing import Any

from .checks import check_keys
from .ha_bgp import apply_bgp_rules
from .include import Origins, expand
from .layers import (
    DEFAULTS_ELSEWHERE,
    DEFAULTS_KEYS,
    PERSISTENCE_KEYS,
    SERVER_INHERITED,
    SERVER_KEYS,
    SERVER_ONLY,
    SERVICE_INHERITED,
    SERVICE_KEYS,
    SERVICE_ONLY,
    SORRY_KEYS,
    THRESHOLD_KEYS,
    TUNNEL_KEYS,
    server_layer,
    service_layer,
)
from .model import Config, DefaultsConfig, ServiceConfig
from .reader import ConfigError, Reader, Resolver, Table, _p, _tname
from .reader import system_resolver as system_resolver
from .sections import (
    API_KEYS,
    DAEMON_KEYS,
    HA_KEYS,
    IPVS_KEYS,
    METRICS_KEYS,
    SYNC_KEYS,
    TIMEOUT_KEYS,
    TOP_KEYS,
    _api,
    _daemon,
    _ha,
    _ipvs,
    _metrics,
    _sync,
)
from .services import _Builder

try:  # tomli's compiled wheels parse ~2.5x faster than the stdlib's pure-Python tomllib
    import tomli as _toml
except ImportError:  # pragma: no cover - depends on the environment
    import tomllib as _toml  # type: ignore[no-redef,import-not-found,unused-ignore]  # 3.11+ stdlib

__all__ = [
    "API_KEYS",
    "ConfigError",
    "DAEMON_KEYS",
    "DEFAULT_PATH",
    "HA_KEYS",
    "IPVS_KEYS",
    "METRICS_KEYS",
    "PERSISTENCE_KEYS",
    "SERVER_INHERITED",
    "SERVER_KEYS",
    "SERVER_ONLY",
    "SERVICE_INHERITED",
    "SERVICE_KEYS",
    "SERVICE_ONLY",
    "SORRY_KEYS",
    "SYNC_KEYS",
    "THRESHOLD_KEYS",
    "TIMEOUT_KEYS",
    "TOP_KEYS",
    "TUNNEL_KEYS",
    "build_config",
    "clear_parse_cache",
    "load_config",
    "parse_config",
    "read_config_file",
    "refuse_empty",
    "system_resolver",
]

DEFAULT_PATH = "/etc/lvsd/lvsd.toml"

#: the largest config file read (bytes): 10,000 servers take about 1 MiB, so this is far above
#: any real config; a larger file (or /dev/zero) is refused before it costs memory
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: tables and arrays nested deeper than this are refused (a real config nests 5 levels at most);
#: deeper, the validator's own recursion would hit Python's limit
MAX_DEPTH = 32

log = logging.getLogger("lvsd")


def __getattr__(name: str) -> Any:
    """``CHECK_KEYS`` (type -> its keys) and ``ALL_CHECK_KEYS`` import every check type: computed
    on first use, so loading a config imports only the types it uses."""
    if name == "CHECK_KEYS":
        return check_keys()
    if name == "ALL_CHECK_KEYS":
        return tuple(sorted({k for v in check_keys().values() for k in v}))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _toml_error(e: Exception, source: str) -> str:
    msg = str(e)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        msg = msg[: m.start()].strip()
        return f"{source}:{m.group(1)}:{m.group(2)}: TOML syntax error: {msg}"
    return f"{source}: TOML syntax error: {msg}"


# --- entry points ---------------------------------------------------------------------------------


def _too_deep(data: Table) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH, or None (walked without recursion).

    Only tables and arrays are visited, and a path is built only for the value reported: at 50,000
    servers building every value's path was a third of the whole validation (docs/performance.md,
    "reload at 50,000 servers"). The order is a depth-first walk from the last item, as before."""
    # entries: (container, depth, parent entry, key in the parent); the chain spells the path
    stack: list[tuple[Any, int, Any, str | int]] = [(data, 0, None, "")]
    while stack:
        entry = stack.pop()
        v, depth = entry[0], entry[1]
        if depth == MAX_DEPTH:
            if v:  # its last item (the first one the walk meets) is one level too deep
                return _trail_path(entry, next(reversed(v)) if isinstance(v, dict) else len(v) - 1)
            continue
        items = v.items() if isinstance(v, dict) else enumerate(v)
        stack.extend((x, depth + 1, entry, k) for k, x in items if isinstance(x, (dict, list)))
    return None


def _trail_path(entry: Any, key: str | int) -> str:
    """The dotted path of ``key`` inside the container ``entry`` of ``_too_deep``'s walk."""
    keys: list[str | int] = [key]
    while entry[2] is not None:
        keys.append(entry[3])
        entry = entry[2]
    path = ""
    for k in reversed(keys):
        path = _p(path, k)
    return path


def _too_many_servers(raw: object, limit: int, source: str) -> str | None:
    """The error line if the parsed ``[[service]]`` tables hold more than ``limit`` servers, else
    None: a count of list lengths, made before any per-server object exists."""
    if not isinstance(raw, list):
        return None
    n = sum(len(s["server"]) for s in raw if isinstance(s, dict) and isinstance(s.get("server"), list))
    if n <= limit:
        return None
    return f"{source}: {n} servers, more than [daemon] max_servers = {limit} (raise it if this is meant)"


def build_config(
    data: Table, source: str = "<string>", resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Validate a parsed TOML document and build the Config; ConfigError lists every problem.

    Nothing else leaves here: a validator bug is logged with its traceback and reported as one
    ``source: ...`` line, so ``--check-config`` and a reload never see a traceback."""
    deep = _too_deep(data)
    if deep is not None:
        raise ConfigError([f"{deep}: nested more than {MAX_DEPTH} levels deep"])
    try:
        return _build(data, source, resolver, check_files)
    except ConfigError:
        raise
    except Exception as e:  # a bug: the file is still refused as a whole, with one line
        log.error("validating %s failed unexpectedly", source, exc_info=True)
        raise ConfigError([f"{source}: internal error while validating ({type(e).__name__}: {e})"]) from None


def _build(data: Table, source: str, resolver: Resolver | None, check_files: bool) -> Config:
    ctx = Reader(resolver, check_files)
    ctx.keys(data, "", TOP_KEYS)

    def section(name: str) -> Table:
        v = data.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict):
            ctx.err(name, f"must be a table [{name}], got {_tname(v)}")
            return {}
        return v

    daemon = _daemon(ctx, section("daemon"))
    too_many = _too_many_servers(data.get("service"), daemon.max_servers, source)
    if too_many is not None:  # refused before building a server: no other error is worth the memory
        raise ConfigError([too_many])
    ipvs = _ipvs(ctx, section("ipvs"))
    dt = section("defaults")
    ctx.keys(dt, "defaults", DEFAULTS_KEYS, DEFAULTS_ELSEWHERE)
    d_svc = service_layer(ctx, dt, "defaults")
    d_srv = server_layer(ctx, dt, "defaults")
    if "tunnel" in d_srv and d_srv.get("forward", "dr") != "tun":
        ctx.err("defaults.tunnel", f'only with forward = "tun" (forward is "{d_srv.get("forward", "dr")}")')
    builder = _Builder(ctx, d_svc, d_srv)
    services: list[ServiceConfig] = []
    raw = data.get("service", [])
    if not isinstance(raw, list):
        ctx.err("service", f"must be an array of tables ([[service]]), got {_tname(raw)}")
        raw = []
    for i, st in enumerate(raw):
        s = builder.service(st, i)
        if s is not None:
            services.append(s)
    ha = _ha(ctx, section("ha"))
    services = list(apply_bgp_rules(data, tuple(services), ha))  # mh-port default, scheduler warnings
    sync = _sync(ctx, section("sync")) if "sync" in data else None
    api = _api(ctx, section("api"))
    metrics = _metrics(ctx, section("metrics"))
    if ctx.errors:
        raise ConfigError(list(dict.fromkeys(ctx.errors)))  # the same line once, in file order
    m = builder.dsrv
    sv = builder.dsvc
    defaults = DefaultsConfig(
        protocol=sv["protocol"],
        scheduler=sv["scheduler"],
        forward=m["forward"],
        weight=m["weight"],
        on_failure=m["on_failure"],
        quorum=sv["quorum"],
        hysteresis=sv["hysteresis"],
        checks=m["check"],
    )
    return Config(daemon, ipvs, defaults, tuple(services), ha, sync, api, metrics, source)


def parse_config(
    text: str, source: str = "<string>", resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Parse and validate TOML text (see ``_parse_config``) with the cyclic garbage collector paused.

    Parsing and validating allocate millions of objects and free none in cycles, yet each
    allocation burst triggers collections that walk every live object (the daemon's included):
    at 50,000 servers that made the load 1.15 s instead of 0.83 s, growing faster than the
    config (docs/performance.md, "reload at 50,000 servers"). Nothing is left collectable here."""
    was = gc.isenabled()
    gc.disable()
    try:
        return _parse_config(text, source, resolver, check_files)
    finally:
        if was:
            gc.enable()


def _parse_config(text: str, source: str, resolver: Resolver | None, check_files: bool) -> Config:
    """Parse and validate TOML text. ``resolver`` resolves server hostnames (default getaddrinfo);
    ``check_files`` verifies that scripts, certificates, users and groups exist.

    The TOML parse of the last text is remembered: a reload of an unchanged file only re-validates
    (hostnames, files and users are looked up again), which is most of a no-op reload's cost saved.
    It is remembered compactly (a digest of the text, the document pickled and compressed): at
    50,000 servers the text and the parsed tree held 28 MB for as long as the daemon ran, this
    holds 0.2 MB and loads in 35 ms against tomli's 300 ms (docs/performance.md, "memory per server")."""
    global _last_parse
    last = _last_parse
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass")).digest()
    if last is not None and last[0] == digest:
        data = pickle.loads(zlib.decompress(last[1]))
    else:
        try:
            data = _toml.loads(text)
        except _toml.TOMLDecodeError as e:
            raise ConfigError([_toml_error(e, source)]) from None
        except RecursionError as e:  # tomli's nesting limits (its own message), or the stdlib's stack
            raise ConfigError([f"{source}: TOML syntax error: {str(e) or 'nested too deeply'}"]) from None
        except ValueError as e:  # an integer of more than 4300 digits
            raise ConfigError([f"{source}: TOML syntax error: {str(e).split(':')[0]}"]) from None
        try:
            _last_parse = (digest, zlib.compress(pickle.dumps(data, pickle.HIGHEST_PROTOCOL), 1))
        except RecursionError:  # a document nested too deep to pickle: validation refuses it anyway
            _last_parse = None
    if "include" not in data:
        return build_config(data, source, resolver, check_files)
    merged, origins = _include(data, source, len(text.encode()))
    try:
        return build_config(merged, source, resolver, check_files)
    except ConfigError as e:  # an included service's error names its file
        raise ConfigError([origins.rewrite(line) for line in e.errors]) from None


def _include(data: Table, source: str, used: int) -> tuple[Table, Origins]:
    """``data`` with its ``include`` files' services (``lvsd.config.include``), within the one-file budget."""

    def read(path: str, limit: int) -> bytes:
        try:
            return read_config_file(path, max(limit, 0))
        except ConfigError as e:
            if any("larger than" in x for x in e.errors):
                mib = MAX_CONFIG_BYTES // (1024 * 1024)
                raise ConfigError([f"{path}: the main file and its includes together are larger than {mib} MiB"]) from None
            raise

    def parse(text: str, path: str) -> Table:
        try:
            return _toml.loads(text)
        except _toml.TOMLDecodeError as e:
            raise ConfigError([_toml_error(e, path)]) from None
        except (RecursionError, ValueError) as e:
            raise ConfigError([f"{path}: TOML syntax error: {str(e).split(':')[0] or 'nested too deeply'}"]) from None

    return expand(data, source, read, parse, MAX_CONFIG_BYTES - used)


#: (digest of the text, pickled and compressed parsed document) of the last parse_config
_last_parse: tuple[bytes, bytes] | None = None


def clear_parse_cache() -> None:
    """Forget the remembered parse (benchmarks of a cold parse call this before each run)."""
    global _last_parse
    _last_parse = None


def refuse_empty(config: Config, managed: Collection[object]) -> str | None:
    """Why ``config`` must not replace a running one that manages ``managed`` services, or None.

    A config of no service while services are managed is what an emptied or truncated file looks
    like (a full disk, an editor crash): applying it would delete every managed service. It is
    refused unless it says ``[daemon] allow_empty = true``. A config that names any service was
    written on purpose and is applied as it is."""
    if config.services or config.daemon.allow_empty or not managed:
        return None
    n = len(managed)
    return (
        f"{config.source}: no [[service]]: applying it would remove every managed service ({n}); "
        "set [daemon] allow_empty = true if that is meant"
    )


def read_config_file(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them. Never blocks: a FIFO,
    a device (/dev/zero) or a directory is refused at once, and so is a file above the limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise ConfigError([f"{path}: not a regular file ({kind})"])
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow after fstat: read at most limit + 1 bytes
            b = os.read(fd, min(1 << 20, limit + 1 - size))
            if not b:
                break
            chunks.append(b)
            size += len(b)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError([f"{path}: larger than {limit // (1024 * 1024)} MiB: not a config file"])
    return b"".join(chunks)


def load_config(
    path: str = DEFAULT_PATH, resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Read, parse and validate the file at ``path``."""
    raw = read_config_file(path)
    try:
        text = raw.decode("utf-8-sig")  # a BOM left by some editors is not a syntax error
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 (byte {e.start})"]) from None
    return parse_config(text, path, resolver, check_files)
