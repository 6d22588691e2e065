"""The daemon's side of overrides: the state file's round trip, request validation, SO_PEERCRED."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from lvsd.config import parse_config
from lvsd.core.overrides import Override
from lvsd.daemon.overrides import OverrideStore, RequestError, decode, encode, handle, peer_of
from lvsd.ipvs.model import Destination, DestKey, Forward

CFG = parse_config(
    '[[service]]\nname = "web"\nvip = "10.0.0.1:80"\nforward = "nat"\n'
    'server = [{ address = "192.168.0.1" }, { address = "192.168.0.2", port = 8080 }]\n',
    check_files=False,
)
S1 = ("web", DestKey.of("192.168.0.1", 80))


def test_encode_decode_round_trip_with_a_removed_servers_destination(tmp_path: Path) -> None:
    gone = DestKey.of("192.168.0.9", 81)
    ovs = {
        S1: Override("weight", weight=7, reason="r", by="uid 0 (root)", at=1.5),
        ("web", gone): Override("drain", by="config", at=2.0, until=302.0, dest=Destination(gone, Forward.MASQ, 4, 10, 5)),
    }
    assert decode(json.loads(json.dumps(encode(ovs)))) == ovs
    store = OverrideStore(str(tmp_path / "d" / "overrides.json"))
    store.active.update(ovs)
    store.save()
    assert os.listdir(tmp_path / "d") == ["overrides.json"]  # written through a renamed temp file
    again = OverrideStore(store.path)
    again.load()
    assert again.active == ovs and again.error == ""


def test_a_read_only_store_writes_nothing(tmp_path: Path) -> None:
    store = OverrideStore(str(tmp_path / "overrides.json"), read_only=True)
    store.put(S1, Override("disable"))
    assert not (tmp_path / "overrides.json").exists()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ([], 400, "body must be a JSON object"),
        ({"action": "melt", "service": "web"}, 400, "action must be one of disable, enable, drain, weight, got 'melt'"),
        ({"action": "disable", "service": "nope"}, 404, "no service named 'nope'"),
        ({"action": "disable", "service": "web", "server": "192.168.0.3"}, 404, "service 'web' has no server '192.168.0.3'"),
        ({"action": "weight", "service": "web"}, 400, "weight needs a server"),
        ({"action": "weight", "service": "web", "server": "192.168.0.1", "weight": True}, 400, "weight must be an integer 0..2147483647, got True"),
        ({"action": "drain", "service": "web", "timeout": -1}, 400, "timeout must be 0..604800 seconds, got -1"),
        ({"action": "disable", "service": "web", "reason": "x" * 501}, 400, '"reason" must be a string of at most 500 characters'),
    ],
)
def test_bad_requests_are_refused_with_one_line(body: object, status: int, message: str) -> None:
    store = OverrideStore("")
    with pytest.raises(RequestError) as e:
        handle(store, CFG, body, "uid 0")
    assert (e.value.status, str(e.value)) == (status, message)
    assert store.active == {}


def test_a_server_is_named_by_address_port_or_address_and_all_by_default() -> None:
    store = OverrideStore("")
    answer, changed = handle(store, CFG, {"action": "disable", "service": "web", "server": "192.168.0.2:8080", "reason": " a\nb "}, "u", now=5.0)
    assert answer["servers"] == ["web 192.168.0.2:8080"] and changed == {"web": "web: disable (a b) by u"}
    assert store.active[("web", DestKey.of("192.168.0.2", 8080))] == Override("disable", reason="a b", by="u", at=5.0)
    handle(store, CFG, {"action": "drain", "service": "web", "timeout": 60}, "u", now=10.0)
    assert {ov.kind for ov in store.active.values()} == {"drain"} and store.active[S1].until == 70.0
    answer, _ = handle(store, CFG, {"action": "drain", "service": "web"}, "u", now=20.0)
    assert answer["servers"] == [] and store.active[S1].at == 10.0  # a running drain is not restarted
    handle(store, CFG, {"action": "enable", "service": "web"}, "u")
    assert store.active == {}


def test_peer_of_reads_the_uid_from_so_peercred() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_of(a).startswith(f"uid {os.getuid()}")
    assert peer_of(None) == "unknown"
