"""Reader of the kernel's IPVS connection table, /proc/net/ip_vs_conn (netlink has no dump of it).

The kernel prints one line per entry (net/netfilter/ipvs/ip_vs_conn.c, ip_vs_conn_seq_show):

    Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
    TCP 0A010002 C7B4 0A010064 0050 0A02000B 0050 TIME_WAIT       119
    UDP 2001:0db8:0000:0000:0000:0000:0000:0002 D431 2001:...:0001 0035 0A000002 0035 UDP 299

IPv4 addresses are 8 hex digits in host order of the number (ntohl), IPv6 ones the full
%pI6 form; the destination may be of the other family (mixed-family tunnels); ports are
4 hex digits; Expires is in seconds; PEName/PEData (e.g. "sip <call-id>") only for entries
made by a persistence engine. Addresses come out in ipaddress' canonical text, as in model.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

from .model import Connection

PROC_PATH = "/proc/net/ip_vs_conn"


class ConnTableError(ValueError):
    """A line of the connection table could not be parsed (names the line)."""


def _addr(field: str) -> str:
    if ":" in field:  # %pI6: 8 groups of 4 hex digits
        raw = socket.inet_pton(socket.AF_INET6, field)
        text = socket.inet_ntop(socket.AF_INET6, raw)
        if "." in text:  # keep ipaddress' canonical form for v4-mapped addresses
            import ipaddress

            text = str(ipaddress.IPv6Address(raw))
        return text
    if len(field) != 8:
        raise ValueError(f"bad IPv4 field {field!r}")
    return socket.inet_ntop(socket.AF_INET, bytes.fromhex(field))


def parse_line(line: str) -> Connection:
    """One entry line -> Connection; ValueError if it is not one."""
    f = line.split(None, 10)
    if len(f) < 9:
        raise ValueError("too few fields")
    pe_name = pe_data = ""
    if len(f) > 9:
        pe_name = f[9]
        pe_data = f[10].strip() if len(f) > 10 else ""
    return Connection(
        protocol=f[0],
        client_addr=_addr(f[1]),
        client_port=int(f[2], 16),
        virtual_addr=_addr(f[3]),
        virtual_port=int(f[4], 16),
        dest_addr=_addr(f[5]),
        dest_port=int(f[6], 16),
        state=f[7],
        expires=int(f[8]),
        pe_name=pe_name,
        pe_data=pe_data,
    )


def parse(lines: Iterable[str], source: str = PROC_PATH) -> Iterator[Connection]:
    """Parse the table's lines (header included or not); ConnTableError names a bad line."""
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("Pro "):
            continue
        try:
            yield parse_line(line)
        except ValueError as e:
            raise ConnTableError(f"{source}:{n}: cannot parse connection entry ({e}): {line.rstrip()!r}") from None


def read_connections(path: str = PROC_PATH) -> list[Connection]:
    """Every entry of this network namespace's connection table; [] when IPVS is not loaded."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return list(parse(fh, path))
    except FileNotFoundError:
        return []
