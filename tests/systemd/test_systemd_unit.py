"""The Debian package and its unit under a live systemd, as an operator drives them: install,
start, status, lvsctl as root and as nobody, reload, broken reload, watchdog on a frozen daemon,
upgrade under NAT traffic, stop, upgrade while stopped, broken start, a crash loop ending at the start
limit, purge, and an install over a config already in place.

Runs only inside the systemd VM (tests/systemd/vm-systemd.sh tests/systemd/run.sh), with the
package built by tests/systemd/build-deb.sh (LVSD_DEB). The tests are steps of one story and
run in file order; each leaves the unit in the state the next one starts from.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "kernel"))
from netns import Lab, http_get, wait_until  # type: ignore[import-not-found]  # noqa: E402  # tests/kernel, put on sys.path above

pytestmark = pytest.mark.skipif(
    os.environ.get("LVSD_SYSTEMD_VM") != "1" or not os.path.isdir("/run/systemd/system"),
    reason="runs in the systemd VM only: tests/systemd/vm-systemd.sh tests/systemd/run.sh",
)

UNIT = "lvsd.service"
CONF = Path("/etc/lvsd/lvsd.toml")
VIP = "10.77.140.100"
SERVERS = {"sdr1": ("10.77.141.11", "10.77.141.1"), "sdr2": ("10.77.142.12", "10.77.142.1")}
TIMEOUT = 120.0  # anything that waits on lvsd under TCG emulation

CONFIG = """
[daemon]
state_file = "/var/lib/lvsd/managed.json"

[defaults]
forward = "nat"
check = {{ type = "tcp", interval = "1s", timeout = "1s", rise = 1, fall = 2 }}

[[service]]
name = "web"
vip = "{vip}:80"
scheduler = "rr"

  [[service.server]]
  address = "10.77.141.11"
  weight = {w1}

  [[service.server]]
  address = "10.77.142.12"
"""


def run(*argv: str, check: bool = True, timeout: float = TIMEOUT, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, fail the test with its output if it fails."""
    # the system's PATH: the suite tests what the package installed, not a virtualenv's commands
    # (a venv under a 0700 directory is not even readable by the unprivileged user)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", SYSTEMD_PAGER="", MANPAGER="cat", PAGER="cat",
               PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]  # kw: run's own
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def diag() -> str:
    """systemctl status and the unit's journal, for a failure message."""
    status = run("systemctl", "status", "--no-pager", "-n", "0", UNIT, check=False).stdout
    return status + run("journalctl", "-u", UNIT, "--no-pager", "-n", "40", check=False).stdout


def prop(name: str) -> str:
    """One property of the unit (systemctl show)."""
    return run("systemctl", "show", "-P", name, UNIT).stdout.strip()


def table() -> str:
    """The VIP's service and servers as ipvsadm lists them (without counters)."""
    r = run("ipvsadm", "-Ln", "-t", f"{VIP}:80", check=False)
    return "\n".join(" ".join(ln.split()[:4]) for ln in r.stdout.splitlines()[3:]) if r.returncode == 0 else ""


def write_config(w1: int = 1, broken: bool = False) -> None:
    CONF.write_text(CONFIG.format(vip=VIP, w1=-1 if broken else w1))


def journal(since: str) -> str:
    return run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", "--since", since).stdout


def now() -> str:
    return run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The package under test and the same package as a later version (for the upgrade)."""
    found = sorted(glob.glob(os.environ.get("LVSD_DEB", str(ROOT / "build" / "deb" / "lvsd_*.deb"))))
    assert found, "no package: run tests/systemd/build-deb.sh first (or set LVSD_DEB)"
    deb = Path(found[-1])
    tmp = tmp_path_factory.mktemp("deb")
    run("dpkg-deb", "-R", str(deb), str(tmp / "x"))
    control = tmp / "x" / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)", text, re.M).group(1)  # type: ignore[union-attr]  # always there
    control.write_text(text.replace(f"Version: {version}", f"Version: {version}+upgrade1"))
    nxt = tmp / "lvsd_next.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tmp / "x"), str(nxt))  # fast, not small
    return deb, nxt


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A NAT director in the root namespace: a client namespace and two real servers behind it."""
    with Lab() as lab:
        lab.sysctl("net.ipv4.ip_forward", "1")
        lab.routed_netns("sdc", "sdc0", "10.77.140.1/24", "10.77.140.2/24")
        lab.addr("lo", f"{VIP}/32")
        for ns, (addr, gw) in SERVERS.items():
            lab.routed_netns(ns, ns, f"{gw}/24", f"{addr}/24")
            lab.http_server(ns, addr, 80)
        yield lab
        run("ipvsadm", "-D", "-t", f"{VIP}:80", check=False)


class Client(threading.Thread):
    """Requests through the VIP on fresh connections until stopped; counts answers and failures."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.seen[http_get("sdc", VIP, 80, timeout=5).body] += 1
            except OSError as e:
                self.failures.append(repr(e))
            time.sleep(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def test_install_enables_but_does_not_start(debs: tuple[Path, Path], lab: Lab) -> None:
    run("apt-get", "install", "-y", "--no-install-recommends", str(debs[0]), timeout=600)
    assert prop("UnitFileState") == "enabled"
    assert prop("ActiveState") == "inactive"  # the shipped config manages nothing: not started
    assert "/etc/lvsd/lvsd.toml" in run("dpkg-query", "-W", "-f=${Conffiles}", "lvsd").stdout
    assert os.path.isdir("/var/lib/lvsd")
    for cmd in ("lvsd", "lvsadm", "lvsctl"):
        assert os.access(f"/usr/bin/{cmd}", os.X_OK), cmd
        r = run("bash", "-c", f". /usr/share/bash-completion/completions/{cmd} 2>/dev/null; complete -p {cmd}")
        assert f"_{cmd} {cmd}" in r.stdout, r.stdout
    assert "ok (0 services" in run("lvsd", "--check-config", str(CONF)).stdout
    assert run("lvsadm", "-v").stdout.startswith("ipvsadm v1.31")


def test_man_pages_are_installed() -> None:
    for page, word in (("lvsd", "--check-config"), ("lvsctl", "--socket"), ("lvsadm", "--start-daemon"),
                       ("lvsd.toml", "on_stop")):
        section = "5" if page.endswith(".toml") else "8"
        text = run("man", section, page).stdout
        assert word in text.replace("\u2010", "-"), page


def test_start_reaches_ready_and_builds_the_table(lab: Lab) -> None:
    write_config()
    run("systemctl", "start", UNIT)  # Type=notify: returns after READY=1
    assert prop("ActiveState") == "active", diag()
    wait_until(lambda: len(re.findall(r"-> 10\.77\.14[12]\.", table())) == 2, TIMEOUT, "both servers in the table")
    assert http_get("sdc", VIP, 80).body in SERVERS


def test_status_shows_the_status_line() -> None:
    out = run("systemctl", "status", "--no-pager", UNIT, check=False).stdout
    assert re.search(r"Status: \"1 services?, 2 servers", out), out
    assert prop("StatusText").startswith("1 service")


def test_lvsctl_as_root_and_refused_to_nobody() -> None:
    assert "web" in run("lvsctl", "services").stdout
    st = os.stat("/run/lvsd/lvsd.sock")
    assert oct(st.st_mode & 0o777) == "0o660"
    r = run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "lvsctl", "status", check=False)
    assert r.returncode == 3 and "cannot reach lvsd" in r.stderr, r


def test_reload_applies_the_new_config() -> None:
    write_config(w1=5)
    run("systemctl", "reload", UNIT)
    wait_until(lambda: "-> 10.77.141.11:80 Masq 5" in table(), TIMEOUT, "weight 5 after the reload")
    assert run("lvsctl", "reload").returncode == 0


def test_broken_reload_keeps_the_running_config() -> None:
    before, pid = table(), prop("MainPID")
    write_config(broken=True)
    r = run("lvsctl", "reload", check=False)
    assert r.returncode == 1 and "weight" in r.stdout + r.stderr, r
    assert "reload failed" in prop("StatusText").lower()
    assert prop("ActiveState") == "active" and prop("MainPID") == pid
    assert table() == before
    write_config(w1=5)
    run("lvsctl", "reload")


def test_watchdog_restarts_a_frozen_daemon_which_adopts_the_table() -> None:
    before, pid, since = table(), prop("MainPID"), now()
    run("kill", "-STOP", pid)
    wait_until(lambda: prop("MainPID") not in ("0", pid) and prop("ActiveState") == "active",
               TIMEOUT, "a new lvsd after the watchdog")
    assert "Watchdog timeout" in journal(since)
    assert table() == before  # kept through the kill, adopted by the new daemon


def test_upgrade_while_running_restarts_it_without_a_failed_request(debs: tuple[Path, Path]) -> None:
    before, pid = table(), prop("MainPID")
    client = Client()
    client.start()
    wait_until(lambda: sum(client.seen.values()) >= 5, TIMEOUT, "the client's first answers")
    run("dpkg", "-i", str(debs[1]), timeout=600)  # apt's dpkg call, without apt's cache rebuild
    assert "+upgrade1" in run("dpkg-query", "-W", "-f=${Version}", "lvsd").stdout
    assert prop("ActiveState") == "active" and prop("MainPID") != pid, diag()  # restarted: it ran
    n = sum(client.seen.values())
    wait_until(lambda: sum(client.seen.values()) >= n + 5, TIMEOUT, "answers after the upgrade")
    client.stop()
    print(f"upgrade under traffic: {dict(client.seen)} failures={len(client.failures)}")
    assert client.failures == []
    assert set(client.seen) == set(SERVERS)
    assert table() == before


def test_stop_keeps_the_table() -> None:
    before = table()
    run("systemctl", "stop", UNIT)
    assert prop("ActiveState") == "inactive"
    assert table() == before  # on_stop = "keep"


def test_upgrade_while_stopped_does_not_start_it(debs: tuple[Path, Path]) -> None:
    run("dpkg", "-i", str(debs[1]), timeout=600)
    assert prop("ActiveState") == "inactive"


def test_broken_config_at_start_ends_failed_with_the_reason() -> None:
    write_config(broken=True)
    since, t0 = now(), time.monotonic()
    assert run("systemctl", "start", UNIT, check=False).returncode != 0
    wait_until(lambda: prop("ActiveState") == "failed", TIMEOUT, "the unit to end failed")
    print(f"broken start: failed after {time.monotonic() - t0:.1f}s, {prop('NRestarts')} restarts")
    assert prop("ExecMainStatus") == "78" and prop("NRestarts") == "0", diag()  # RestartPreventExitStatus
    status = run("systemctl", "status", "--no-pager", "-n", "20", UNIT, check=False).stdout
    assert "weight: must be" in status, status  # the config error, in status's journal lines
    assert "weight: must be" in journal(since)
    run("systemctl", "reset-failed", UNIT)


def test_a_crash_loop_ends_failed_at_the_start_limit() -> None:
    write_config()
    dropin = Path("/run/systemd/system/lvsd.service.d/crash.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")  # exits 1, not 78: restarted
    run("systemctl", "daemon-reload")
    try:
        since, t0 = now(), time.monotonic()
        run("systemctl", "start", UNIT, check=False)
        wait_until(lambda: prop("ActiveState") == "failed", TIMEOUT, "the start limit")
        print(f"crash loop: failed after {time.monotonic() - t0:.1f}s, {prop('NRestarts')} restarts")
        # systemd 252 keeps Result=exit-code when an automatic restart hits the limit; it says so
        assert "Start request repeated too quickly" in journal(since), diag()
        assert prop("NRestarts") == "5", diag()  # StartLimitBurst=5 starts, the next one refused
    finally:
        dropin.unlink()
        run("systemctl", "daemon-reload")
        run("systemctl", "reset-failed", UNIT)


def test_purge_removes_the_package_and_leaves_the_table(lab: Lab) -> None:
    write_config(w1=5)
    before = table()
    run("dpkg", "--purge", "lvsd", timeout=600)  # apt-get purge: the same, plus ~100 s of apt under TCG
    assert not os.path.exists("/usr/bin/lvsd")
    assert not os.path.exists("/etc/lvsd") and not os.path.exists("/var/lib/lvsd")
    assert run("systemctl", "cat", UNIT, check=False).returncode != 0
    assert table() == before  # removing the package does not cut traffic


def test_install_over_a_config_in_place_starts_it(debs: tuple[Path, Path], lab: Lab) -> None:
    CONF.parent.mkdir(parents=True, exist_ok=True)
    write_config()  # configuration management put the real file there first
    run("dpkg", "-i", "--force-confold", str(debs[0]), timeout=600)
    assert prop("ActiveState") == "active", diag()
    wait_until(lambda: len(re.findall(r"^-> 10\.77\.14[12]\.\S+ Masq 1$", table(), re.M)) == 2, TIMEOUT,
               "the config's weights applied")
    run("dpkg", "--purge", "lvsd", timeout=600)
    assert prop("ActiveState") != "active"

