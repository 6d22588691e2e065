"""A lean generic-netlink client: struct-based codec and one NETLINK_GENERIC socket.

Why our own: the IPVS path must start fast and push thousands of operations per second
(see docs/performance.md, "IPVS over netlink"). This module is stdlib-only (socket, struct,
errno, os) and knows nothing about IPVS: it resolves a family by name, encodes and decodes
attributes (nested included), runs requests, dumps, and *batches* of many requests written
with one sendmsg() whose outcome is reported per message.

Batching rules (the kernel processes every message of a datagram in order, synchronously,
inside our sendmsg(), and carries on after a failed one):

* no request asks for an ACK, so a request answers only if it fails (an NLMSG_ERROR carrying
  its sequence number); each chunk ends with a barrier, an NLMSG_NOOP with NLM_F_ACK that the
  kernel acknowledges without handing it to any family. Seeing the barrier's ACK proves that
  every earlier error is already in our receive queue. (A real request cannot be the closing
  one: a doit that returns -EINTR, as IPVS_CMD_DEL_DAEMON does on 6.1 when the sync thread
  had not run yet, gets no reply at all even with NLM_F_ACK, and the wait would never end.)
* a chunk holds at most as many messages as their worst-case replies fit into the receive
  buffer, so replies are never dropped (no ENOBUFS), and at most as many bytes as the send
  buffer accepts in one datagram.
* if the kernel still reports an overrun (ENOBUFS), messages whose outcome cannot be known
  are reported as such (errno ENOBUFS), never silently as applied.
"""

import _socket  # not `socket`: its enum set-up costs ~0.1 s of start-up under emulation
import errno as _errno
import os
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: see above)
if TYPE_CHECKING:
    from collections.abc import Sequence

# --- constants (linux/netlink.h, linux/genetlink.h) ---------------------------------------------

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_CAPPED = 0x100  # on an NLMSG_ERROR: the request was not echoed
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ack attributes follow

NLMSGERR_ATTR_MSG = 1

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NLMSG_HDRLEN = 16
GENL_HDRLEN = 4
HDRLEN = NLMSG_HDRLEN + GENL_HDRLEN

# --- sizing -------------------------------------------------------------------------------------

#: Receive/send buffers we ask for (SO_*BUFFORCE as root, else capped by net.core.[rw]mem_max).
DEFAULT_RCVBUF = 2 << 20  # the kernel doubles it: room for 2,730 worst-case replies
DEFAULT_SNDBUF = 512 << 10  # doubled by the kernel: 1 MiB per datagram
#: Worst-case memory one reply datagram (an error or the barrier's ACK) costs in our receive queue
#: (skb truesize): measured 768 bytes on x86-64 Linux 6.1 (tests/kernel/test_netlink.py);
#: doubled for headroom and other kernels.
REPLY_TRUESIZE = 1536
#: Upper bound of messages per sendmsg(): bounds how long one datagram holds the kernel's
#: genetlink lock, whatever the buffers allow.
MAX_BATCH = 2048
#: Receive length: one page (at most 8 KiB). The kernel sizes every dump datagram to the largest
#: length this socket has ever received with (capped at 32 KiB), never below NLMSG_GOODSIZE (a
#: page, at most 8 KiB, less overhead), so a page-sized receive keeps dump skbs page-sized: 1,000
#: GET_DEST dumps took 0.21 s in the VM instead of 0.38-0.41 s with 64 KiB receives
#: (docs/performance.md). Other replies (ACKs, errors echoing one request, GET_INFO, family
#: lookup) are far smaller; a larger datagram is refused as EMSGSIZE, never half-parsed.
RECV_BUFSIZE = max(4096, min(os.sysconf("SC_PAGE_SIZE"), 8192))

_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=IHHIIBBH")
_NLA = struct.Struct("=HH")
_U8 = struct.Struct("=B")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_I32 = struct.Struct("=i")

_nlmsghdr_unpack = _NLMSGHDR.unpack_from
_MSG_TRUNC = int(_socket.MSG_TRUNC)  # a plain int: `&` on the IntFlag member runs Python code
_nla_unpack = _NLA.unpack_from
_nla_pack = _NLA.pack


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno, and the extended-ACK text if any)."""

    errno: int  # OSError's is int | None; OSError(err, text) always sets it to err

    def __init__(self, err: int, message: str | None = None) -> None:
        self.kernel_message = message
        text = os.strerror(err)
        if message:
            text = f"{text} ({message})"
        super().__init__(err, text)


class FamilyNotFound(NetlinkError):
    """CTRL_CMD_GETFAMILY found no family of that name (module not loaded / not built)."""


# --- attribute codec ----------------------------------------------------------------------------


def nla(atype: int, payload: bytes) -> bytes:
    """One attribute: header + payload, padded to 4 bytes."""
    n = 4 + len(payload)
    pad = -n & 3
    return _nla_pack(n, atype) + payload + (b"\0" * pad if pad else b"")


def nla_u8(atype: int, v: int) -> bytes:
    return _nla_pack(5, atype) + _U8.pack(v) + b"\0\0\0"


def nla_u16(atype: int, v: int) -> bytes:
    return _nla_pack(6, atype) + _U16.pack(v) + b"\0\0"


def nla_be16(atype: int, v: int) -> bytes:
    return _nla_pack(6, atype) + _BE16.pack(v) + b"\0\0"


def nla_u32(atype: int, v: int) -> bytes:
    return _nla_pack(8, atype) + _U32.pack(v)


def nla_be32(atype: int, v: int) -> bytes:
    return _nla_pack(8, atype) + _BE32.pack(v)


def nla_u64(atype: int, v: int) -> bytes:
    return _nla_pack(12, atype) + _U64.pack(v)


def nla_str(atype: int, s: str) -> bytes:
    """A NUL-terminated string attribute (NLA_NUL_STRING / nla_put_string)."""
    return nla(atype, s.encode() + b"\0")


def nla_nest(atype: int, *parts: bytes) -> bytes:
    """A nested attribute made of already-encoded attributes (no NLA_F_NESTED, like libnl)."""
    body = b"".join(parts)
    return _nla_pack(4 + len(body), atype) + body


def parse_attrs(buf: bytes, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attributes of buf[start:end] as {type: payload}; flags bits are masked off, a repeated
    type keeps its last value, a truncated tail is ignored (as the kernel's liberal parser)."""
    out: dict[int, bytes] = {}
    if end is None:
        end = len(buf)
    pos = start
    while pos + 4 <= end:
        n, t = _nla_unpack(buf, pos)
        if n < 4 or pos + n > end:
            break
        out[t & NLA_TYPE_MASK] = buf[pos + 4 : pos + n]
        pos += (n + 3) & ~3
    return out


def get_u8(b: bytes) -> int:
    return b[0]


# struct's unpack returns Any: each getter names its int in an annotated local (free at run
# time, where a cast() would be a call).
def get_u16(b: bytes) -> int:
    v: int = _U16.unpack_from(b)[0]
    return v


def get_be16(b: bytes) -> int:
    v: int = _BE16.unpack_from(b)[0]
    return v


def get_u32(b: bytes) -> int:
    v: int = _U32.unpack_from(b)[0]
    return v


def get_be32(b: bytes) -> int:
    v: int = _BE32.unpack_from(b)[0]
    return v


def get_u64(b: bytes) -> int:
    v: int = _U64.unpack_from(b)[0]
    return v


def get_uint(b: bytes) -> int:
    """An unsigned integer of whatever width the kernel sent (u8/u16/u32/u64)."""
    return int.from_bytes(b, "little" if _LITTLE else "big")


def get_str(b: bytes) -> str:
    """A NUL-terminated (or not) string attribute."""
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode(errors="replace")


_LITTLE = struct.pack("=H", 1) == b"\x01\x00"


def encode_msg(family: int, flags: int, seq: int, cmd: int, version: int, payload: bytes) -> bytes:
    """One generic-netlink message (nlmsghdr + genlmsghdr + attributes)."""
    return _GENLHDR.pack(HDRLEN + len(payload), family, flags, seq, 0, cmd, version, 0) + payload


def parse_error(data: bytes, pos: int, msglen: int, flags: int) -> tuple[int, int, str | None]:
    """Decode an NLMSG_ERROR at data[pos:pos+msglen]: (errno >= 0, seq of the request, ext-ack text)."""
    body = pos + NLMSG_HDRLEN
    code = _I32.unpack_from(data, body)[0]
    req_seq = _NLMSGHDR.unpack_from(data, body + 4)[3]
    text = None
    if flags & NLM_F_ACK_TLVS:
        # the echoed request is only its header when capped, else the whole request
        if flags & NLM_F_CAPPED:
            tlv = body + 4 + NLMSG_HDRLEN
        else:
            tlv = body + 4 + _nlmsghdr_unpack(data, body + 4)[0]
        tlv = (tlv + 3) & ~3
        msg = parse_attrs(data, tlv, pos + msglen).get(NLMSGERR_ATTR_MSG)
        if msg:
            text = get_str(msg)
    return -code, req_seq, text


# --- the socket ---------------------------------------------------------------------------------


class GenlSocket:
    """One generic-netlink socket bound to one family (resolved by name at construction).

    Raises FamilyNotFound if the kernel has no such family, PermissionError/OSError if the
    socket cannot be made. ``timeout`` bounds every wait for the kernel (SO_RCVTIMEO).
    """

    def __init__(
        self,
        family: str,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        sndbuf: int = DEFAULT_SNDBUF,
        timeout: float = 30.0,
        max_batch: int = MAX_BATCH,
        recv_size: int = RECV_BUFSIZE,
    ) -> None:
        self.sock = s = _socket.socket(
            _socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_GENERIC
        )
        try:
            self.rcvbuf = _set_buf(s, SO_RCVBUFFORCE, _socket.SO_RCVBUF, rcvbuf)
            self.sndbuf = _set_buf(s, SO_SNDBUFFORCE, _socket.SO_SNDBUF, sndbuf)
            self.capped_acks = _try_opt(s, NETLINK_CAP_ACK)
            _try_opt(s, NETLINK_EXT_ACK)
            sec = int(timeout)
            tv = struct.pack("@ll", sec, int((timeout - sec) * 1e6))
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, tv)
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)
            s.bind((0, 0))
            self._buf = bytearray(max(recv_size, 4096))
            self._view = memoryview(self._buf)
            self.seq = int.from_bytes(os.urandom(2), "little") << 8
            self.max_batch = max_batch
            self.family_id = GENL_ID_CTRL
            self.version = 1
            self.family_id, self.version, self.maxattr = self._resolve(family)
        except BaseException:
            s.close()
            raise

    # --- plumbing ---

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def _recv(self) -> bytes:
        """One datagram from the kernel (a timeout becomes ETIMEDOUT)."""
        try:
            n, _anc, flags, _addr = self.sock.recvmsg_into([self._buf])
        except BlockingIOError:
            raise TimeoutError(
                _errno.ETIMEDOUT, "no answer from the kernel (netlink receive timed out)"
            ) from None
        if flags & _MSG_TRUNC:  # cannot happen (see RECV_BUFSIZE); never parse half a datagram
            raise OSError(_errno.EMSGSIZE, "netlink datagram larger than the receive buffer")
        return bytes(self._view[:n])

    def _resolve(self, name: str) -> tuple[int, int, int]:
        try:
            replies = self.request(CTRL_CMD_GETFAMILY, nla_str(CTRL_ATTR_FAMILY_NAME, name))
        except NetlinkError as e:
            if e.errno == _errno.ENOENT:
                raise FamilyNotFound(e.errno, f"no generic netlink family {name!r}") from None
            raise
        for payload in replies:
            a = parse_attrs(payload)
            if CTRL_ATTR_FAMILY_ID in a:
                return (
                    get_u16(a[CTRL_ATTR_FAMILY_ID]),
                    get_u32(a[CTRL_ATTR_VERSION]) if CTRL_ATTR_VERSION in a else 1,
                    get_u32(a[CTRL_ATTR_MAXATTR]) if CTRL_ATTR_MAXATTR in a else 0,
                )
        raise FamilyNotFound(_errno.ENOENT, f"no generic netlink family {name!r}")

    # --- one request, one dump ---

    def request(self, cmd: int, payload: bytes = b"") -> list[bytes]:
        """Send one request with NLM_F_ACK; return the attribute payloads of its replies.
        Raises NetlinkError if the kernel refuses it."""
        seq = self._next_seq()
        self.sock.send(encode_msg(self.family_id, NLM_F_REQUEST | NLM_F_ACK, seq, cmd, self.version, payload))
        out: list[bytes] = []
        while True:
            data = self._recv()
            pos, end = 0, len(data)
            while pos + NLMSG_HDRLEN <= end:
                ln, mtype, flags, mseq, _pid = _nlmsghdr_unpack(data, pos)
                if ln < NLMSG_HDRLEN:
                    break
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        err, _s, text = parse_error(data, pos, ln, flags)
                        if err:
                            raise NetlinkError(err, text)
                        return out
                    if mtype > NLMSG_OVERRUN:
                        out.append(data[pos + HDRLEN : pos + ln])
                pos += (ln + 3) & ~3

    def dump(self, cmd: int, payload: bytes = b"") -> list[bytes]:
        """Run an NLM_F_DUMP request; return the attribute payloads of every multipart reply."""
        seq = self.seq = (self.seq + 1) & 0xFFFFFFFF
        sock = self.sock
        sock.send(
            _GENLHDR.pack(
                HDRLEN + len(payload),
                self.family_id,
                NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                0,
                cmd,
                self.version,
                0,
            )
            + payload
        )
        out: list[bytes] = []
        append = out.append
        buf = self._buf
        view = self._view
        recvmsg_into = sock.recvmsg_into
        unpack = _nlmsghdr_unpack
        bufs = [buf]
        while True:
            try:
                n, _anc, rflags, _addr = recvmsg_into(bufs)
            except BlockingIOError:
                raise TimeoutError(
                    _errno.ETIMEDOUT, "no answer from the kernel (netlink receive timed out)"
                ) from None
            if rflags & _MSG_TRUNC:
                raise OSError(_errno.EMSGSIZE, "netlink datagram larger than the receive buffer")
            pos = 0
            while pos + NLMSG_HDRLEN <= n:
                ln, mtype, flags, mseq, _pid = unpack(buf, pos)
                if ln < NLMSG_HDRLEN:
                    break
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        err, _s, text = parse_error(bytes(buf[pos : pos + ln]), 0, ln, flags)
                        raise NetlinkError(err or _errno.EIO, text)
                    if mtype > NLMSG_OVERRUN:
                        append(view[pos + HDRLEN : pos + ln].tobytes())
                pos += (ln + 3) & ~3

    # --- batches ---

    def batch_limits(self) -> tuple[int, int]:
        """(messages, bytes) one sendmsg() may carry without risking lost replies or EMSGSIZE."""
        msgs = max(1, min(self.max_batch, self.rcvbuf // REPLY_TRUESIZE - 1))  # - 1: the barrier
        nbytes = max(4096, self.sndbuf - 1024 - NLMSG_HDRLEN)
        return msgs, nbytes

    def batch(self, messages: "Sequence[tuple[int, bytes]]") -> list[NetlinkError | None]:
        """Send many (cmd, payload) requests, chunked into as few sendmsg() calls as the buffers
        allow. Returns one entry per message: None if the kernel applied it, else NetlinkError
        (errno ENOBUFS or ETIMEDOUT = the reply was lost, outcome unknown; ECANCELED = not sent
        because an earlier chunk got no answer)."""
        results: list[NetlinkError | None] = [None] * len(messages)
        i, n = 0, len(messages)
        max_msgs, max_bytes = self.batch_limits()
        fam, ver = self.family_id, self.version
        pack = _GENLHDR.pack
        while i < n:
            parts: list[bytes] = []
            size = 0
            first_seq = self.seq + 1
            j = i
            while j < n and j - i < max_msgs:
                cmd, payload = messages[j]
                ln = HDRLEN + len(payload)
                if parts and size + ln > max_bytes:
                    break
                parts.append(pack(ln, fam, NLM_F_REQUEST, (first_seq + j - i) & 0xFFFFFFFF, 0, cmd, ver, 0))
                parts.append(payload)
                size += ln
                j += 1
            count = j - i
            barrier_seq = (first_seq + count) & 0xFFFFFFFF
            parts.append(_NLMSGHDR.pack(NLMSG_HDRLEN, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier_seq, 0))
            self.seq = barrier_seq
            try:
                self.sock.sendmsg([b"".join(parts)])
            except OSError as e:  # nothing of this chunk reached the kernel: none of it, nor later, applied
                for k in range(i, n):
                    results[k] = NetlinkError(e.errno or _errno.EIO, f"not sent: {e.strerror or e}")
                return results
            try:
                lost = self._collect(first_seq, count, i, results)
            except OSError as e:
                # no answer (timeout) or a broken socket: what was not refused is of unknown outcome,
                # and nothing later is sent
                for k in range(i, j):
                    if results[k] is None:
                        results[k] = NetlinkError(
                            e.errno or _errno.EIO,
                            f"no answer from the kernel: outcome unknown ({e.strerror or e})",
                        )
                for k in range(j, n):
                    results[k] = NetlinkError(_errno.ECANCELED, "not sent: an earlier chunk got no answer")
                return results
            if lost:
                # replies were dropped: never send a chunk this large again on this socket
                max_msgs = max(1, max_msgs // 4)
                self.max_batch = max_msgs
            i = j
        return results

    def _collect(self, first_seq: int, count: int, base: int, results: list[NetlinkError | None]) -> bool:
        """Read the replies of one chunk (count requests, then the barrier) into results; return
        True if some were lost (ENOBUFS)."""
        highest = -1  # highest index of the chunk whose reply we have seen
        while True:
            try:
                data = self._recv()
            except OSError as e:
                if e.errno != _errno.ENOBUFS:
                    raise
                self._drain(first_seq, count, base, results, highest)
                return True
            highest, barrier = _scan_acks(data, len(data), first_seq, count, base, results, highest)
            if barrier:  # everything before the barrier has answered
                return False

    def _drain(
        self, first_seq: int, count: int, base: int, results: list[NetlinkError | None], highest: int
    ) -> None:
        """After an overrun: read what is still queued, then mark every message after the last
        one we heard of as unknown (the kernel drops every reply once the queue overflowed)."""
        while True:
            try:
                n = self.sock.recv_into(self._buf, 0, _socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == _errno.ENOBUFS:
                    continue
                raise
            highest, barrier = _scan_acks(bytes(self._view[:n]), n, first_seq, count, base, results, highest)
            if barrier:  # the barrier made it: nothing of this chunk was lost
                highest = count - 1
        # errors before `highest` were all queued before the overflow; later ones may be lost
        for k in range(highest + 1, count):
            if results[base + k] is None:
                results[base + k] = NetlinkError(
                    _errno.ENOBUFS, "reply lost in a receive-buffer overrun: outcome unknown"
                )

    def __enter__(self) -> "GenlSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan_acks(
    data: bytes, end: int, first_seq: int, count: int, base: int, results: list[NetlinkError | None], highest: int
) -> tuple[int, bool]:
    """Record the errors among one datagram's replies to a chunk of `count` requests starting at
    `first_seq`; return the highest request index heard of and whether the barrier's ACK came."""
    pos = 0
    barrier = False
    while pos + NLMSG_HDRLEN <= end:
        ln, mtype, flags, _mseq, _pid = _nlmsghdr_unpack(data, pos)
        if ln < NLMSG_HDRLEN:
            break
        if mtype == NLMSG_ERROR:
            err, rseq, text = parse_error(data, pos, ln, flags)
            k = (rseq - first_seq) & 0xFFFFFFFF
            if k < count:
                if err:
                    results[base + k] = NetlinkError(err, text)
                if k > highest:
                    highest = k
            elif k == count:
                barrier = True
        pos += (ln + 3) & ~3
    return highest, barrier


def _set_buf(s: _socket.socket, force_opt: int, opt: int, size: int) -> int:
    """Ask for a buffer of `size` (FORCE needs CAP_NET_ADMIN); return what the kernel granted."""
    try:
        s.setsockopt(_socket.SOL_SOCKET, force_opt, size)
    except OSError:
        try:
            s.setsockopt(_socket.SOL_SOCKET, opt, size)
        except OSError:
            pass
    return s.getsockopt(_socket.SOL_SOCKET, opt)


def _try_opt(s: _socket.socket, opt: int) -> bool:
    try:
        s.setsockopt(SOL_NETLINK, opt, 1)
        return True
    except OSError:
        return False
