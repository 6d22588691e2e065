"""Issue 11, item 7 (state files): whatever ``daemon.state_file`` holds (garbage, truncation,
JSON nested 100,000 deep, wrong shapes), start-up goes on with a one-line warning; a record
corrupted (or removed) while lvsd runs is rewritten at the next full pass; and the memory
backend's state file, whatever it holds, is a usable table or its one-line error (lvsadm prints
it, never "RecursionError")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.config import load_config
from lvsd.daemon.hooks import Hooks
from lvsd.daemon.reconciler import Reconciler, Stats, recorded_services
from lvsd.ipvs.backend import BackendUnavailable
from lvsd.ipvs.memory import MemoryBackend

DEEP = "[" * 100_000
DEEP_OBJ = '{"services": ' + "[" * 100_000

CONFIG = """
[daemon]
state_file = "{state}"

[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
"""

# json documents of any shape, and raw text: what a disk error or an editor leaves
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)
CONTENT = st.one_of(
    st.text(max_size=200),
    JSON.map(json.dumps),
    JSON.map(lambda v: json.dumps({"services": v})),
    JSON.map(lambda v: json.dumps({"services": [v]})),
    st.sampled_from([DEEP, DEEP_OBJ, '{"services": [[2, 6, "10.0.0.1", 80]]}', '{"services": [[2, 6, 1, 80, 0]]}']),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT)
def test_any_state_file_content_is_a_set_or_a_one_line_reason(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    keys, why = recorded_services(str(path))
    assert isinstance(keys, set)
    assert "\n" not in why and len(why) < 400


@pytest.mark.parametrize("content", [DEEP, DEEP_OBJ, "\x00\xff", '{"services": 5}', '{"services": [[1]]}', ""])
def test_start_up_goes_on_and_the_record_is_rewritten(tmp_path: Path, content: str) -> None:
    state = tmp_path / "managed.json"
    state.write_text(content)
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(state=state))
    rec = Reconciler(load_config(str(cfg)), MemoryBackend(), Stats(), Hooks(5))
    rec.adopt()  # never raises
    assert rec.reconcile(True, {}, "start")
    keys, why = recorded_services(str(state))
    assert not why and {str(k) for k in keys} == {"tcp 10.0.0.1:80"}


@pytest.mark.parametrize("corrupt", ["truncate", "garbage", "deep", "remove", "other-keys"])
def test_a_record_corrupted_while_running_is_rewritten(tmp_path: Path, corrupt: str) -> None:
    state = tmp_path / "managed.json"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(state=state))
    rec = Reconciler(load_config(str(cfg)), MemoryBackend(), Stats(), Hooks(5))
    rec.adopt()
    assert rec.reconcile(True, {}, "start")
    good = state.read_text()
    if corrupt == "truncate":
        state.write_text(good[: len(good) // 2])
    elif corrupt == "garbage":
        state.write_bytes(b"\x00" * len(good))
    elif corrupt == "deep":
        state.write_text(DEEP)
    elif corrupt == "remove":
        state.unlink()
    else:
        state.write_text('{"services": []}')
    assert rec.reconcile(True, {}, "resync")  # the next full pass (every resync)
    assert state.read_text() == good


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT)
def test_any_memory_state_file_is_a_table_or_its_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ipvs.json"
    path.write_text(content)
    try:
        with MemoryBackend(path=str(path)) as b:
            b.dump()
    except BackendUnavailable as e:
        assert str(e).startswith(f"memory state file {path}") and "\n" not in str(e)


@pytest.mark.parametrize("content", [DEEP, DEEP_OBJ, '{"services": [' * 50_000])
def test_lvsadm_on_a_deeply_nested_state_file_prints_its_state_file_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ipvs.json"
    path.write_text(content)
    r = subprocess.run([sys.executable, "-m", "lvsd.cli.lvsadm", "--backend", "memory", "--state", str(path), "-Ln"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.startswith(f"lvsadm: memory state file {path}: "), r.stderr
    assert "RecursionError" not in r.stderr and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
