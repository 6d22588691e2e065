"""The lvsd command line (--check-config, --plan, start errors) and the pure pieces the loop uses:
the bounded-frequency schedule and the watchdog interval."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.core.runner import BoundedFrequency
from lvsd.daemon.main import EX_CONFIG, main
from lvsd.daemon.notify import watchdog_interval
from lvsd.ipvs.backend import Op
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey, Timeouts

GOOD = """
[ipvs]
timeouts = { tcp = 600 }

[[service]]
name = "web"
vip = "10.0.0.1:80"
scheduler = "wrr"
  [[service.server]]
  address = "192.168.0.1"
  weight = 3
  forward = "nat"
  [[service.server]]
  address = "192.168.0.2"
  forward = "nat"
  check = { type = "tcp" }
"""

BAD = """
[daemon]
on_stop = "explode"

[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
  weight = -1
"""


def test_check_config_ok_and_every_error(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert main(["--check-config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok (1 services, 2 servers)"
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    assert main(["-t", str(bad)]) == EX_CONFIG == 78  # sysexits.h; the systemd unit names 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2  # every error, one per line
    assert any(line.startswith("daemon.on_stop:") for line in err)
    assert any(line.startswith("service[web].server[0].weight:") for line in err)
    assert main(["--check-config", str(tmp_path / "missing.toml")]) == EX_CONFIG
    assert "missing.toml" in capsys.readouterr().err
    # -f names the file when --check-config has none
    assert main(["-f", str(good), "--check-config"]) == 0


def test_plan_prints_ops_and_applies_nothing(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(GOOD)
    state = tmp_path / "ipvs.json"
    web = ServiceKey.inet("tcp", "10.0.0.1", 80)
    other = ServiceKey.inet("tcp", "10.9.9.9", 25)
    with MemoryBackend(state=str(state)) as b:
        b.apply(
            [
                Op.add_service(Service(web, "rr")),
                Op.add_dest(web, Destination(DestKey.of("192.168.0.1", 80), Forward.MASQ, 3)),
                Op.add_dest(web, Destination(DestKey.of("192.168.0.9", 80), Forward.MASQ, 1)),
                Op.add_service(Service(other, "rr")),
            ]
        )
        before = b.dump()
        t_before = b.timeouts()
    assert main(["--plan", str(cfg), "--backend", "memory", "--state", str(state)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "set-timeouts tcp 600 tcpfin 0 udp 0",
        "edit-service tcp 10.0.0.1:80 scheduler wrr",
        "delete-server tcp 10.0.0.1:80 -> 192.168.0.9:80",
        "add-server tcp 10.0.0.1:80 -> 192.168.0.2:80 weight 1 nat",
    ]
    assert "1 services in the kernel not in the config are left alone" in err
    with MemoryBackend(state=str(state)) as b:
        assert b.dump() == before and b.timeouts() == t_before  # nothing applied


def test_plan_with_an_invalid_config_exits_ex_config(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    state = tmp_path / "ipvs.json"
    assert main(["--plan", str(bad), "--backend", "memory", "--state", str(state)]) == EX_CONFIG
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 2
    # a valid config against a backend that cannot be opened is another mistake: 1, not EX_CONFIG
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    state.write_text("{not json")
    assert main(["--plan", str(good), "--backend", "memory", "--state", str(state)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_start_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run(
        [sys.executable, "-m", "lvsd.daemon.main", "-f", str(bad)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == EX_CONFIG and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 2
    # the control socket path is taken by a file: one line, exit 1, no traceback
    good = tmp_path / "good.toml"
    blocker = tmp_path / "sock"
    blocker.write_text("")
    good.write_text(f'[api]\nsocket = "{blocker}"\n' + GOOD)
    r = subprocess.run(
        [sys.executable, "-m", "lvsd.daemon.main", "-f", str(good), "--backend", "memory"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot start: {blocker}: exists and is not a socket" in r.stderr


# --- bounded-frequency schedule ------------------------------------------------------------------


def test_runner_coalesces_and_bounds() -> None:
    r = BoundedFrequency(min_interval=1.0, max_interval=10.0, backoff_initial=0.5, backoff_max=4.0)
    assert r.delay(0.0) == 0  # never ran: run now
    r.started(0.0)
    r.finished(0.1, ok=True)
    assert r.next_run() == 10.0  # nothing asked: the periodic resync
    r.request()
    r.request()
    assert r.next_run() == 1.0  # at most one run per min_interval, however many requests
    assert r.delay(0.5) == pytest.approx(0.5)
    r.started(1.0)
    assert not r.pending
    r.finished(1.2, ok=True)
    r.request()
    assert r.delay(5.0) == 0  # long after the last run: at once


def test_runner_backoff_doubles_and_resets() -> None:
    r = BoundedFrequency(min_interval=0.0, max_interval=100.0, backoff_initial=0.5, backoff_max=2.0)
    waits = []
    now = 0.0
    for _ in range(5):
        r.started(now)
        r.finished(now, ok=False)
        waits.append(r.next_run() - now)
        now = r.next_run()
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    r.started(now)
    r.finished(now, ok=True)
    assert r.backoff == 0 and r.next_run() == now + 100.0
    with pytest.raises(ValueError):
        BoundedFrequency(-1, 1)


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_timeouts_unchanged_when_already_set(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(GOOD)
    state = tmp_path / "ipvs.json"
    with MemoryBackend(state=str(state)) as b:
        b.apply([Op.set_timeouts(Timeouts(tcp=600))])
    assert main(["--plan", str(cfg), "--backend", "memory", "--state", str(state)]) == 0
    assert "set-timeouts" not in capsys.readouterr().out


def test_log_lines_for_the_journal_and_for_a_terminal(tmp_path: Path) -> None:
    """Under systemd (JOURNAL_STREAM names our stderr) each line carries its <priority>; elsewhere
    a UTC timestamp and level. Always one line per event, even for a multi-line message."""
    code = (
        "import logging, os, sys\n"
        "st = os.fstat(2)\n"
        "if sys.argv[1] == 'journal': os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from lvsd.daemon.log import setup_logging\n"
        "log = setup_logging('info')\n"
        "log.info('hello'); log.warning('two\\nlines'); log.debug('hidden')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("JOURNAL_STREAM", None)
    out = {}
    for mode in ("journal", "terminal"):
        err = tmp_path / f"{mode}.err"
        with open(err, "w") as f:
            subprocess.run([sys.executable, "-c", code, mode], stderr=f, env=env, check=True, timeout=60)
        out[mode] = err.read_text().splitlines()
    assert out["journal"] == ["<6>hello", "<4>two lines"]
    assert len(out["terminal"]) == 2
    assert out["terminal"][0].endswith("Z info hello") and out["terminal"][1].endswith("Z warning two lines")
