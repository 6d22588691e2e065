"""Property tests: random operation sequences give the errors and the final table a small
reference model of the kernel predicts, op by op and as one batch, on either backend.

The reference below is deliberately written from the kernel's rules (ip_vs_genl_set_cmd, the
ip_vs_*_dest checks), not from memory.py, so it checks both backends independently."""

from __future__ import annotations

import errno
import ipaddress
import os

from contract_helpers import table_shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.ipvs.backend import BatchError, IPVSError, Op, OpKind
from lvsd.ipvs.model import (
    AF_INET6,
    SVC_F_PERSISTENT,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceKey,
    Timeouts,
    TunType,
)

NETLINK = os.environ.get("LVSD_TEST_BACKEND", "memory") == "netlink"
SETTINGS = settings(
    max_examples=25 if NETLINK else 250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

SVC_KEYS = [
    ServiceKey.inet("tcp", "10.0.0.1", 80),
    ServiceKey.inet("udp", "2001:db8::1", 53),
    ServiceKey.fwmark_key(3),
]
V4_DESTS = [DestKey.of("10.0.0.2", 80), DestKey.of("10.0.0.3", 80), DestKey.of("224.0.0.5", 80)]
V6_DESTS = [DestKey.of("2001:db8::2", 80), DestKey.of("ff02::5", 80)]
KNOWN_SCHEDULERS = {"rr", "wlc", "sh"}
INT_MAX_OVER_HZ = 0x7FFFFFFF // 250


@st.composite
def services(draw: st.DrawFn, key: ServiceKey) -> Service:
    persistent = draw(st.booleans())
    return Service(
        key,
        draw(st.sampled_from(["rr", "wlc", "sh", "nosuch"])),
        SVC_F_PERSISTENT if persistent else 0,
        draw(st.sampled_from([0, 60, 300])) if persistent else 0,
        netmask=draw(st.sampled_from([64, 128])) if key.af == AF_INET6 else -1,
    )


@st.composite
def dests(draw: st.DrawFn, key: ServiceKey) -> Destination:
    dk = draw(st.sampled_from(V4_DESTS + V6_DESTS))
    mixed = dk.af != key.af
    forward = Forward.TUNNEL if mixed else draw(st.sampled_from([Forward.MASQ, Forward.ROUTE, Forward.TUNNEL]))
    tun_type = draw(st.sampled_from([TunType.IPIP, TunType.GUE]))
    return Destination(
        dk,
        forward,
        draw(st.integers(0, 3)),
        draw(st.sampled_from([0, 5, 10, 2**31 - 1])),  # above INT_MAX: refused by validation
        draw(st.sampled_from([0, 5, 10])),
        tun_type,
        draw(st.sampled_from([0, 6080])),
    )


@st.composite
def ops(draw: st.DrawFn) -> Op:
    key = draw(st.sampled_from(SVC_KEYS))
    kind = draw(
        st.sampled_from(
            [OpKind.ADD_SERVICE] * 3
            + [OpKind.EDIT_SERVICE, OpKind.DEL_SERVICE]
            + [OpKind.ADD_DEST] * 4
            + [OpKind.EDIT_DEST] * 2
            + [OpKind.DEL_DEST] * 2
            + [OpKind.ZERO, OpKind.FLUSH, OpKind.SET_TIMEOUTS]
        )
    )
    if kind is OpKind.ADD_SERVICE:
        return Op.add_service(draw(services(key)))
    if kind is OpKind.EDIT_SERVICE:
        return Op.edit_service(draw(services(key)))
    if kind is OpKind.DEL_SERVICE:
        return Op.del_service(key)
    if kind is OpKind.ADD_DEST:
        return Op.add_dest(key, draw(dests(key)))
    if kind is OpKind.EDIT_DEST:
        return Op.edit_dest(key, draw(dests(key)))
    if kind is OpKind.DEL_DEST:
        return Op.del_dest(key, draw(dests(key)).key)
    if kind is OpKind.ZERO:
        return Op.zero(draw(st.sampled_from([None, key])))
    if kind is OpKind.SET_TIMEOUTS:
        t = st.sampled_from([0, 0, 7, 600, INT_MAX_OVER_HZ, INT_MAX_OVER_HZ + 1])
        return Op.set_timeouts(Timeouts(draw(t), draw(t), draw(t)))
    return Op.flush()


def _unicast(dk: DestKey) -> bool:
    ip = ipaddress.ip_address(dk.addr)
    return not (ip.is_multicast or ip.is_unspecified)


class Reference:
    """The kernel's rules for the ops above, nothing more."""

    def __init__(self) -> None:
        self.table: dict[ServiceKey, tuple[Service, list[Destination]]] = {}
        self.timeouts = Timeouts(900, 120, 300)

    def apply(self, op: Op) -> int | None:
        """Apply op; return the errno the kernel answers, None if it succeeds."""
        t = self.table
        k = op.kind
        if k is OpKind.FLUSH:
            t.clear()
            return None
        if k is OpKind.SET_TIMEOUTS:
            new = op.timeouts
            if max(new.tcp, new.tcp_fin, new.udp) > INT_MAX_OVER_HZ:
                return errno.EINVAL
            cur = self.timeouts
            self.timeouts = Timeouts(new.tcp or cur.tcp, new.tcp_fin or cur.tcp_fin, new.udp or cur.udp)
            return None
        key = op.key
        if k is OpKind.ZERO:
            return None if key is None or key in t else errno.ESRCH
        if k is OpKind.ADD_SERVICE:
            if key in t:
                return errno.EEXIST
            if op.service.scheduler not in KNOWN_SCHEDULERS:
                return errno.ENOENT
            t[key] = (op.service, [])
            return None
        if key not in t:
            return errno.ESRCH
        svc, ds = t[key]
        if k is OpKind.EDIT_SERVICE:
            if op.service.scheduler not in KNOWN_SCHEDULERS:
                return errno.ENOENT
            t[key] = (op.service, ds)
            return None
        if k is OpKind.DEL_SERVICE:
            del t[key]
            return None
        d = op.dest
        pos = next((i for i, x in enumerate(ds) if x.key == d.key), None)
        if k is OpKind.DEL_DEST:
            if pos is None:
                return errno.ENOENT
            del ds[pos]
            return None
        if d.l_threshold > d.u_threshold:
            return errno.ERANGE
        if d.u_threshold > 0x7FFFFFFF:
            return errno.EINVAL
        if d.tun_type == TunType.GUE and d.tun_port == 0:
            return errno.EINVAL
        if k is OpKind.ADD_DEST:
            if pos is not None:
                return errno.EEXIST
            if not _unicast(d.key):
                return errno.EINVAL
            ds.insert(0, d)  # the kernel adds at the head of the list
            return None
        if pos is None:
            return errno.ENOENT
        ds[pos] = d
        return None


@SETTINGS
@given(seq=st.lists(ops(), min_size=1, max_size=25))
def test_op_by_op_matches_the_reference(fresh, seq):
    backend = fresh()
    ref = Reference()
    for op in seq:
        expected = ref.apply(op)
        try:
            backend.apply([op])
        except BatchError as e:  # pragma: no cover - a batch of one must not raise this
            raise AssertionError(f"{op}: BatchError for a batch of one: {e}") from None
        except IPVSError as e:
            assert e.errno == expected, f"{op}: got errno {e.errno}, reference says {expected}"
        else:
            assert expected is None, f"{op}: applied, reference says errno {expected}"
    assert table_shape(backend) == ref.table
    assert backend.timeouts() == ref.timeouts


@SETTINGS
@given(seq=st.lists(ops(), min_size=2, max_size=25))
def test_one_batch_matches_the_reference(fresh, seq):
    backend = fresh()
    ref = Reference()
    outcomes = [(op, ref.apply(op)) for op in seq]
    want_applied = [op for op, err in outcomes if err is None]
    want_failed = [(op, err) for op, err in outcomes if err is not None]
    try:
        backend.apply(seq)
    except BatchError as e:
        assert e.applied == want_applied
        assert [(op, err.errno) for op, err in e.failed] == want_failed
    else:
        assert want_failed == []
    assert table_shape(backend) == ref.table
    assert backend.timeouts() == ref.timeouts
