"""Script checker: exit codes, dynamic weight, hangs, forks that hang (whole group killed, no
zombie, no leaked descriptor)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from lvsd.checks.manager import check_once
from lvsd.checks.script import ScriptCheck


def script(code: str, **kw) -> ScriptCheck:
    kw.setdefault("timeout", 2.0)
    return ScriptCheck(argv=(sys.executable, "-c", code), **kw)


def children() -> list[tuple[int, str]]:
    """(pid, state) of our direct children."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == me:
            out.append((int(d), rest[0]))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "code,ok,detail",
    [("0", True, "exit 0"), ("1", False, "exit 1"), ("2", False, "exit 2"), ("42", False, "exit 42")],
)
def test_exit_codes(code, ok, detail, run_async) -> None:
    res = run_async(check_once(script(f"raise SystemExit({code})"), "127.0.0.1", 80))
    assert res[0] is ok and detail in res[1] and res[2] is None, res


@pytest.mark.parametrize(
    "code,ok,weight",
    [(0, True, None), (1, False, None), (2, True, 0), (3, True, 1), (102, True, 100), (255, True, 253)],
)
def test_dynamic_weight(code, ok, weight, run_async) -> None:
    res = run_async(check_once(script(f"raise SystemExit({code})", dynamic_weight=True), "127.0.0.1", 80))
    assert res[0] is ok and res[2] == weight, res


def test_killed_by_signal_is_down_never_a_weight(run_async) -> None:
    res = run_async(check_once(script("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", dynamic_weight=True),
                               "127.0.0.1", 80))
    assert res == (False, "script python3 killed by signal 15", None) or (not res[0] and "signal 15" in res[1])


def test_environment_and_no_shell(run_async) -> None:
    code = ("import os, sys; sys.exit(0 if os.environ['LVSD_CHECK_ADDR'] == '10.1.2.3' and "
            "os.environ['LVSD_CHECK_PORT'] == '8080' else 1)")
    assert run_async(check_once(script(code), "10.1.2.3", 8080))[0]
    # a shell string is never interpreted: the whole thing is argv[0] and does not exist
    res = run_async(check_once(ScriptCheck(argv=("true && false",), timeout=1), "127.0.0.1", 80))
    assert not res[0] and "cannot run" in res[1]


def test_no_leaked_descriptors(run_async) -> None:
    r, w = os.pipe()  # a descriptor the script must not inherit
    os.set_inheritable(w, True)
    code = f"import os, sys; sys.exit(1 if os.path.exists('/proc/self/fd/{w}') else 0)"
    try:
        res = run_async(check_once(script(code), "127.0.0.1", 80))
    finally:
        os.close(r)
        os.close(w)
    assert res[0], res


def test_hanging_script_is_killed(run_async) -> None:
    pidfile = f"/tmp/lvsd-test-hang-{os.getpid()}"
    code = f"import os, time; open({pidfile!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    async def main():
        t0 = time.monotonic()
        res = await check_once(script(code, timeout=0.5), "127.0.0.1", 80)
        took = time.monotonic() - t0
        pid = int(open(pidfile).read())
        for _ in range(100):  # the reaper runs in the background: give it a moment
            if not alive(pid) and not [c for c in children() if c[0] == pid]:
                break
            await asyncio.sleep(0.02)
        return res, took, pid

    res, took, pid = run_async(main())
    os.unlink(pidfile)
    assert res == (False, "script python3 timed out after 0.5s (killed)", None) or "timed out" in res[1]
    assert took < 30  # the 0.5 s timeout killed it: the script sleeps 60 (slack: a loaded machine)
    assert not alive(pid)
    assert [c for c in children() if c[0] == pid] == []  # reaped: no zombie


def test_forking_script_whole_group_killed(run_async) -> None:
    pidfile = f"/tmp/lvsd-test-fork-{os.getpid()}"
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    open({pidfile!r}, 'w').write(str(os.getpid())); time.sleep(60); os._exit(0)\n"
        "time.sleep(60)\n"
    )

    async def main():
        res = await check_once(script(code, timeout=0.7), "127.0.0.1", 80)
        for _ in range(50):
            if os.path.exists(pidfile):
                break
            await asyncio.sleep(0.02)
        grandchild = int(open(pidfile).read())
        for _ in range(100):
            if not alive(grandchild) and not [c for c in children() if c[1] == "Z"]:
                break
            await asyncio.sleep(0.02)
        return res, grandchild

    res, grandchild = run_async(main())
    os.unlink(pidfile)
    assert not res[0] and "timed out" in res[1]
    assert not alive(grandchild), "the forked grandchild survived the timeout"
    assert [c for c in children() if c[1] == "Z"] == []


def test_script_that_forks_and_exits_leaves_nothing(run_async) -> None:
    pidfile = f"/tmp/lvsd-test-fork2-{os.getpid()}"
    code = (
        "import os, time, sys\n"
        "if os.fork() == 0:\n"
        f"    open({pidfile!r}, 'w').write(str(os.getpid())); time.sleep(60); os._exit(0)\n"
        "time.sleep(0.2); sys.exit(0)\n"
    )

    async def main():
        res = await check_once(script(code, timeout=2), "127.0.0.1", 80)
        grandchild = int(open(pidfile).read())
        for _ in range(100):
            if not alive(grandchild):
                break
            await asyncio.sleep(0.02)
        return res, grandchild

    res, grandchild = run_async(main())
    os.unlink(pidfile)
    assert res[0], res
    assert not alive(grandchild)


def test_stop_kills_and_reaps_running_scripts(tmp_path, run_async) -> None:
    from lvsd.checks.manager import CheckManager
    from lvsd.ipvs.model import DestKey

    pidfile = tmp_path / "pid"
    spec = script(f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
                  timeout=30, interval=0.01, rise=1, fall=1)

    class Srv:
        key = DestKey.of("127.0.0.1", 80)
        checks = (spec,)

    class Svc:
        name = "web"
        servers = (Srv(),)

    class Cfg:
        services = (Svc(),)

    async def main():
        m = CheckManager(lambda sid, h: None)
        await m.start(Cfg())
        for _ in range(250):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.02)
        pid = int(pidfile.read_text())
        assert alive(pid)
        await m.stop()
        return pid

    pid = run_async(main())
    assert not alive(pid)
    assert [c for c in children() if c[0] == pid] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch user")
def test_runs_as_user_and_group(run_async) -> None:
    import grp
    import pwd

    uid = pwd.getpwnam("nobody").pw_uid
    gid = grp.getgrnam("nogroup").gr_gid
    # /bin/sh, not our python: nobody may not be able to read the interpreter's directory
    argv = ("/bin/sh", "-c", f'[ "$(id -u)" = {uid} ] && [ "$(id -g)" = {gid} ]')
    res = run_async(check_once(ScriptCheck(argv=argv, user="nobody", group="nogroup", timeout=5),
                               "127.0.0.1", 80))
    assert res[0], res
    res = run_async(check_once(ScriptCheck(argv=argv, timeout=5), "127.0.0.1", 80))
    assert not res[0]  # as root it is not nobody: the check above really switched
