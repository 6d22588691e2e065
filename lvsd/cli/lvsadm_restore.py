"""lvsadm -R: read ipvsadm rules from stdin, parse every line first, then apply them in
batches through the backend (one netlink socket), with ipvsadm's messages for refusals.

Differences from ipvsadm, on purpose: a line ipvsadm would reject while parsing is reported
as ``line N: <ipvsadm's message>`` and nothing at all is applied (ipvsadm applies the lines
before it); ``--atomic`` puts the previous table back if the kernel refuses any operation.
Kernel refusals without --atomic behave as in ipvsadm: the message, the next line goes on,
and the exit status is that of the last line.
"""

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up)
if TYPE_CHECKING:  # the annotations naming these are quoted: nothing here is imported at run time
    from typing import Any

    from lvsd.ipvs.backend import Backend, Op
    from lvsd.ipvs.model import DestKey, ServiceEntry, ServiceKey, SyncDaemon, Timeouts

    _Snapshot = tuple[dict[ServiceKey, ServiceEntry], Timeouts, list[SyncDaemon]]

_WS = " \t\r"
_AF_INET = 2


def _inet_pton(af: int, s: str) -> bytes:
    import _socket  # not `socket`: its enum set-up costs ~0.1 s of start-up under emulation

    global _inet_pton
    _inet_pton = _socket.inet_pton  # type: ignore[assignment]  # the C function, same signature
    return _socket.inet_pton(af, s)


def split_lines(data: str) -> list[tuple[int, list[str]]]:
    """ipvsadm's config_stream_read(): tokens split on space, tab, CR; 'ipvsadm' tokens dropped.
    Returns (line number, tokens) for every line with tokens."""
    # tabs and CRs are blanks like spaces (replaced once for the whole input: the unterminated
    # last line's check below counts blanks, which this keeps)
    lines = data.replace("\t", " ").replace("\r", " ").split("\n")
    terminated = data.endswith("\n")
    if terminated:
        lines.pop()
    result = []
    for n, line in enumerate(lines, 1):
        toks = line.split(" ")
        if "" in toks:
            toks = [t for t in toks if t]
        if "ipvsadm" in toks:
            toks = [t for t in toks if t != "ipvsadm"]
        if not toks:
            continue
        if n == len(lines) and not terminated:
            stripped = line.rstrip(_WS)
            if len(line) - len(stripped) >= 2:
                # ipvsadm's reader drops an unterminated last line ending in 2+ blanks
                continue
        result.append((n, toks))
    return result


#: ASCII whitespace str.split() splits on and ipvsadm's reader does not
_ODD_SPACE = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")


def split_words(data: str) -> list[list[str]] | None:
    """split_lines() without the line numbers, the whole input split by C-level passes
    (``str.split`` mapped over the lines) where that splits exactly as ipvsadm's reader: ASCII
    input without other whitespace and without an 'ipvsadm' word. None otherwise (then use
    split_lines). ~0.15 s of 11,000 lines in the VM went to the per-line loop."""
    if not data.isascii() or "ipvsadm" in data or any(c in data for c in _ODD_SPACE):
        return None
    lines = data.split("\n")
    if data.endswith("\n"):
        lines.pop()
    elif len(lines[-1]) - len(lines[-1].rstrip(_WS)) >= 2:
        lines.pop()  # ipvsadm's reader drops an unterminated last line ending in 2+ blanks
    return list(filter(None, map(str.split, lines)))


def _dotted(s: str) -> bool:
    """Strict dotted-quad decimal (glibc inet_pton: where inet_aton and the resolver agree)."""
    try:
        _inet_pton(_AF_INET, s)
    except (OSError, UnicodeError, ValueError):
        return False
    return True


def _num(s: str, hi: int) -> int:
    """A plain decimal number 0..hi (no sign, blanks or leading zeros), else -1."""
    if not s or len(s) > 10 or not s.isascii() or not s.isdigit() or (s[0] == "0" and len(s) > 1):
        return -1
    v = int(s)
    return v if v <= hi else -1


class FastPath:
    """The two line shapes ipvsadm -S writes most (``-A -t a:p -s sched`` and
    ``-a -t a:p -r a[:p] -m|-g|-i -w n``) turned into Ops without the general parser; for these
    shapes the result is the general parser's (tests/unit/test_lvsadm.py checks it). None for
    any other line."""

    def __init__(self) -> None:
        from lvsd.ipvs.backend import Op, OpKind
        from lvsd.ipvs.model import Destination, DestKey, Service, ServiceKey

        self.Op, self.Destination, self.DestKey, self.Service, self.ServiceKey = (
            Op,
            Destination,
            DestKey,
            Service,
            ServiceKey,
        )
        self.keys: dict[tuple[str, str], tuple[ServiceKey, int]] = {}
        self.dkeys: dict[tuple[str, int, int], DestKey] = {}  # (server text, service port, method)
        # 10,000 destinations: build the frozen values through their slots (what __init__ does,
        # without its per-field object.__setattr__), from the defaults of a real instance
        tmpl_d = Destination(DestKey(2, "0.0.0.0", 0))
        self._d_sets = [(Destination.__dict__[n].__set__, getattr(tmpl_d, n)) for n in Destination.__slots__]
        tmpl_o = Op(OpKind.ADD_DEST)
        self._o_sets = [(Op.__dict__[n].__set__, getattr(tmpl_o, n)) for n in Op.__slots__]
        self._add_dest = OpKind.ADD_DEST

    def _dest_op(self, key: "ServiceKey", dk: "DestKey", fwd: int, w: int) -> "Op":
        """Op.add_dest(key, Destination(dk, fwd, w)), built through the slots."""
        new = object.__new__
        d = new(self.Destination)
        ds = self._d_sets
        for setter, default in ds[3:]:
            setter(d, default)
        ds[0][0](d, dk)
        ds[1][0](d, fwd)
        ds[2][0](d, w)
        o = new(self.Op)
        os_ = self._o_sets
        for setter, default in os_:
            setter(o, default)
        os_[0][0](o, self._add_dest)
        os_[1][0](o, key)
        os_[3][0](o, d)
        return o

    def _svc(self, opt: str, text: str) -> "tuple[ServiceKey, int] | None":
        k = self.keys.get((opt, text))
        if k is None:
            colon = text.rfind(":")
            if colon < 0 or not _dotted(text[:colon]):
                return None
            port = _num(text[colon + 1 :], 65535)
            if port < 0:
                return None
            k = (self.ServiceKey(2, 6 if opt == "-t" else 17, text[:colon], port, 0), port)
            self.keys[(opt, text)] = k
        return k

    def op(self, toks: list[str]) -> "Op | None":
        n = len(toks)
        if n == 5 and toks[0] == "-A" and toks[3] == "-s" and toks[1] in ("-t", "-u"):
            sched = toks[4]
            if not sched or len(sched) > 15 or not sched.isascii():
                return None
            k = self._svc(toks[1], toks[2])
            if k is None or k[1] == 0:
                return None
            return self.Op.add_service(self.Service(k[0], sched, 0, 0, 0xFFFFFFFF, ""))
        if n == 8 and toks[0] == "-a" and toks[3] == "-r" and toks[6] == "-w" and toks[1] in ("-t", "-u"):
            fwd = {"-m": 0, "-g": 3, "-i": 2}.get(toks[5])
            if fwd is None:
                return None
            k = self._svc(toks[1], toks[2])
            if k is None:
                return None
            w = _num(toks[7], 2147483647)
            if w < 0:
                return None
            r = toks[4]
            ck = (r, k[1], fwd)
            dk = self.dkeys.get(ck)
            if dk is not None:
                return self._dest_op(k[0], dk, fwd, w)
            colon = r.rfind(":")
            if colon < 0:
                raddr, rport = r, k[1]
            else:
                raddr, rport = r[:colon], _num(r[colon + 1 :], 65535)
                if rport < 0:
                    return None
            if not _dotted(raddr):
                return None
            if fwd != 0:
                rport = k[1]
            dk = self.dkeys[ck] = self.DestKey(2, raddr, rport)
            return self._dest_op(k[0], dk, fwd, w)
        return None


class LeanPath:
    """FastPath's two line shapes turned straight into IPVS netlink messages, for ``lvsadm -R``
    without the backend and the model (whose imports alone cost more than a third of the time
    budget under emulation: docs/performance.md). Accepts exactly the lines FastPath accepts, and
    encodes them to the bytes NetlinkBackend would send for FastPath's Op
    (tests/unit/test_lvsadm.py checks both on generated lines).

    Speed: 11,000 lines take ~0.5 s of emulated Python in the VM, so a server line costs a few
    dictionary lookups: the service, the weight and the server's (address, method, port) are
    each encoded once and their attribute bytes reused."""

    def __init__(self) -> None:
        import struct

        self.svcs: dict[str, dict[str, tuple[bytes, bytes, int] | None]] = {"-t": {}, "-u": {}}
        self.dests: dict[tuple[str, str, int], bytes | None] = {}
        self.weights: dict[str, bytes | None] = {}
        self._hh = struct.Struct("=HH").pack
        self._hhi = struct.Struct("=HHI").pack
        self._u16pad = struct.Struct("=H2x").pack
        self._be16pad = struct.Struct(">H2x").pack
        # IPVS_CMD_ATTR_DEST with every settable field, IPv4 (netlink._DEST4): the attributes
        # before WEIGHT (by server), WEIGHT (by weight), then the constant rest
        self._dest_size = struct.calcsize("=HH" + "HH4s" + "HH2s2x" + "HHI" * 4 + "HHB3x" + "HH2s2x" + "HHH2x" + "HHH2x")
        self._dest_tail = struct.pack(
            "=" + "HHI" * 2 + "HHB3x" + "HH2s2x" + "HHH2x" + "HHH2x",
            8, 5, 0,  # U_THRESH
            8, 6, 0,  # L_THRESH
            5, 13, 0,  # TUN_TYPE
            6, 14, b"\0\0",  # TUN_PORT
            6, 15, 0,  # TUN_FLAGS
            6, 11, _AF_INET,  # ADDR_FAMILY
        )  # fmt: skip
        self._tail = (
            self._hh(12, _SVC_FLAGS)
            + struct.pack("=II", 0, 0xFFFFFFFF)
            + struct.pack("=HHI", 8, _SVC_TIMEOUT, 0)
            + self._hh(8, _SVC_NETMASK)
            + b"\xff\xff\xff\xff"
        )

    def _svc(self, opt: str, text: str) -> tuple[bytes, bytes, int] | None:
        """(encoded service identity, the same nested as IPVS_CMD_ATTR_SERVICE, port) or None."""
        colon = text.rfind(":")
        if colon >= 0 and _dotted(text[:colon]):
            port = _num(text[colon + 1 :], 65535)
            if port >= 0:
                hh = self._hh
                ident = (
                    hh(6, _SVC_AF) + self._u16pad(_AF_INET)
                    + hh(6, _SVC_PROTOCOL) + self._u16pad(6 if opt == "-t" else 17)
                    + hh(8, _SVC_ADDR) + _inet_pton(_AF_INET, text[:colon])
                    + hh(6, _SVC_PORT) + self._be16pad(port)
                )  # fmt: skip
                return ident, hh(4 + len(ident), _ATTR_SERVICE) + ident, port
        return None

    def _dest_head(self, r: str, fwd_opt: str, svc_port: int) -> bytes | None:
        """IPVS_CMD_ATTR_DEST's header and its ADDR, PORT and FWD_METHOD attributes, or None."""
        fwd = _FWD.get(fwd_opt)
        if fwd is None:
            return None
        colon = r.rfind(":")
        if colon < 0:
            raddr, rport = r, svc_port
        else:
            raddr, rport = r[:colon], _num(r[colon + 1 :], 65535)
        if rport < 0 or not _dotted(raddr):
            return None
        if fwd != 0:
            rport = svc_port
        hh = self._hh
        return (
            hh(self._dest_size, _ATTR_DEST)
            + hh(8, 1) + _inet_pton(_AF_INET, raddr)
            + hh(6, 2) + self._be16pad(rport)
            + self._hhi(8, 3, fwd)
        )  # fmt: skip

    def msg(self, toks: list[str]) -> tuple[int, bytes] | None:
        """(IPVS command, attributes) for one line's tokens, or None."""
        n = len(toks)
        if n == 8:
            a, opt, text, r_opt, r, fwd_opt, w_opt, w_text = toks
            if a != "-a" or r_opt != "-r" or w_opt != "-w":
                return None
            svcs = self.svcs.get(opt)
            if svcs is None:
                return None
            k = svcs.get(text, _MISSING)
            if k is _MISSING:
                k = svcs[text] = self._svc(opt, text)
            if k is None:
                return None
            wa = self.weights.get(w_text, _MISSING)  # WEIGHT and the constant rest
            if wa is _MISSING:
                w = _num(w_text, 2147483647)
                wa = self.weights[w_text] = self._hhi(8, 4, w) + self._dest_tail if w >= 0 else None
            if wa is None:
                return None
            dk = (r, fwd_opt, k[2])
            dh = self.dests.get(dk, _MISSING)
            if dh is _MISSING:
                dh = self.dests[dk] = self._dest_head(r, fwd_opt, k[2])
            if dh is None:
                return None
            return _CMD_NEW_DEST, k[1] + dh + wa
        if n == 5 and toks[0] == "-A" and toks[3] == "-s" and toks[1] in ("-t", "-u"):
            sched = toks[4]
            if not sched or len(sched) > 15 or not sched.isascii():
                return None
            svcs = self.svcs[toks[1]]
            text = toks[2]
            k = svcs.get(text, _MISSING)
            if k is _MISSING:
                k = svcs[text] = self._svc(toks[1], text)
            if k is None or k[2] == 0:
                return None
            name = sched.encode() + b"\0"
            pad = -len(name) & 3
            body = k[0] + self._hh(4 + len(name), _SVC_SCHED) + name + b"\0" * pad + self._tail
            return _CMD_NEW_SERVICE, self._hh(4 + len(body), _ATTR_SERVICE) + body
        return None


_MISSING: "Any" = object()  # a sentinel: Any, so that a .get(k, _MISSING) keeps its value type
#: what ipvs_strerror() calls each command LeanPath sends
KIND = {1: "add-service", 5: "add-server"}
_FWD = {"-m": 0, "-g": 3, "-i": 2}
_ATTR_SERVICE, _ATTR_DEST = 1, 2
_CMD_NEW_SERVICE, _CMD_NEW_DEST = 1, 5
_SVC_AF, _SVC_PROTOCOL, _SVC_ADDR, _SVC_PORT, _SVC_SCHED, _SVC_FLAGS, _SVC_TIMEOUT, _SVC_NETMASK = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)


def lean_restore(data: str, out: list[str], err: list[str]) -> int | None:
    """``lvsadm -R`` when every line is one of LeanPath's shapes: parse all, send all through one
    netlink socket, report refusals as restore() does. None (nothing sent) when a line needs the
    general parser or the kernel cannot be reached: then restore() runs on the same input."""
    words = split_words(data)
    if words is None:
        words = [toks for _n, toks in split_lines(data)]
    maybe = list(map(LeanPath().msg, words))
    if None in maybe:
        return None
    # (not typing.cast(): importing typing costs start-up)
    messages: list[tuple[int, bytes]] = maybe  # type: ignore[assignment]  # no None: checked just above
    from lvsd.ipvs import genl

    from .lvsadm import ipvs_strerror

    try:
        sock = genl.GenlSocket("IPVS")
    except OSError:
        return None
    try:
        try:
            sock.request(_CMD_GET_INFO)  # what NetlinkBackend() asks first: refused without CAP_NET_ADMIN
        except OSError:
            return None
        if not messages:
            return 0
        results = sock.batch(messages)
    finally:
        sock.close()
    for (cmd, _p), r in zip(messages, results, strict=True):
        if r is not None:
            err.append(ipvs_strerror(KIND[cmd], r.errno))
    return 255 if results[-1] is not None else 0


_CMD_GET_INFO = 15


def restore(backend: "Backend", data: str, prog: str, atomic: bool, out: list[str], err: list[str]) -> int:
    """Parse all of ``data``, then apply it; returns the exit status."""
    import os

    from . import lvsadm_parse as P
    from .lvsadm import _Exit, execute, ipvs_strerror, make_op

    posix = bool(os.environ.get("POSIXLY_CORRECT") or os.environ.get("POSIX_ME_HARDER"))
    actions: list[tuple] = []  # ("op", lineno, Op) | ("read", lineno, Command) | ("usage", lineno, text)
    fast = FastPath()
    for n, toks in split_lines(data):
        op = fast.op(toks)
        if op is not None:
            actions.append(("op", n, op))
            continue
        try:
            ce = P.parse_options(toks, prog, posix)
        except P.Fail as f:
            err.append(f"line {n}: {f.message}")
            return f.code
        except P.Usage as u:
            actions.append(("usage", n, u.text))
            break
        if ce.cmd == P.CMD_RESTORE:
            err.append(f"line {n}: {P.tryhelp(prog).message}")
            return 255
        if ce.cmd in (P.CMD_LIST, P.CMD_SAVE):
            actions.append(("read", n, ce))
        else:
            try:
                op = make_op(ce)
                op.validate()
            except ValueError as e:
                err.append(f"line {n}: {e}")
                return 2
            actions.append(("op", n, op))

    snapshot = _snapshot(backend) if atomic else None
    result = 0
    batch: list = []
    failures: list[tuple[int, Op, int]] = []

    def flush() -> int:
        """Apply the pending ops; print refusals in line order; result of the last op."""
        if not batch:
            return result
        ops = [a[2] for a in batch]
        failed_idx = _apply(backend, ops)
        last = 0
        for i, errno in failed_idx:
            n, op = batch[i][1], ops[i]
            failures.append((n, op, errno))
            if not atomic:
                err.append(ipvs_strerror(op.kind.value, errno))
            if i == len(ops) - 1:
                last = -1
        batch.clear()
        return last

    for act in actions:
        kind = act[0]
        if kind == "op":
            batch.append(act)
            continue
        result = flush()
        if failures and atomic:
            break
        if kind == "usage":
            out.append(act[2][:-1])
            raise _Exit(0)
        result = execute(backend, act[2], prog, out, err, reading_stdin=True)
    else:
        result = flush()

    if atomic and failures:
        n, op, errno = failures[0]
        err.append(ipvs_strerror(op.kind.value, errno))
        assert snapshot is not None  # taken above when atomic
        problems = _rollback(backend, snapshot)
        if problems:
            err.append(
                f"line {n}: the kernel refused {op}; restoring the previous table failed too: {problems}"
            )
        else:
            err.append(f"line {n}: the kernel refused {op}; the previous table was restored")
        return 255
    return result & 0xFF


def _apply(backend: "Backend", ops: "list[Op]") -> list[tuple[int, int]]:
    """backend.apply(ops); the (index, errno) of every refused op."""
    from lvsd.ipvs.backend import BatchError, IPVSError

    try:
        backend.apply(ops)
        return []
    except BatchError as e:
        pos: dict[int, int] = {}
        for i, op in enumerate(ops):
            pos.setdefault(id(op), i)
        out = []
        used: set[int] = set()
        for fop, ferr in e.failed:
            k = pos.get(id(fop))
            if k is None or k in used:
                k = next(j for j, op in enumerate(ops) if op == fop and j not in used)
            used.add(k)
            out.append((k, ferr.errno))
        out.sort()
        return out
    except IPVSError as e:
        return [(0, e.errno)]


def _snapshot(backend: "Backend") -> "_Snapshot":
    return backend.dump(), backend.timeouts(), backend.daemons()


def _rollback(backend: "Backend", snapshot: "_Snapshot") -> str:
    """Bring the table back to ``snapshot`` with the fewest operations; '' on success."""
    from lvsd.ipvs.backend import Op

    table, timeouts, daemons = snapshot
    now = backend.dump()
    ops: list[Op] = []
    for key in now:
        if key not in table:
            ops.append(Op.del_service(key))
    for key, entry in table.items():
        cur = now.get(key)
        if cur is None:
            ops.append(Op.add_service(entry.service))
            for d in reversed(list(entry.dests.values())):
                ops.append(Op.add_dest(key, d))
            continue
        if cur.service != entry.service:
            ops.append(Op.edit_service(entry.service))
        for dk in cur.dests:
            if dk not in entry.dests:
                ops.append(Op.del_dest(key, dk))
        for d in reversed(list(entry.dests.values())):
            c = cur.dests.get(d.key)
            if c is None:
                ops.append(Op.add_dest(key, d))
            elif c != d:
                ops.append(Op.edit_dest(key, d))
    if backend.timeouts() != timeouts:
        ops.append(Op.set_timeouts(timeouts))
    cur_d = {sd.state: sd for sd in backend.daemons()}
    old_d = {sd.state: sd for sd in daemons}
    for st, sd in cur_d.items():
        if old_d.get(st) != sd:
            ops.append(Op.stop_daemon(st))
    for st, sd in old_d.items():
        if cur_d.get(st) != sd:
            ops.append(Op.start_daemon(sd))
    if not ops:
        return ""
    try:
        backend.apply(ops)
    except Exception as e:  # report, do not hide
        return str(e)
    return ""
