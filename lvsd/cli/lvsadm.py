"""lvsadm: a drop-in for ipvsadm 1.31 (same commands, options, output, errors, exit codes).

Additions (docs/lvsadm.md): ``-L --json``; ``-R`` parses all of its input before applying any
of it and reports a bad line as ``line N: <what is wrong>``; ``-R --atomic`` puts the previous
table back if the kernel refuses an operation part-way; ``--backend netlink|memory`` (env
``LVSADM_BACKEND``) and ``--state FILE`` (env ``LVSADM_STATE``) for the in-memory twin.

Start-up time matters (scripts call ipvsadm in loops): this module imports only ``os`` and
``sys`` at load; the parser, the listing code, the model and the backend are imported when the
command needs them.
"""

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up)
if TYPE_CHECKING:  # annotations below are quoted: nothing of these is imported at run time
    from typing import TextIO

    from lvsd.ipvs.backend import Backend, IPVSError, Op
    from lvsd.ipvs.model import ServiceKey

    from .lvsadm_parse import Command

# ipvs_strerror(): (command, errno) -> message; command-independent entries under None.
_ESRCH, _ENOENT, _EEXIST, _EPERM, _EINVAL = 3, 2, 17, 1, 22
_GENERIC = {
    1: "Permission denied (you must be root)",
    22: "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    92: "Protocol not available",
    12: "Memory allocation problem",
    95: "Operation not supported with IPv6",
    97: "Operation not supported with specified address family",
    90: "Module is wrong version",
}
_BY_KIND = {
    "add-service": {17: "Service already exists", 2: "Scheduler or persistence engine not found"},
    "edit-service": {3: "No such service", 2: "Scheduler or persistence engine not found"},
    "delete-service": {3: "No such service"},
    "zero": {3: "No such service"},
    "add-server": {3: "Service not defined", 17: "Destination already exists"},
    "edit-server": {3: "Service not defined", 2: "No such destination"},
    "delete-server": {3: "Service not defined", 2: "No such destination"},
    "start-daemon": {17: "Daemon has already run"},
    "stop-daemon": {3: "No daemon is running"},
    "get": {3: "No such service"},
}


def ipvs_strerror(kind: str, err: int) -> str:
    """The message ipvsadm prints for a kernel refusal of ``kind`` (an OpKind value or 'get')."""
    m = _BY_KIND.get(kind, {}).get(err) or _GENERIC.get(err)
    if m is not None:
        return m
    return os.strerror(err)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _emit(stream: "TextIO", chunks: list[str]) -> None:
    if not chunks:
        return
    text = "\n".join(chunks) + "\n"
    buf = getattr(stream, "buffer", None)
    if buf is not None:
        stream.flush()
        buf.write(text.encode("utf-8", "surrogateescape"))
        buf.flush()
    else:
        stream.write(text)
        stream.flush()


_EXTRA_WITH_ARG = ("--backend", "--state")
_EXTRA_FLAGS = ("--json", "--atomic")


def _split_extras(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """Take lvsadm's own options (--backend, --state, --json, --atomic) out of argv."""
    rest: list[str] = []
    extras: dict[str, str | bool] = {}
    i = 0
    n = len(args)
    while i < n:
        a = args[i]
        if a == "--":
            rest.extend(args[i:])
            break
        if a in _EXTRA_FLAGS:
            extras[a[2:]] = True
        elif a in _EXTRA_WITH_ARG:
            if i + 1 >= n:
                raise _Usage2(f"lvsadm: option {a} needs an argument")
            extras[a[2:]] = args[i + 1]
            i += 1
        elif a.startswith(("--backend=", "--state=")):
            k, _, v = a[2:].partition("=")
            extras[k] = v
        else:
            rest.append(a)
        i += 1
    return rest, extras


class _Usage2(Exception):
    """A misuse of one of lvsadm's own options (exit 2)."""


def open_backend_for(extras: dict[str, str | bool]) -> "Backend":
    """The backend chosen by --backend/--state or LVSADM_BACKEND/LVSADM_STATE (netlink by default)."""
    name = extras.get("backend") or os.environ.get("LVSADM_BACKEND") or "netlink"
    if name == "memory":
        state = extras.get("state") or os.environ.get("LVSADM_STATE")
        if not state or state is True:  # (True: never; --state always takes a value)
            raise _Usage2("lvsadm: the memory backend needs a state file: --state FILE (or LVSADM_STATE)")
        from lvsd.ipvs.memory import MemoryBackend

        return MemoryBackend(state)
    if name != "netlink":
        raise _Usage2(f"lvsadm: unknown backend {name!r} (netlink or memory)")
    if extras.get("state"):  # a state file with the kernel backend would silently drive the kernel
        raise _Usage2("lvsadm: --state goes with --backend memory (or LVSADM_BACKEND=memory)")
    from lvsd.ipvs.netlink import NetlinkBackend

    return NetlinkBackend()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one lvsadm command line (``argv`` without the program name); return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "lvsadm"
        if prog.endswith(".py"):  # python -m lvsd.cli.lvsadm
            prog = prog[:-3]
    out: list[str] = []
    err: list[str] = []
    try:
        code = _run(list(argv), prog, out, err)
    except _Exit as e:
        code = e.code
    except _Usage2 as e:
        err.append(str(e))
        code = 2
    except BrokenPipeError:
        code = 0
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # a bug or an environment problem: one line, not a traceback
        err.append(f"lvsadm: {type(e).__name__}: {e}")
        code = 1
    try:
        _emit(sys.stdout, out)
    except BrokenPipeError:
        pass
    _emit(sys.stderr, err)
    return code & 0xFF


def _run(args: list[str], prog: str, out: list[str], err: list[str]) -> int:
    global _stdin_text
    _stdin_text = None
    args, extras = _split_extras(args)
    if args and not extras and (os.environ.get("LVSADM_BACKEND") or "netlink") == "netlink":
        # lean paths straight to the kernel for what scripts run most on big tables; anything
        # they do not handle goes on below, with the same result
        if args == ["-R"] or args == ["--restore"]:
            from .lvsadm_restore import lean_restore

            _stdin_text = _read_stdin()
            code = lean_restore(_stdin_text, out, err)
            if code is not None:
                return code
        else:
            lines = _fast_listing(args, prog)
            if lines is not None:
                out.extend(lines)
                return 0
    from .lvsadm_parse import Fail, Usage, parse_options

    try:
        backend = open_backend_for(extras)
    except _Usage2:
        raise
    except Exception as e:  # BackendUnavailable and the like: ipvsadm's init failure
        from lvsd.ipvs.backend import BackendUnavailable

        if not isinstance(e, (BackendUnavailable, OSError)):
            raise
        if extras.get("backend") == "memory" or os.environ.get("LVSADM_BACKEND") == "memory":
            err.append(f"lvsadm: {e}")
            return 2
        text = str(e).lower()
        reason = _GENERIC[1] if ("permission" in text or "cap_net_admin" in text) else _GENERIC[92]
        err.append(
            f"Can't initialize ipvs: {reason}\nAre you sure that IP Virtual Server is built in the kernel or as module?"
        )
        return 2
    try:
        if not args and extras.get("json"):
            args = ["-L"]  # `lvsadm --json`: the table as JSON, like a bare `lvsadm` lists it
        if not args:
            from .lvsadm_list import list_all

            try:
                list_all(backend, 0, out)
            except _ipvs_error() as e:
                err.append(ipvs_strerror("get", e.errno))
                return 1
            return 0
        posix = bool(os.environ.get("POSIXLY_CORRECT") or os.environ.get("POSIX_ME_HARDER"))
        try:
            ce = parse_options(args, prog, posix)
        except Fail as f:
            err.append(f.message)
            return f.code
        except Usage as u:
            out.append(u.text[:-1])
            return 0
        from .lvsadm_parse import CMD_LIST, CMD_RESTORE, CMDNAMES

        if extras.get("json") and ce.cmd != CMD_LIST:
            err.append(f"Illegal 'json' option with the '{CMDNAMES[ce.cmd - 1]}' command")
            return 2
        if extras.get("atomic") and ce.cmd != CMD_RESTORE:
            err.append(f"Illegal 'atomic' option with the '{CMDNAMES[ce.cmd - 1]}' command")
            return 2
        ce.json = bool(extras.get("json"))
        ce.atomic = bool(extras.get("atomic"))
        return execute(backend, ce, prog, out, err, reading_stdin=False)
    finally:
        try:
            backend.close()
        except Exception as e:  # a state file that cannot be written back, say
            err.append(f"lvsadm: {e}")


#: stdin as read by the lean -R path when it handed over to the general one
_stdin_text: str | None = None


def _read_stdin() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    return data.decode("utf-8", "surrogateescape")


def _fast_listing(args: list[str], prog: str) -> list[str] | None:
    """`-Ln` and friends from the kernel without the backend (lvsadm_fastlist): the listing's
    lines, or None to take the general path (other commands, formats, or any trouble, which the
    general path then reports exactly as ipvsadm does)."""
    from .lvsadm_parse import (
        CMD_LIST,
        OPTC_CONNECTION,
        OPTC_DAEMON,
        OPTC_SERVICE,
        OPTC_TIMEOUT,
        Fail,
        Usage,
        parse_options,
    )

    posix = bool(os.environ.get("POSIXLY_CORRECT") or os.environ.get("POSIX_ME_HARDER"))
    try:
        ce = parse_options(args, prog, posix)
    except (Fail, Usage):
        return None
    if ce.cmd != CMD_LIST or any(ce.has(o) for o in (OPTC_CONNECTION, OPTC_SERVICE, OPTC_TIMEOUT, OPTC_DAEMON)):
        return None
    from . import lvsadm_fastlist as F

    if not F.supports(ce.fmt):
        return None
    try:
        return F.list_table(ce.fmt)
    except Exception:  # Unsupported, OSError, or a reply we did not expect: read-only, so the
        return None  # general path may simply list again and report whatever is wrong


def _ipvs_error() -> "type[IPVSError]":
    from lvsd.ipvs.backend import IPVSError

    return IPVSError


def service_key(ce: "Command") -> "ServiceKey":
    """The ServiceKey named by -t/-u/--sctp-service/-f."""
    from lvsd.ipvs.model import ServiceKey

    if ce.fwmark:
        return ServiceKey(ce.af, 0, "", 0, ce.fwmark)
    return ServiceKey(ce.af, ce.protocol, ce.addr, ce.port, 0)


def make_op(ce: "Command") -> "Op":
    """The backend Op for a write command."""
    from lvsd.ipvs.backend import Op
    from lvsd.ipvs.model import Destination, DestKey, Service, SyncDaemon, Timeouts

    from . import lvsadm_parse as P

    cmd = ce.cmd
    if cmd == P.CMD_FLUSH:
        return Op.flush()
    if cmd == P.CMD_TIMEOUT:
        return Op.set_timeouts(Timeouts(ce.t_tcp, ce.t_fin, ce.t_udp))
    if cmd == P.CMD_STARTDAEMON:
        return Op.start_daemon(
            SyncDaemon(ce.state, ce.mcast_ifn, ce.syncid, ce.sync_maxlen, ce.mcast_group, ce.mcast_port, ce.mcast_ttl)
        )
    if cmd == P.CMD_STOPDAEMON:
        return Op.stop_daemon(ce.state)
    if cmd == P.CMD_ZERO:
        if not ce.fwmark and not ce.port and ce.addr in ("", "0.0.0.0", "::"):
            return Op.zero(None)
        return Op.zero(service_key(ce))
    key = service_key(ce)
    if cmd in (P.CMD_ADD, P.CMD_EDIT):
        svc = Service(key, ce.sched, ce.flags, ce.timeout, ce.netmask, ce.pe)
        return Op.add_service(svc) if cmd == P.CMD_ADD else Op.edit_service(svc)
    if cmd == P.CMD_DEL:
        return Op.del_service(key)
    dest = Destination(
        DestKey(ce.d_af, ce.d_addr, ce.d_port),
        ce.fwd,
        ce.weight,
        ce.u_threshold,
        ce.l_threshold,
        ce.tun_type,
        ce.tun_port,
        ce.tun_flags,
    )
    if cmd == P.CMD_ADDDEST:
        return Op.add_dest(key, dest)
    if cmd == P.CMD_EDITDEST:
        return Op.edit_dest(key, dest)
    return Op.del_dest(key, dest)


def execute(
    backend: "Backend", ce: "Command", prog: str, out: list[str], err: list[str], reading_stdin: bool
) -> int:
    """Run a parsed command: a listing, -S, -R, or one write."""
    from . import lvsadm_parse as P

    cmd = ce.cmd
    IPVSError = _ipvs_error()
    if cmd == P.CMD_LIST:
        from . import lvsadm_list as L

        try:
            if ce.json:
                import json

                key = service_key(ce) if ce.has(P.OPTC_SERVICE) else None
                out.append(json.dumps(L.json_doc(backend, ce, key), indent=2))
            elif ce.has(P.OPTC_CONNECTION):
                try:
                    L.list_conn(backend, ce.fmt, out)
                except OSError:
                    err.append("cannot open file /proc/net/ip_vs_conn")
                    return 1
            elif ce.has(P.OPTC_SERVICE):
                L.list_service(backend, service_key(ce), ce.fmt, out)
            elif ce.has(P.OPTC_TIMEOUT):
                L.list_timeout(backend, out)
            elif ce.has(P.OPTC_DAEMON):
                L.list_daemon(backend, out)
            else:
                L.list_all(backend, ce.fmt, out)
        except IPVSError as e:
            err.append(ipvs_strerror("get", e.errno))
            raise _Exit(1) from None
        return 0
    if cmd == P.CMD_SAVE:
        from . import lvsadm_list as L

        try:
            L.list_all(backend, ce.fmt | P.FMT_RULE, out)
        except IPVSError as e:
            err.append(ipvs_strerror("get", e.errno))
            raise _Exit(1) from None
        return 0
    if cmd == P.CMD_RESTORE:
        if reading_stdin:
            raise P.tryhelp(prog)
        from .lvsadm_restore import restore

        global _stdin_text
        text, _stdin_text = (_stdin_text if _stdin_text is not None else _read_stdin()), None
        return restore(backend, text, prog, ce.atomic, out, err)
    op = make_op(ce)
    try:
        backend.apply([op])
    except IPVSError as e:
        failed = getattr(e, "failed", None)
        if failed:
            e = failed[0][1]
        err.append(ipvs_strerror(op.kind.value, e.errno))
        return 255
    except ValueError as e:  # ValueInvalid: a value no kernel would take
        err.append(f"lvsadm: {e}")
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
