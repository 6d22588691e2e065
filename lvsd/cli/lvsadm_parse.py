"""ipvsadm 1.31 command-line semantics for lvsadm: popt's option scanning, ipvsadm's argument
parsers (inet_aton, strtol, service names) and its option/command checks, in ipvsadm's order.

Everything here is pure except the optional name look-ups (resolver, /etc/services), which are
done only when a host or service *name* is given. Errors raise ``Fail(code, message)`` carrying
ipvsadm's exact text and exit status; nothing is printed here.
"""


# --- commands, options, the legality matrix (ipvsadm.c) ----------------------------------------

CMD_NONE = 0
CMD_ADD = 1
CMD_EDIT = 2
CMD_DEL = 3
CMD_FLUSH = 4
CMD_LIST = 5
CMD_ADDDEST = 6
CMD_DELDEST = 7
CMD_EDITDEST = 8
CMD_TIMEOUT = 9
CMD_STARTDAEMON = 10
CMD_STOPDAEMON = 11
CMD_RESTORE = 12
CMD_SAVE = 13
CMD_ZERO = 14

CMDNAMES = (
    "add-service", "edit-service", "delete-service", "flush", "list", "add-server", "delete-server",
    "edit-server", "set", "start-daemon", "stop-daemon", "restore", "save", "zero",
)  # fmt: skip

OPTNAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask", "real-server",
    "forwarding-method", "weight", "u-threshold", "l-threshold", "mcast-interface", "timeout", "daemon",
    "stats", "rate", "thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
    "sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
    "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
)  # fmt: skip

(OPTC_NUMERIC, OPTC_CONNECTION, OPTC_SERVICE, OPTC_SCHEDULER, OPTC_PERSISTENT, OPTC_NETMASK, OPTC_SERVER,
 OPTC_FORWARD, OPTC_WEIGHT, OPTC_UTHRESHOLD, OPTC_LTHRESHOLD, OPTC_MCAST, OPTC_TIMEOUT, OPTC_DAEMON,
 OPTC_STATS, OPTC_RATE, OPTC_THRESHOLDS, OPTC_PERSISTENTCONN, OPTC_NOSORT, OPTC_SYNCID, OPTC_EXACT,
 OPTC_ONEPACKET, OPTC_PERSISTENCE_ENGINE, OPTC_SCHED_FLAGS, OPTC_MCAST_GROUP, OPTC_MCAST_PORT,
 OPTC_MCAST_TTL, OPTC_SYNC_MAXLEN, OPTC_TUN_INFO, OPTC_TUN_TYPE, OPTC_TUN_PORT, OPTC_TUN_NOCSUM,
 OPTC_TUN_CSUM, OPTC_TUN_REMCSUM) = range(34)  # fmt: skip

# Row per command, column per option: '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
MATRIX = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",  # ADD
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",  # EDIT
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # DEL
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # FLUSH
    " 11xxxxxxxxx11       xxxxxxx xxxxx",  # LIST
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",  # ADDDEST
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",  # DELDEST
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",  # EDITDEST
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # TIMEOUT
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",  # STARTDAEMON
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",  # STOPDAEMON
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # RESTORE
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # SAVE
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # ZERO
)

TUNNAMES = ("ipip", "gue", "gre")
TUNOPTS = (OPTC_TUN_PORT, OPTC_TUN_NOCSUM, OPTC_TUN_CSUM, OPTC_TUN_REMCSUM)
TUN_MATRIX = ("xxxx", "+111", "x11x")

# printing format flags
FMT_NUMERIC = 0x0001
FMT_RULE = 0x0002
FMT_STATS = 0x0004
FMT_RATE = 0x0008
FMT_THRESHOLDS = 0x0010
FMT_PERSISTENTCONN = 0x0020
FMT_NOSORT = 0x0040
FMT_EXACT = 0x0080
FMT_TUN_INFO = 0x0100

AF_INET = 2
AF_INET6 = 10
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

SVC_F_PERSISTENT = 0x0001
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
SVC_F_SCHED_MASK = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

FWD_MASQ = 0
FWD_TUNNEL = 2
FWD_ROUTE = 3

MAX_TIMEOUT = 86400 * 31
PERSISTENT_TIMEOUT = 6 * 60  # IPVS_SVC_PERSISTENT_TIMEOUT in ipvsadm's libipvs.h
DEF_SCHED = "wlc"
DEF_MCAST_IFN = "eth0"
#: Debian's ipvsadm 1.31 (the reference) accepts weights up to INT_MAX (upstream: 65535).
WEIGHT_MAX = 2147483647
INT_MAX = 2147483647

VERSION_LINE = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)"


class Fail(Exception):
    """ipvsadm's fail()/tryhelp_exit(): print ``message`` on stderr and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Usage(Exception):
    """-h or -v: print ``text`` on stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def tryhelp(prog: str) -> Fail:
    return Fail(255, f"Try `{prog} -h' or '{prog} --help' for more information.")


# --- popt 1.19 option scanning -----------------------------------------------------------------

ARG_NONE = 0
ARG_STRING = 1
ARG_OPTIONAL = 2  # POPT_ARG_STRING | POPT_ARGFLAG_OPTIONAL

# (long name, short name, argument kind, value returned), in ipvsadm's table order
OPTIONS = (
    ("add-service", "A", ARG_NONE, "A"),
    ("edit-service", "E", ARG_NONE, "E"),
    ("delete-service", "D", ARG_NONE, "D"),
    ("clear", "C", ARG_NONE, "C"),
    ("list", "L", ARG_NONE, "L"),
    ("list", "l", ARG_NONE, "l"),
    ("zero", "Z", ARG_NONE, "Z"),
    ("add-server", "a", ARG_NONE, "a"),
    ("edit-server", "e", ARG_NONE, "e"),
    ("delete-server", "d", ARG_NONE, "d"),
    ("set", "", ARG_NONE, "set"),
    ("help", "h", ARG_NONE, "h"),
    ("version", "v", ARG_NONE, "v"),
    ("restore", "R", ARG_NONE, "R"),
    ("save", "S", ARG_NONE, "S"),
    ("start-daemon", "", ARG_STRING, "start-daemon"),
    ("stop-daemon", "", ARG_STRING, "stop-daemon"),
    ("tcp-service", "t", ARG_STRING, "t"),
    ("udp-service", "u", ARG_STRING, "u"),
    ("sctp-service", "", ARG_STRING, "sctp-service"),
    ("fwmark-service", "f", ARG_STRING, "f"),
    ("scheduler", "s", ARG_STRING, "s"),
    ("persistent", "p", ARG_OPTIONAL, "p"),
    ("netmask", "M", ARG_STRING, "M"),
    ("real-server", "r", ARG_STRING, "r"),
    ("masquerading", "m", ARG_NONE, "m"),
    ("ipip", "i", ARG_NONE, "i"),
    ("gatewaying", "g", ARG_NONE, "g"),
    ("weight", "w", ARG_STRING, "w"),
    ("u-threshold", "x", ARG_STRING, "x"),
    ("l-threshold", "y", ARG_STRING, "y"),
    ("numeric", "n", ARG_NONE, "n"),
    ("connection", "c", ARG_NONE, "c"),
    ("mcast-interface", "", ARG_STRING, "mcast-interface"),
    ("syncid", "", ARG_STRING, "syncid"),
    ("timeout", "", ARG_NONE, "timeout"),
    ("daemon", "", ARG_NONE, "daemon"),
    ("stats", "", ARG_NONE, "stats"),
    ("rate", "", ARG_NONE, "rate"),
    ("thresholds", "", ARG_NONE, "thresholds"),
    ("persistent-conn", "", ARG_NONE, "persistent-conn"),
    ("nosort", "", ARG_NONE, "nosort"),
    ("sort", "", ARG_NONE, "sort"),
    ("exact", "X", ARG_NONE, "X"),
    ("ipv6", "6", ARG_NONE, "6"),
    ("ops", "o", ARG_NONE, "o"),
    ("pe", "", ARG_STRING, "pe"),
    ("sched-flags", "b", ARG_STRING, "b"),
    ("mcast-group", "", ARG_STRING, "mcast-group"),
    ("mcast-port", "", ARG_STRING, "mcast-port"),
    ("mcast-ttl", "", ARG_STRING, "mcast-ttl"),
    ("sync-maxlen", "", ARG_STRING, "sync-maxlen"),
    ("tun-info", "", ARG_NONE, "tun-info"),
    ("tun-type", "", ARG_STRING, "tun-type"),
    ("tun-port", "", ARG_STRING, "tun-port"),
    ("tun-nocsum", "", ARG_NONE, "tun-nocsum"),
    ("tun-csum", "", ARG_NONE, "tun-csum"),
    ("tun-remcsum", "", ARG_NONE, "tun-remcsum"),
)

_LONG: dict[str, tuple] = {}
_SHORT: dict[str, tuple] = {}
for _o in OPTIONS:
    _LONG.setdefault(_o[0], _o)
    if _o[1]:
        _SHORT.setdefault(_o[1], _o)
del _o

POPT_END = -1
POPT_ERROR_NOARG = -10
POPT_ERROR_BADOPT = -11
POPT_ERROR_UNWANTEDARG = -12
POPT_STRERROR = {
    POPT_ERROR_NOARG: "missing argument",
    POPT_ERROR_BADOPT: "unknown option",
    POPT_ERROR_UNWANTEDARG: "option does not take an argument",
}


class Popt:
    """poptGetNextOpt() of popt 1.19 for a table without aliases, callbacks or exec entries."""

    __slots__ = ("argv", "next", "next_char", "leftovers", "rest", "posix", "arg")

    def __init__(self, argv: list[str], posix: bool = False) -> None:
        self.argv = argv  # without the program name
        self.next = 0
        self.next_char: str | None = None
        self.leftovers: list[str] = []
        self.rest = False
        self.posix = posix
        self.arg: str | None = None

    def bad_option(self) -> str:
        """poptBadOption(): the argv element the scanner stopped on."""
        return self.argv[self.next - 1] if self.next > 0 else ""

    def get(self) -> int | str:
        """The next option's value (its argument in ``self.arg``), POPT_END, or a POPT_ERROR_*."""
        argv = self.argv
        while True:
            long_arg = None
            opt = None
            if self.next_char is None:
                if self.next == len(argv):
                    return POPT_END
                orig = argv[self.next]
                self.next += 1
                if self.rest or orig[:1] != "-" or orig == "-":
                    if self.posix:
                        self.rest = True
                    self.leftovers.append(orig)
                    continue
                if orig == "--":
                    self.rest = True
                    continue
                s = orig[1:]
                onedash = True
                if s[:1] == "-":
                    s = s[1:]
                    onedash = False
                eq = s.find("=")
                if eq >= 0:
                    long_arg = s[eq + 1 :]
                    s = s[:eq]
                if not onedash:
                    opt = _LONG.get(s)
                    if opt is None:
                        return POPT_ERROR_BADOPT
                else:
                    self.next_char = orig[1:]
                    long_arg = None
            if opt is None:
                nc = self.next_char
                opt = _SHORT.get(nc[0])  # type: ignore[index]  # opt is None: nc holds short options
                if opt is None:
                    return POPT_ERROR_BADOPT
                self.next_char = nc[1:] or None  # type: ignore[index]  # as just above
            kind = opt[2]
            if kind == ARG_NONE:
                if long_arg is not None or (self.next_char is not None and self.next_char[0] == "="):
                    return POPT_ERROR_UNWANTEDARG
                self.arg = None
            elif long_arg is not None:
                self.arg = long_arg
            elif self.next_char is not None:
                nc = self.next_char
                self.arg = nc[1:] if nc[0] == "=" else nc
                self.next_char = None
            elif self.next == len(argv):
                if kind != ARG_OPTIONAL:
                    return POPT_ERROR_NOARG
                self.arg = None
            elif kind == ARG_OPTIONAL and argv[self.next][:1] == "-":
                self.arg = None
            else:
                self.arg = argv[self.next]
                self.next += 1
            return opt[3]

    def get_arg(self) -> str | None:
        """poptGetArg(): the next leftover (non-option) argument."""
        return self.leftovers.pop(0) if self.leftovers else None


# --- C library parsers, reproduced ------------------------------------------------------------

_SPACE = " \t\n\v\f\r"
_LONG_MIN = -(1 << 63)
_LONG_MAX = (1 << 63) - 1


def _scan_int(s: str) -> tuple[int, int, int]:
    """How the C library reads a decimal: (where the sign or digits start after leading blanks,
    where the digits start, where they end)."""
    i, n = 0, len(s)
    while i < n and s[i] in _SPACE:
        i += 1
    j = i
    if j < n and s[j] in "+-":
        j += 1
    k = j
    while k < n and "0" <= s[k] <= "9":
        k += 1
    return i, j, k


def strtol10(s: str) -> int | None:
    """strtol(s, &end, 10) that must consume all of s; None if not (or out of long's range)."""
    i, j, k = _scan_int(s)
    if k == j or k != len(s):
        return None
    v = int(s[i:k])
    if v < _LONG_MIN or v > _LONG_MAX:
        return None
    return v


def string_to_number(s: str | None, lo: int, hi: int) -> int:
    """ipvsadm's string_to_number(): the value, or -1 if not a number in [lo, hi]."""
    if s is None:
        return -1
    v = strtol10(s)
    if v is None or not lo <= v <= hi:
        return -1
    return v


def atoi(s: str) -> int:
    """C atoi(): leading blanks, sign, digits, anything after ignored; 0 if no digits."""
    i, j, k = _scan_int(s)
    if k == j:
        return 0
    v = max(_LONG_MIN, min(_LONG_MAX, int(s[i:k])))
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _strtoul0(s: str, i: int) -> tuple[int, int]:
    """strtoul(s+i, &end, 0) where s[i] is a digit: (value, end index)."""
    n = len(s)
    if s[i] == "0" and i + 1 < n and s[i + 1] in "xX" and i + 2 < n and s[i + 2] in "0123456789abcdefABCDEF":
        k = i + 2
        while k < n and s[k] in "0123456789abcdefABCDEF":
            k += 1
        return int(s[i + 2 : k], 16), k
    if s[i] == "0":
        k = i + 1
        while k < n and "0" <= s[k] <= "7":
            k += 1
        return (int(s[i:k], 8) if k > i + 1 else 0), k
    k = i
    while k < n and "0" <= s[k] <= "9":
        k += 1
    return int(s[i:k]), k


def inet_aton(s: str) -> int | None:
    """glibc 2.36 inet_aton(): a, a.b, a.b.c, a.b.c.d in decimal, octal or hex; trailing blank
    and anything after it allowed. Returns the address as an integer, or None."""
    maxes = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)
    parts: list[int] = []
    i, n = 0, len(s)
    while True:
        if i >= n or not "0" <= s[i] <= "9":
            return None
        val, i = _strtoul0(s, i)
        if val > 0xFFFFFFFF:
            return None
        c = s[i] if i < n else ""
        if c == ".":
            if len(parts) > 2 or val > 0xFF:
                return None
            parts.append(val)
            i += 1
            continue
        break
    if c and not (c.isascii() and c in _SPACE):
        return None
    if val > maxes[len(parts)]:
        return None
    res = 0
    for k, p in enumerate(parts):
        res |= p << (24 - 8 * k)
    return res | val


def inet_pton4(s: str) -> int | None:
    """glibc inet_pton(AF_INET): exactly four decimal octets, no leading zeros."""
    parts = s.split(".")
    if len(parts) != 4:
        return None
    res = 0
    for p in parts:
        if not p or len(p) > 3 or not all("0" <= c <= "9" for c in p) or (len(p) > 1 and p[0] == "0"):
            return None
        v = int(p)
        if v > 255:
            return None
        res = res << 8 | v
    return res


_HEX6 = frozenset("0123456789abcdefABCDEF:.")


def inet_pton6(s: str) -> bytes | None:
    """glibc inet_pton(AF_INET6), or None."""
    if s.count(":") < 2 or not _HEX6.issuperset(s):
        return None
    import socket

    try:
        return socket.inet_pton(socket.AF_INET6, s)
    except OSError:
        return None


def v4text(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def v6text(raw: bytes) -> str:
    """Canonical (ipaddress) text of a 16-byte address, as lvsd.ipvs.model keeps addresses."""
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


def _digits_dots(name: str) -> bool:
    # glibc's __nss_hostname_digits_dots: a name of digits and dots that inet_aton refused is
    # "not found" without asking any name service.
    return bool(name) and name[0].isdigit() and all(c.isdigit() or c == "." for c in name) and name[-1] != "."


def host_to_addr(name: str) -> int | None:
    """gethostbyname(name) (IPv4 only), first address; None if the name does not resolve."""
    if _digits_dots(name):
        return None
    import socket

    try:
        _, _, addrs = socket.gethostbyname_ex(name)
    except (OSError, UnicodeError, ValueError):
        return None
    if not addrs:
        return None
    v = inet_pton4(addrs[0])
    return v


def service_to_port(name: str, proto: int) -> int:
    """getservbyname(name, proto) -> port, or -1."""
    pname = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if pname is None:
        return -1
    import socket

    try:
        return socket.getservbyname(name, pname)
    except (OSError, UnicodeError, ValueError):
        return -1


SERVICE_ADDR = 1
SERVICE_PORT = 2


def parse_service(buf: str | None, protocol: int) -> tuple[int, int, str, int]:
    """ipvsadm's parse_service(): (result bits, af, canonical address text, port or -1 if absent)."""
    if buf is None or all("0" <= c <= "9" for c in buf):
        return 0, 0, "", -1
    port_s = None
    if buf[0] == "[":
        body = buf[1:]
        close = body.find("]")
        if close < 0:
            return 0, 0, "", -1
        if body[close + 1 : close + 2] != ":":
            return 0, 0, "", -1
        port_s = body[close + 2 :]
        buf = body[:close]
    raw6 = inet_pton6(buf)
    if raw6 is not None:
        af, text = AF_INET6, v6text(raw6)
    else:
        colon = buf.rfind(":")
        if colon >= 0:
            port_s = buf[colon + 1 :]
            buf = buf[:colon]
        else:
            port_s = None  # "[1.2.3.4]:80": ipvsadm looks for the port inside the brackets only
        v = inet_aton(buf)
        if v is None:
            v = host_to_addr(buf)
            if v is None:
                return 0, 0, "", -1
        af, text = AF_INET, v4text(v)
    if port_s is None:
        return SERVICE_ADDR, af, text, -1
    port = string_to_number(port_s, 0, 65535)
    if port == -1:
        port = service_to_port(port_s, protocol)
        if port == -1:
            return 0, 0, "", -1
    return SERVICE_ADDR | SERVICE_PORT, af, text, port


def parse_timeout(buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return PERSISTENT_TIMEOUT
    v = string_to_number(buf, lo, hi)
    if v == -1:
        raise Fail(2, f"invalid timeout value `{buf}' specified")
    return v


def parse_fwmark(buf: str) -> int:
    v = strtol10(buf)
    if v is None or v == 0 or v < 0 or v > 0xFFFFFFFF:
        raise Fail(2, f"invalid fwmark value `{buf}' specified")
    return v


def parse_sched_flags(sched: str, arg: str) -> int:
    sched = sched or DEF_SCHED
    flags = 0
    tokens = [t for t in arg.split(",") if t]
    if not tokens:
        # ipvsadm dereferences NULL here (it crashes); say what is wrong instead
        raise Fail(2, f"invalid scheduler flag `{arg}'")
    for flag in tokens:
        if flag == "flag-1":
            flags |= SVC_F_SCHED1
        elif flag == "flag-2":
            flags |= SVC_F_SCHED2
        elif flag == "flag-3":
            flags |= SVC_F_SCHED3
        elif flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            flags |= SVC_F_SCHED1 if flag.endswith("fallback") else SVC_F_SCHED2
            if sched != flag[:2]:
                raise Fail(2, f"incompatible scheduler flag `{flag}'")
        else:
            raise Fail(2, f"invalid scheduler flag `{flag}'")
    return flags


# --- the parsed command line ---------------------------------------------------------------------


class Command:
    """ipvsadm's struct ipvs_command_entry plus the options bitmask and the print format."""

    __slots__ = (
        "cmd", "options", "fmt", "af", "protocol", "addr", "port", "fwmark", "sched", "flags", "timeout",
        "netmask", "pe", "d_af", "d_addr", "d_port", "fwd", "weight", "u_threshold", "l_threshold",
        "tun_type", "tun_port", "tun_flags", "t_tcp", "t_fin", "t_udp", "state", "mcast_ifn", "syncid",
        "sync_maxlen", "mcast_group", "mcast_port", "mcast_ttl", "json", "atomic",
    )  # fmt: skip

    def __init__(self) -> None:
        self.cmd = CMD_NONE
        self.options = 0
        self.fmt = 0
        self.af = 0
        self.protocol = 0
        self.addr = ""  # canonical text; "" = all-zero address
        self.port = 0
        self.fwmark = 0
        self.sched = ""
        self.flags = 0
        self.timeout = 0
        self.netmask = 0xFFFFFFFF
        self.pe = ""
        self.d_af = 0
        self.d_addr = ""
        self.d_port = 0
        self.fwd = FWD_ROUTE
        self.weight = 1
        self.u_threshold = 0
        self.l_threshold = 0
        self.tun_type = 0
        self.tun_port = 0
        self.tun_flags = 0
        self.t_tcp = self.t_fin = self.t_udp = 0
        self.state = 0
        self.mcast_ifn = ""
        self.syncid = 0
        self.sync_maxlen = 0
        self.mcast_group = ""
        self.mcast_port = 0
        self.mcast_ttl = 0
        self.json = False
        self.atomic = False

    def has(self, optc: int) -> bool:
        return bool(self.options >> optc & 1)


def _set_option(ce: Command, optc: int) -> None:
    bit = 1 << optc
    if ce.options & bit:
        raise Fail(2, f"multiple '{OPTNAMES[optc]}' options specified")
    ce.options |= bit


_FIRST = {
    "A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST, "d": CMD_DELDEST,
    "C": CMD_FLUSH, "L": CMD_LIST, "l": CMD_LIST, "Z": CMD_ZERO, "set": CMD_TIMEOUT, "R": CMD_RESTORE,
    "S": CMD_SAVE,
}  # fmt: skip
_PROTO = {"t": IPPROTO_TCP, "u": IPPROTO_UDP, "sctp-service": IPPROTO_SCTP}
_FMT_OPT = {
    "timeout": (OPTC_TIMEOUT, 0), "daemon": (OPTC_DAEMON, 0), "stats": (OPTC_STATS, FMT_STATS),
    "rate": (OPTC_RATE, FMT_RATE), "thresholds": (OPTC_THRESHOLDS, FMT_THRESHOLDS),
    "persistent-conn": (OPTC_PERSISTENTCONN, FMT_PERSISTENTCONN), "nosort": (OPTC_NOSORT, FMT_NOSORT),
    "X": (OPTC_EXACT, FMT_EXACT), "tun-info": (OPTC_TUN_INFO, FMT_TUN_INFO), "c": (OPTC_CONNECTION, 0),
    "n": (OPTC_NUMERIC, FMT_NUMERIC), "tun-nocsum": (OPTC_TUN_NOCSUM, 0),
}  # fmt: skip


def usage_text(prog: str) -> str:
    """ipvsadm -h, with the program name it was invoked as."""
    p = prog
    return (
        f"{VERSION_LINE}\n"
        "Usage:\n"
        f"  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]\n"
        f"  {p} -D virtual-service\n"
        f"  {p} -C\n"
        f"  {p} -R\n"
        f"  {p} -S [-n]\n"
        f"  {p} -a|e virtual-service -r server-address [options]\n"
        f"  {p} -d virtual-service -r server-address\n"
        f"  {p} -L|l [virtual-service] [options]\n"
        f"  {p} -Z [virtual-service]\n"
        f"  {p} --set tcp tcpfin udp\n"
        f"  {p} --start-daemon {{master|backup}} [daemon-options]\n"
        f"  {p} --stop-daemon {{master|backup}}\n"
        f"  {p} -h\n\n"
        "Commands:\n"
        "Either long or short options are allowed.\n"
        "  --add-service     -A        add virtual service with options\n"
        "  --edit-service    -E        edit virtual service with options\n"
        "  --delete-service  -D        delete virtual service\n"
        "  --clear           -C        clear the whole table\n"
        "  --restore         -R        restore rules from stdin\n"
        "  --save            -S        save rules to stdout\n"
        "  --add-server      -a        add real server with options\n"
        "  --edit-server     -e        edit real server with options\n"
        "  --delete-server   -d        delete real server\n"
        "  --list            -L|-l     list the table\n"
        "  --zero            -Z        zero counters in a service or all services\n"
        "  --set tcp tcpfin udp        set connection timeout values\n"
        "  --start-daemon              start connection sync daemon\n"
        "  --stop-daemon               stop connection sync daemon\n"
        "  --help            -h        display this help message\n\n"
        "virtual-service:\n"
        "  --tcp-service|-t  service-address   service-address is host[:port]\n"
        "  --udp-service|-u  service-address   service-address is host[:port]\n"
        "  --sctp-service    service-address   service-address is host[:port]\n"
        "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n"
        "\n"
        "Options:\n"
        "  --ipv6         -6                   fwmark entry uses IPv6\n"
        "  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n"
        "                                      the default scheduler is wlc.\n"
        "  --pe            engine              alternate persistence engine may be sip,\n"
        "                                      not set by default.\n"
        "  --persistent   -p [timeout]         persistent service\n"
        "  --netmask      -M netmask           persistent granularity mask\n"
        "  --real-server  -r server-address    server-address is host (and port)\n"
        "  --gatewaying   -g                   gatewaying (direct routing) (default)\n"
        "  --ipip         -i                   ipip encapsulation (tunneling)\n"
        "  --masquerading -m                   masquerading (NAT)\n"
        "  --tun-type      type                one of ipip|gue|gre,\n"
        "                                      the default tunnel type is ipip.\n"
        "  --tun-port      port                tunnel destination port\n"
        "  --tun-nocsum                        tunnel encapsulation without checksum\n"
        "  --tun-csum                          tunnel encapsulation with checksum\n"
        "  --tun-remcsum                       tunnel encapsulation with remote checksum\n"
        "  --weight       -w weight            capacity of real server\n"
        "  --u-threshold  -x uthreshold        upper threshold of connections\n"
        "  --l-threshold  -y lthreshold        lower threshold of connections\n"
        "  --connection   -c                   output of current IPVS connections\n"
        "  --timeout                           output of timeout (tcp tcpfin udp)\n"
        "  --daemon                            output of daemon information\n"
        "  --stats                             output of statistics information\n"
        "  --rate                              output of rate information\n"
        "  --exact                             expand numbers (display exact values)\n"
        "  --thresholds                        output of thresholds information\n"
        "  --persistent-conn                   output of persistent connection info\n"
        "  --tun-info                          output of tunnel information\n"
        "  --nosort                            disable sorting output of service/server entries\n"
        "  --sort                              does nothing, for backwards compatibility\n"
        "  --ops          -o                   one-packet scheduling\n"
        "  --numeric      -n                   numeric output of addresses and ports\n"
        "  --sched-flags  -b flags             scheduler flags (comma-separated)\n"
        "Daemon Options:\n"
        "  --syncid sid                        syncid for connection sync (default=255)\n"
        "  --sync-maxlen length                Max sync message length (default=1472)\n"
        "  --mcast-interface interface         multicast interface for connection sync\n"
        "  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n"
        "  --mcast-port port                   UDP port (default=8848)\n"
        "  --mcast-ttl ttl                     Multicast TTL (default=1)\n"
    )


def parse_options(args: list[str], prog: str, posix: bool = False) -> Command:
    """ipvsadm's parse_options() and process_options() checks: a Command ready to run, or Fail."""
    ce = Command()
    po = Popt(args, posix)
    c = po.get()
    if not isinstance(c, str):
        raise tryhelp(prog)
    arg = po.arg
    if c in _FIRST:
        ce.cmd = _FIRST[c]
    elif c in ("start-daemon", "stop-daemon"):
        ce.cmd = CMD_STARTDAEMON if c == "start-daemon" else CMD_STOPDAEMON
        if arg == "master":
            ce.state = 1
        elif arg == "backup":
            ce.state = 2
        elif c == "start-daemon":
            raise Fail(2, "illegal start-daemon parameter specified")
        else:
            raise Fail(2, "illegal start_daemon specified")
    elif c == "h":
        raise Usage(usage_text(prog))
    elif c == "v":
        raise Usage(VERSION_LINE + "\n")
    else:
        raise tryhelp(prog)

    sched_flags_arg = ""
    while True:
        c = po.get()
        if not isinstance(c, str):
            break
        arg = po.arg
        if c in _PROTO:
            _set_option(ce, OPTC_SERVICE)
            ce.protocol = _PROTO[c]
            res, af, addr, port = parse_service(arg, ce.protocol)
            if not res & SERVICE_ADDR:
                raise Fail(2, "illegal virtual server address[:port] specified")
            ce.af, ce.addr = af, addr
            if af == AF_INET6:
                ce.netmask = 128
            if port >= 0:
                ce.port = port
        elif c == "f":
            _set_option(ce, OPTC_SERVICE)
            ce.af = AF_INET
            ce.protocol = IPPROTO_TCP
            ce.fwmark = parse_fwmark(arg)  # type: ignore[arg-type]  # a required argument: popt gave one
        elif c == "s":
            _set_option(ce, OPTC_SCHEDULER)
            ce.sched = _cstr(arg, 15)
        elif c == "p":
            _set_option(ce, OPTC_PERSISTENT)
            ce.flags |= SVC_F_PERSISTENT
            ce.timeout = parse_timeout(arg, 1, MAX_TIMEOUT)
        elif c == "M":
            _set_option(ce, OPTC_NETMASK)
            if ce.af != AF_INET6:
                v = inet_aton(arg)  # type: ignore[arg-type]  # a required argument: popt gave one
                if v is None:
                    v = host_to_addr(arg)  # type: ignore[arg-type]  # a required argument: popt gave one
                    if v is None:
                        raise Fail(2, "illegal virtual server persistent mask specified")
                ce.netmask = v
            else:
                v = atoi(arg)  # type: ignore[arg-type]  # a required argument: popt gave one
                ce.netmask = v
                if v < 1 or v > 128:
                    raise Fail(2, "illegal ipv6 netmask specified")
        elif c == "r":
            _set_option(ce, OPTC_SERVER)
            res, af, addr, port = parse_service(arg, ce.protocol)
            if not res & SERVICE_ADDR:
                raise Fail(2, "illegal real server address[:port] specified")
            ce.d_af, ce.d_addr = af, addr
            ce.d_port = port if port >= 0 else ce.port
        elif c in ("i", "g", "m"):
            _set_option(ce, OPTC_FORWARD)
            ce.fwd = FWD_TUNNEL if c == "i" else FWD_ROUTE if c == "g" else FWD_MASQ
        elif c == "w":
            _set_option(ce, OPTC_WEIGHT)
            ce.weight = string_to_number(arg, 0, WEIGHT_MAX)
            if ce.weight == -1:
                raise Fail(2, "illegal weight specified")
        elif c == "x":
            _set_option(ce, OPTC_UTHRESHOLD)
            ce.u_threshold = string_to_number(arg, 0, INT_MAX)
            if ce.u_threshold == -1:
                raise Fail(2, "illegal u_threshold specified")
        elif c == "y":
            _set_option(ce, OPTC_LTHRESHOLD)
            ce.l_threshold = string_to_number(arg, 0, INT_MAX)
            if ce.l_threshold == -1:
                raise Fail(2, "illegal l_threshold specified")
        elif c in _FMT_OPT:
            optc, fmt = _FMT_OPT[c]
            _set_option(ce, optc)
            ce.fmt |= fmt
        elif c == "mcast-interface":
            _set_option(ce, OPTC_MCAST)
            ce.mcast_ifn = _cstr(arg, 15)
        elif c == "syncid":
            _set_option(ce, OPTC_SYNCID)
            ce.syncid = string_to_number(arg, 0, 255)
            if ce.syncid == -1:
                raise Fail(2, "illegal syncid specified")
        elif c == "sort":
            pass
        elif c == "6":
            if ce.fwmark:
                ce.af = AF_INET6
                ce.netmask = 128
            else:
                raise Fail(2, "-6 used before -f\n")
        elif c == "o":
            _set_option(ce, OPTC_ONEPACKET)
            ce.flags |= SVC_F_ONEPACKET
        elif c == "pe":
            _set_option(ce, OPTC_PERSISTENCE_ENGINE)
            ce.pe = _cstr(arg, 15)
        elif c == "b":
            _set_option(ce, OPTC_SCHED_FLAGS)
            sched_flags_arg = arg[:127]  # type: ignore[index]  # a required argument: popt gave one
        elif c == "mcast-group":
            _set_option(ce, OPTC_MCAST_GROUP)
            a = arg or ""
            if ":" in a:
                raw = inet_pton6(a)
                if raw is None or raw[0] != 0xFF:
                    raise Fail(2, f"invalid IPv6 mcast-group `{a}'")
                ce.mcast_group = v6text(raw)
            else:
                v = inet_pton4(a)
                if v is None or v >> 28 != 0xE:
                    raise Fail(2, f"invalid IPv4 mcast-group `{a}'")
                ce.mcast_group = v4text(v)
        elif c == "mcast-port":
            _set_option(ce, OPTC_MCAST_PORT)
            ce.mcast_port = string_to_number(arg, 1, 65535)
            if ce.mcast_port == -1:
                raise Fail(2, "illegal mcast-port specified")
        elif c == "mcast-ttl":
            _set_option(ce, OPTC_MCAST_TTL)
            ce.mcast_ttl = string_to_number(arg, 1, 255)
            if ce.mcast_ttl == -1:
                raise Fail(2, "illegal mcast-ttl specified")
        elif c == "sync-maxlen":
            _set_option(ce, OPTC_SYNC_MAXLEN)
            ce.sync_maxlen = string_to_number(arg, 1, 65535 - 20 - 8)
            if ce.sync_maxlen == -1:
                raise Fail(2, "illegal sync-maxlen specified")
        elif c == "tun-type":
            _set_option(ce, OPTC_TUN_TYPE)
            if arg not in TUNNAMES:
                raise Fail(2, "illegal tunnel type specified")
            ce.tun_type = TUNNAMES.index(arg)
        elif c == "tun-port":
            _set_option(ce, OPTC_TUN_PORT)
            ce.tun_port = string_to_number(arg, 1, 65535)
            if ce.tun_port == -1:
                raise Fail(2, "illegal tunnel port specified")
        elif c == "tun-csum":
            _set_option(ce, OPTC_TUN_CSUM)
            ce.tun_flags |= 1
        elif c == "tun-remcsum":
            _set_option(ce, OPTC_TUN_REMCSUM)
            ce.tun_flags |= 2
        else:
            raise Fail(2, f"invalid option `{po.bad_option()}'")
    if c != POPT_END:
        raise Fail(255, f"{po.bad_option()}: {POPT_STRERROR[c]}")

    if ce.cmd == CMD_TIMEOUT:
        a0, a1, a2 = po.get_arg(), None, None
        if a0 is not None:
            a1 = po.get_arg()
            if a1 is not None:
                a2 = po.get_arg()
        if a2 is None:
            raise Fail(2, "--set option requires 3 timeout values")
        ce.t_tcp = parse_timeout(a0, 0, MAX_TIMEOUT)
        ce.t_fin = parse_timeout(a1, 0, MAX_TIMEOUT)
        ce.t_udp = parse_timeout(a2, 0, MAX_TIMEOUT)
    extra = po.get_arg()
    if extra is not None:
        raise Fail(2, f"unexpected argument {extra}")
    if sched_flags_arg:
        ce.flags &= ~SVC_F_SCHED_MASK
        ce.flags |= parse_sched_flags(ce.sched, sched_flags_arg)
    _check(ce)
    return ce


def _cstr(s: str | None, n: int) -> str:
    """strncpy into a char[n+1]: at most n bytes."""
    if s is None:
        return ""
    b = s.encode("utf-8", "surrogateescape")
    if len(b) <= n:
        return s
    return b[:n].decode("utf-8", "surrogateescape")


_ALL_OPTS = tuple(range(34))


def _check_matrix(options: int, row: str | tuple[str, ...], optcs: tuple[int, ...], what: str) -> None:
    """ipvsadm's legality matrices (per command, per tunnel type): '+' the option is required,
    'x' it is illegal, '1' at most one of the options so marked; ``what`` names the row."""
    last = -1
    for j, k in enumerate(optcs):
        m = row[j]
        if not options >> k & 1:
            if m == "+":
                raise Fail(2, f"You need to supply the '{OPTNAMES[k]}' option for the {what}")
        elif m == "x":
            raise Fail(2, f"Illegal '{OPTNAMES[k]}' option with the {what}")
        elif m == "1":
            if last < 0:
                last = k
            else:
                raise Fail(2, f"The option '{OPTNAMES[k]}' conflicts with the '{OPTNAMES[last]}' option in the {what}")


def _check(ce: Command) -> None:
    """generic_opt_check() and the per-command checks of process_options()."""
    _check_matrix(ce.options, MATRIX[ce.cmd - 1], _ALL_OPTS, f"'{CMDNAMES[ce.cmd - 1]}' command")
    cmd = ce.cmd
    if cmd in (CMD_ADD, CMD_EDIT):
        if not ce.fwmark and not ce.port and not ce.flags & SVC_F_PERSISTENT:
            raise Fail(2, "Zero port specified for non-persistent service")
        if ce.flags & SVC_F_ONEPACKET and not ce.fwmark and ce.protocol != IPPROTO_UDP:
            raise Fail(2, "One-Packet Scheduling is only for UDP virtual services")
        if not ce.sched:
            ce.sched = DEF_SCHED
    if cmd == CMD_STARTDAEMON and not ce.mcast_ifn:
        ce.mcast_ifn = DEF_MCAST_IFN
    if cmd in (CMD_ADDDEST, CMD_EDITDEST):
        fwd = ce.fwd
        if not ce.fwmark and fwd in (FWD_TUNNEL, FWD_ROUTE):
            ce.d_port = ce.port
        if ce.d_af != ce.af and fwd != FWD_TUNNEL:
            raise Fail(2, "Different address family is allowed only for tunneling servers")
        tun_bits = 0
        for optc in TUNOPTS + (OPTC_TUN_TYPE,):
            tun_bits |= ce.options & (1 << optc)
        if tun_bits and fwd != FWD_TUNNEL:
            raise Fail(2, "Tunnel options conflict with forward method")
        _check_matrix(ce.options, TUN_MATRIX[ce.tun_type], TUNOPTS, f"'{TUNNAMES[ce.tun_type]}' tunnel type")
    if cmd == CMD_LIST:
        o = ce.options
        b = lambda optc: o >> optc & 1  # noqa: E731
        if ((b(OPTC_CONNECTION) or b(OPTC_TIMEOUT) or b(OPTC_DAEMON)) and (b(OPTC_STATS) or b(OPTC_RATE) or b(OPTC_THRESHOLDS))) or (
            (b(OPTC_TIMEOUT) or b(OPTC_DAEMON)) and b(OPTC_PERSISTENTCONN)
        ):
            raise Fail(2, "options conflicts in the list command")
