"""``lvsd``: run the daemon, check a config (``--check-config``), or show a plan (``--plan``).

Exit status: 0 success; ``EX_CONFIG`` (78) the config cannot be used (invalid, missing or
unreadable), at start, ``--check-config`` and ``--plan``, so systemd need not restart into the same
error; 1 any other user mistake (no IPVS, no permission, control socket in use); 2 a bad command
line; 130 an interrupt during start-up. Every problem is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lvsd.ipvs.backend import Backend, BackendUnavailable, IPVSError

DEFAULT_CONFIG = "/etc/lvsd/lvsd.toml"
#: Exit status for a config that cannot be used (sysexits.h EX_CONFIG): restarting cannot help,
#: so the systemd unit's RestartPreventExitStatus names it.
EX_CONFIG = 78


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvsd",
        description="Keep the kernel's IPVS table equal to a TOML config and its health checks. "
        "`lvsd import keepalived|ldirectord FILE` translates a keepalived.conf or an ldirectord.cf "
        "(see `lvsd import --help`).",
    )
    p.add_argument("-f", "--config", metavar="FILE", default=None, help=f"config file (default {DEFAULT_CONFIG})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config", "-t", metavar="FILE", nargs="?", const="", default=None,
        help=f"validate the config (FILE or -f's) and exit 0 if it is valid, {EX_CONFIG} with every error if not",
    )
    mode.add_argument(
        "--plan", metavar="FILE", nargs="?", const="", default=None,
        help="print the operations that would bring the kernel table to the config, apply nothing",
    )
    p.add_argument("--backend", choices=("netlink", "memory"), default="netlink", help="IPVS backend (default netlink)")
    p.add_argument("--state", metavar="FILE", help="state file of the memory backend")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override [daemon] log_level")
    p.add_argument("--version", action="version", version=f"lvsd {_version()}")
    return p


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lvsd")
    except Exception:
        return "0.1.0"


def _err(msg: str) -> None:
    print(f"lvsd: {msg}", file=sys.stderr)


def _load(path: str) -> Any:
    """The config, or None after printing every error (one per line)."""
    from lvsd.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        errors = list(getattr(e, "errors", None) or [str(e)])
        for line in errors:
            print(line, file=sys.stderr)
        return None
    except OSError as e:
        _err(f"{path}: {e.strerror or e}")
        return None


def open_backend(name: str, state: str | None) -> Backend:
    """The chosen backend (the memory one persists to ``state`` if given)."""
    from lvsd.ipvs.backend import open_backend as _open

    if name == "memory":
        return _open("memory", state=state) if state else _open("memory")
    return _open(name)


def check_config(path: str) -> int:
    """``--check-config``: 0 if valid, EX_CONFIG with every error on stderr."""
    cfg = _load(path)
    if cfg is None:
        return EX_CONFIG
    n_srv = sum(len(s.servers) for s in cfg.services)
    print(f"{path}: ok ({len(cfg.services)} services, {n_srv} servers)")
    return 0


def plan(path: str, backend_name: str, state: str | None) -> int:
    """``--plan``: the daemon's planner (``lvsd.core.plan``) on one dump, every server taken as
    up and no quorum memory; prints the ops, applies nothing."""
    from lvsd.core.health import Health, ServerHealth
    from lvsd.core.plan import describe, retired
    from lvsd.core.plan import plan as make_plan
    from lvsd.daemon.reconciler import recorded_services

    cfg = _load(path)
    if cfg is None:
        return EX_CONFIG
    try:
        with open_backend(backend_name, state) as backend:
            actual = backend.dump()
            have = backend.timeouts() if cfg.ipvs.timeouts is not None else None
    except (BackendUnavailable, IPVSError, OSError) as e:
        _err(str(e))
        return 1
    configured = {s.key for s in cfg.services}
    recorded, why = recorded_services(cfg.daemon.state_file)
    if why:
        print(f"# daemon.state_file {why}: nothing deleted on its account", file=sys.stderr)
    # managed at the last run and no longer configured: the daemon deletes them at start
    managed = configured | set(retired(configured, recorded, actual))
    up = ServerHealth(Health.UP)
    health = {srv.id: up for s in cfg.services for srv in s.servers}
    from lvsd.daemon.overrides import OverrideStore, overrides_path

    store = OverrideStore(overrides_path(cfg), read_only=True)  # the daemon starts with these (lvsctl disable/drain/weight)
    store.load()
    store.reloaded(cfg, cfg, why="the config no longer has the server")
    if store.active:
        print(f"# {len(store.active)} overrides from {store.path} applied (lvsctl services shows them)", file=sys.stderr)
    ops = make_plan(cfg, health, actual, managed=managed, timeouts=have, overrides=store.active).ops
    for op in ops:
        print(describe(op))
    others = [k for k in actual if k not in managed]
    print(
        f"# {len(ops)} operations; {len(others)} services in the kernel not in the config are left alone"
        "; health checks may hold servers out",
        file=sys.stderr,
    )
    return 0


def run(path: str, backend_name: str, state: str | None, log_level: str | None) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    import asyncio  # here, not at the top: --check-config (ExecStartPre) and --plan do not need it

    from lvsd.daemon.api import APIError
    from lvsd.daemon.daemon import Daemon, StartError
    from lvsd.daemon.listeners import raise_nofile
    from lvsd.daemon.log import setup_logging

    cfg = _load(path)
    if cfg is None:
        return EX_CONFIG
    log = setup_logging(log_level or cfg.daemon.log_level)
    raise_nofile()
    try:
        backend = open_backend(backend_name, state)
    except (BackendUnavailable, IPVSError, OSError) as e:
        _err(str(e))
        return 1
    daemon = Daemon(cfg, backend, config_path=path)
    try:
        return asyncio.run(daemon.run())
    except (APIError, StartError) as e:
        log.error("cannot start: %s", e)
        return getattr(e, "exit_status", 1)
    except (BackendUnavailable, IPVSError, OSError) as e:
        log.error("cannot start: %s", e)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    """Console script ``lvsd``."""
    from lvsd.daemon import early

    early.install()  # first: a SIGHUP while lvsd starts is queued, not fatal
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["import"]:  # `lvsd import keepalived|ldirectord FILE` (docs/migration.md)
        from lvsd.migrate.cli import main as import_main

        return import_main(args_in[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.state and args.backend != "memory":  # else a trial run would rewrite the real kernel table
        parser.error("--state is the memory backend's file: add --backend memory")
    if args.check_config is not None:
        return check_config(args.check_config or args.config or DEFAULT_CONFIG)
    if args.plan is not None:
        return plan(args.plan or args.config or DEFAULT_CONFIG, args.backend, args.state)
    return run(args.config or DEFAULT_CONFIG, args.backend, args.state, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
