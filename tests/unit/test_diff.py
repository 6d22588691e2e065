"""diff(): ordering, keyed matching, managed-only deletes, and the property that applying the diff
to the actual table on the memory backend yields the desired one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.core.diff import diff
from lvsd.ipvs.backend import Op, OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import (
    SVC_F_PERSISTENT,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceEntry,
    ServiceKey,
    Stats,
)

K1 = ServiceKey.inet("tcp", "10.0.0.1", 80)
K2 = ServiceKey.inet("udp", "10.0.0.2", 53)
D1 = DestKey.of("192.168.0.1", 80)
D2 = DestKey.of("192.168.0.2", 80)
D3 = DestKey.of("192.168.0.3", 80)


def entry(key: ServiceKey, *dests: Destination, sched: str = "wrr") -> ServiceEntry:
    return ServiceEntry(Service(key, sched), {d.key: d for d in dests})


def test_identical_tables_need_nothing_even_with_different_counters() -> None:
    a = {K1: entry(K1, Destination(D1, weight=2))}
    busy = Destination(D1, weight=2, active_conns=10, inact_conns=3, stats=Stats(conns=99))
    b = {K1: ServiceEntry(Service(K1, "wrr").with_stats(Stats(inbytes=5)), {D1: busy})}
    assert diff(a, b, {K1}) == []


def test_order_and_content() -> None:
    actual = {
        K1: entry(K1, Destination(D1, weight=1), Destination(D2, weight=1), sched="rr"),
        K2: entry(K2, Destination(D1, weight=1)),
    }
    desired = {K1: entry(K1, Destination(D2, weight=5), Destination(D3, weight=1))}
    ops = diff(desired, actual, {K1, K2})
    assert [(o.kind, o.key, o.dest.key if o.dest else None) for o in ops] == [
        (OpKind.EDIT_SERVICE, K1, None),
        (OpKind.DEL_DEST, K1, D1),
        (OpKind.EDIT_DEST, K1, D2),
        (OpKind.ADD_DEST, K1, D3),
        (OpKind.DEL_SERVICE, K2, None),
    ]
    assert ops[0].service.scheduler == "wrr"
    assert ops[2].dest.weight == 5
    # exactly what Op's constructors build (diff builds them through the slots, for speed)
    expected = [
        Op.edit_service(Service(K1, "wrr")),
        Op.del_dest(K1, D1),
        Op.edit_dest(K1, Destination(D2, weight=5)),
        Op.add_dest(K1, Destination(D3, weight=1)),
        Op.del_service(K2),
    ]
    assert ops == expected and [hash(o) for o in ops] == [hash(o) for o in expected]
    assert [repr(o) for o in ops] == [repr(o) for o in expected]
    new = diff({K2: entry(K2, Destination(D1))}, {}, set())
    assert new == [Op.add_service(Service(K2, "wrr")), Op.add_dest(K2, Destination(D1))]


def test_unmanaged_services_are_never_touched() -> None:
    actual = {K2: entry(K2, Destination(D1))}
    assert diff({}, actual, set()) == []
    assert diff({}, actual, {K1}) == []
    assert diff({}, actual, {K2}) == [Op.del_service(K2)]


def test_new_service_is_added_before_its_dests() -> None:
    ops = diff({K1: entry(K1, Destination(D1), Destination(D2))}, {}, set())
    assert [o.kind for o in ops] == [OpKind.ADD_SERVICE, OpKind.ADD_DEST, OpKind.ADD_DEST]


# --- property test on the memory backend -------------------------------------------------------

SVC_KEYS = [
    ServiceKey.inet("tcp", "10.0.0.1", 80),
    ServiceKey.inet("tcp", "10.0.0.1", 443),
    ServiceKey.inet("udp", "10.0.0.2", 53),
    ServiceKey.inet("tcp", "2001:db8::1", 80),
    ServiceKey.fwmark_key(7),
]
V4_DESTS = [DestKey.of(f"192.168.0.{i}", 80) for i in range(1, 5)]
V6_DESTS = [DestKey.of(f"2001:db8:1::{i}", 80) for i in range(1, 4)]


@st.composite
def services(draw: st.DrawFn, key: ServiceKey) -> ServiceEntry:
    sched = draw(st.sampled_from(["rr", "wrr", "wlc", "sh"]))
    persistent = draw(st.booleans())
    svc = Service(
        key,
        sched,
        flags=SVC_F_PERSISTENT if persistent else 0,
        timeout=draw(st.sampled_from([300, 600])) if persistent else 0,
    )
    pool = V6_DESTS if key.af == 10 else V4_DESTS
    keys = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
    dests = {}
    for dk in keys:
        dests[dk] = Destination(
            dk,
            forward=draw(st.sampled_from([Forward.MASQ, Forward.ROUTE, Forward.TUNNEL])),
            weight=draw(st.integers(0, 5)),
            u_threshold=draw(st.sampled_from([0, 100])),
        )
    return ServiceEntry(svc, dests)


@st.composite
def tables(draw: st.DrawFn) -> dict[ServiceKey, ServiceEntry]:
    keys = draw(st.lists(st.sampled_from(SVC_KEYS), unique=True, max_size=len(SVC_KEYS)))
    return {k: draw(services(k)) for k in keys}


def load(table: dict[ServiceKey, ServiceEntry]) -> MemoryBackend:
    b = MemoryBackend()
    ops: list[Op] = []
    for e in table.values():
        ops.append(Op.add_service(e.service))
        ops.extend(Op.add_dest(e.service.key, d) for d in e.dests.values())
    b.apply(ops)
    return b


@settings(max_examples=200, deadline=None)
@given(desired=tables(), actual=tables(), extra_managed=st.sets(st.sampled_from(SVC_KEYS)))
def test_applying_the_diff_yields_desired_and_leaves_the_rest(desired, actual, extra_managed) -> None:
    managed = set(desired) | extra_managed
    backend = load(actual)
    assert backend.dump() == actual
    ops = diff(desired, actual, managed)
    backend.apply(ops)
    after = backend.dump()
    for key, want in desired.items():
        assert after[key] == want
    for key, have in actual.items():
        if key not in managed:
            assert after[key] == have  # unmanaged: untouched
        elif key not in desired:
            assert key not in after  # managed but no longer desired: deleted
    assert set(after) == set(desired) | {k for k in actual if k not in managed}
    # and now nothing is left to do
    assert diff(desired, after, managed) == []


@settings(max_examples=100, deadline=None)
@given(t=tables())
def test_diff_of_a_table_with_itself_is_empty(t) -> None:
    assert diff(t, t, set(t)) == []
    assert diff(t, load(t).dump(), set(t)) == []
