"""What only the memory backend has: its state file (persistence, atomic save, locking between
processes, bad files) and test injection (connections, stats, counts). Skipped on netlink."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os

import pytest
from contract_helpers import D1, D2, D6, FWM, V4, V6, refused, table_shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.ipvs.backend import BackendUnavailable, IPVSError, open_backend
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import (
    SVC_F_PERSISTENT,
    Connection,
    DaemonState,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("LVSD_TEST_BACKEND", "memory") != "memory", reason="memory backend only"
)

CONN = Connection("TCP", "10.1.0.2", 40000, "10.0.0.1", 80, "10.0.0.2", 80, "ESTABLISHED", 899)
STATS = Stats(conns=5, inpkts=50, outpkts=40, inbytes=5000, outbytes=4000, cps=1, inpps=2, outpps=3, inbps=4, outbps=5)


def populate(b: MemoryBackend) -> None:
    b.add_service(Service(V4, "wrr", SVC_F_PERSISTENT, 300, 0xFFFFFF00))
    b.add_dest(V4, Destination(D1, Forward.MASQ, 3, 100, 50))
    b.add_dest(V4, Destination(D2, Forward.TUNNEL, 1, 0, 0, TunType.GUE, 6080, 1))
    b.add_dest(V4, Destination(D6, Forward.TUNNEL))
    b.add_service(Service(FWM, "lc"))
    b.add_service(Service(V6, "sh", netmask=64, pe_name="sip"))
    b.set_timeouts(Timeouts(1000, 60, 30))
    b.set_stats(V4, STATS)
    b.set_stats(V4, STATS, D1)
    b.set_counts(V4, D1, 3, 4, 5)
    b.set_connections([CONN])


def test_state_file_round_trip(tmp_path):
    path = tmp_path / "ipvs.json"
    a = MemoryBackend(path)
    populate(a)
    a.del_dest(V4, D6)
    a.start_daemon(SyncDaemon(DaemonState.BACKUP, "lo", 9))
    b = MemoryBackend(str(path))
    assert table_shape(b) == table_shape(a)
    assert b.services() == a.services()  # order too
    assert b.service(V4).stats == STATS
    (d2, d1) = b.dests(V4)
    assert d1.stats == STATS and (d1.active_conns, d1.inact_conns, d1.persist_conns) == (3, 4, 5)
    assert d2.stats == Stats()
    assert b.timeouts() == Timeouts(1000, 60, 30)
    assert b.daemons() == a.daemons()
    assert b.connections() == [CONN]
    doc = json.loads(path.read_text())
    assert doc["format"] == "lvsd-memory-state" and doc["version"] == 1
    a.close()
    b.close()


def test_alias_state_keyword_and_open_backend(tmp_path):
    path = str(tmp_path / "s.json")
    with open_backend("memory", state=path) as b:
        b.add_service(Service(V4))
    with MemoryBackend(state=path) as c:
        assert [s.key for s in c.services()] == [V4]
    with pytest.raises(ValueError):
        MemoryBackend(path, state=path + "x")


def test_every_write_is_saved_atomically(tmp_path):
    path = tmp_path / "s.json"
    b = MemoryBackend(path)
    assert not path.exists()  # nothing written until something changes
    b.add_service(Service(V4))
    ino = path.stat().st_ino
    b.add_dest(V4, Destination(D1))
    assert path.stat().st_ino != ino  # replaced by rename, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]  # no temp files left
    with pytest.raises(IPVSError):
        b.add_service(Service(V4))
    assert len(json.loads(path.read_text())["services"]) == 1


def test_two_instances_see_each_others_writes(tmp_path):
    path = tmp_path / "s.json"
    a, b = MemoryBackend(path), MemoryBackend(path)
    a.add_service(Service(V4))
    refused(errno.EEXIST, b.add_service, Service(V4))
    b.add_dest(V4, Destination(D1))
    assert a.dests(V4) == [Destination(D1)]
    a.flush()
    assert b.services() == []
    path.unlink()  # a deleted state file is an empty table
    assert a.services() == [] and a.timeouts() == Timeouts(900, 120, 300)


def _adder(path: str, worker: int, n: int) -> None:
    b = MemoryBackend(path)
    for i in range(n):
        b.add_service(Service(ServiceKey.inet("tcp", f"10.{worker}.0.1", 1000 + i)))
    b.close()


def test_concurrent_processes_lose_no_writes(tmp_path):
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(MemoryBackend(path).services()) == 100


@pytest.mark.parametrize(
    "content, words",
    [
        ("{bad json", "not valid JSON"),
        ("[]", "bad content"),
        ('{"format": "other", "version": 1}', "format"),
        ('{"format": "lvsd-memory-state", "version": 99}', "version"),
        (
            '{"format": "lvsd-memory-state", "version": 1, "services": [{"af": 2, "protocol": 6, '
            '"addr": "10.0.0.300", "port": 80, "scheduler": "rr"}]}',
            "services[0]",
        ),
        (
            '{"format": "lvsd-memory-state", "version": 1, "services": [{"af": 2, "protocol": 6, '
            '"addr": "10.0.0.1", "port": 80, "scheduler": "rr", "dests": [{"af": 2, "addr": "10.0.0.2", '
            '"port": 80, "weight": -1}]}]}',
            "services[0].dests[0]",
        ),
        ('{"format": "lvsd-memory-state", "version": 1, "services": [{"af": 2}]}', "scheduler"),
        ('{"format": "lvsd-memory-state", "version": 1, "daemons": [{"state": 7, "mcast_ifn": "lo"}]}', "daemons[0]"),
        ('{"format": "lvsd-memory-state", "version": 1, "connections": [{"protocol": "TCP"}]}', "connections[0]"),
        ('{"format": "lvsd-memory-state", "version": 1, "timeouts": {"tcp": "x"}}', "timeouts.tcp"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_corrupt_file_is_backend_unavailable_naming_the_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(BackendUnavailable) as info:
        MemoryBackend(path)
    msg = str(info.value)
    assert str(path) in msg and words in msg and "\n" not in msg


def test_file_corrupted_by_someone_else_while_open(tmp_path):
    path = tmp_path / "s.json"
    b = MemoryBackend(path)
    b.add_service(Service(V4))
    path.write_text("garbage")
    with pytest.raises(BackendUnavailable, match="s.json"):
        b.services()


def test_unusable_paths(tmp_path):
    with pytest.raises(BackendUnavailable, match="lock"):
        MemoryBackend(tmp_path / "no" / "such" / "dir" / "s.json")
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(BackendUnavailable, match="adir"):
        MemoryBackend(d)


def test_failed_save_keeps_disk_and_memory_in_step(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    b = MemoryBackend(path)
    b.add_service(Service(V4))

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lvsd.ipvs.memory.tempfile.mkstemp", no_space)
    with pytest.raises(BackendUnavailable, match="cannot write"):
        b.add_service(Service(FWM))
    monkeypatch.undo()
    assert [s.key for s in b.services()] == [V4]  # the unsaved write is not kept


def test_injected_connections_stats_and_counts(backend):
    if not isinstance(backend, MemoryBackend):
        pytest.skip("memory only")
    assert backend.connections() == []
    backend.set_connections([CONN, CONN])
    assert backend.connections() == [CONN, CONN]
    with pytest.raises(TypeError):
        backend.set_connections(["not a connection"])  # type: ignore[list-item]
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1))
    backend.set_stats(V4, STATS)
    backend.set_stats(V4, STATS, D1)
    backend.set_counts(V4, D1, 1, 2, 3)
    d = backend.dests(V4)[0]
    assert d.stats == STATS and (d.active_conns, d.inact_conns, d.persist_conns) == (1, 2, 3)
    # an edit keeps counters and counts; zero clears counters only
    backend.edit_dest(V4, Destination(D1, weight=7))
    backend.edit_service(Service(V4, "rr"))
    d = backend.dests(V4)[0]
    assert d.stats == STATS and d.active_conns == 1 and backend.service(V4).stats == STATS
    backend.zero(V4)
    d = backend.dests(V4)[0]
    assert d.stats == Stats() and d.active_conns == 1 and backend.service(V4).stats == Stats()
    backend.set_stats(V4, STATS)
    backend.zero()
    assert backend.service(V4).stats == Stats()
    # flush keeps the connection table (connections expire on their own in a kernel)
    backend.flush()
    assert backend.connections() == [CONN, CONN]
    with pytest.raises(IPVSError):
        backend.set_stats(V4, STATS)
    backend.add_service(Service(V4))
    refused(errno.ENOENT, backend.set_counts, V4, D2, 1)
    refused(errno.ENOENT, backend.set_stats, V4, STATS, DestKey.of("10.9.9.9", 1))


def test_interfaces_and_schedulers_can_be_chosen():
    b = MemoryBackend(interfaces={"eth0": 9000}, schedulers=["rr", "twos"])
    refused(errno.ENODEV, b.start_daemon, SyncDaemon(DaemonState.MASTER, "lo"))
    b.start_daemon(SyncDaemon(DaemonState.BACKUP, "eth0"))
    assert b.daemons()[0].sync_maxlen == 9000 - 28
    b.add_service(Service(V4, "twos"))
    refused(errno.ENOENT, b.add_service, Service(V6, "wlc"))


def test_without_a_path_nothing_touches_the_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = MemoryBackend()
    populate(b)
    b.close()
    assert list(tmp_path.iterdir()) == []


_stats = st.builds(Stats, *[st.integers(0, 2**64 - 1)] * 10)
_v4 = st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(1, 254)).map(
    lambda t: ".".join(map(str, t))
)  # unicast: what a kernel accepts as a destination
_keys = st.one_of(
    st.builds(ServiceKey.inet, st.sampled_from(["tcp", "udp", "sctp"]), st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.builds(ServiceKey.inet, st.sampled_from(["tcp", "udp"]), st.ip_addresses(v=6).map(str), st.integers(0, 65535)),
    st.builds(ServiceKey.fwmark_key, st.integers(1, 2**32 - 1), st.sampled_from([2, 10])),
)


@st.composite
def _entries(draw: st.DrawFn, key: ServiceKey) -> tuple[Service, list[tuple[Destination, Stats]], Stats]:
    svc = Service(
        key,
        draw(st.sampled_from(["rr", "wlc", "sh", "none"])),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 17179869)),
        draw(st.integers(1, 128)) if key.af == 10 else draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from(["", "sip"])),
    )
    dkeys = draw(st.lists(st.builds(DestKey.of, _v4, st.integers(0, 65535)), max_size=4, unique=True))
    dests = [
        (
            Destination(
                dk,
                Forward.TUNNEL if key.af == 10 else draw(st.sampled_from([Forward.MASQ, Forward.ROUTE, Forward.TUNNEL])),
                draw(st.integers(0, 2**31 - 1)),
                draw(st.integers(0, 2**31 - 1)),
                0,
                draw(st.sampled_from(list(TunType))),
                draw(st.integers(1, 65535)),
                draw(st.integers(0, 65535)),
            ),
            draw(_stats),
        )
        for dk in dkeys
    ]
    return svc, dests, draw(_stats)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), keys=st.lists(_keys, max_size=4, unique=True))
def test_any_table_survives_the_state_file(tmp_path, data, keys):
    path = tmp_path / "p.json"
    path.unlink(missing_ok=True)
    a = MemoryBackend(path)
    for key in keys:
        svc, dests, sstats = data.draw(_entries(key))
        a.add_service(svc)
        for d, ds in dests:
            a.add_dest(key, d)
            a.set_stats(key, ds, d.key)
        a.set_stats(key, sstats)
    b = MemoryBackend(path)
    assert table_shape(b) == table_shape(a)
    assert [s.stats for s in b.services()] == [s.stats for s in a.services()]
    for s in a.services():
        assert [d.stats for d in b.dests(s.key)] == [d.stats for d in a.dests(s.key)]
    a.close()
    b.close()
