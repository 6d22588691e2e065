"""The one hook runner: results, environment, timeout killing the whole group, cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from lvsd.daemon.hooks import run_hook


def run(coro):
    return asyncio.run(coro)


def test_exit_codes_and_last_line() -> None:
    assert run(run_hook(["true"], {}, 5)) == "ok"
    assert run(run_hook([sys.executable, "-c", "print('a'); print('no VIP'); raise SystemExit(3)"], {}, 5)) == (
        "exit 3: no VIP"
    )
    assert run(run_hook(["false"], {}, 5)) == "exit 1"


def test_environment_is_added_to_lvsds_own(tmp_path) -> None:
    out = tmp_path / "env"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['LVSD_ROLE'] + ' ' + os.environ['PATH'][:1])"
    assert run(run_hook([sys.executable, "-c", code], {"LVSD_ROLE": "master"}, 5)) == "ok"
    assert out.read_text() == "master " + os.environ["PATH"][:1]


def test_cannot_run_names_the_program() -> None:
    assert run(run_hook(["/nonexistent/hook"], {}, 5)).startswith("cannot run /nonexistent/hook: ")


def test_timeout_kills_the_hook_and_what_it_started(tmp_path) -> None:
    pidfile = tmp_path / "child"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid));"
        "time.sleep(60)"
    )
    t0 = time.monotonic()
    assert run(run_hook([sys.executable, "-c", code], {}, 1.0)) == "killed after 1 s"
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:  # a zombie waiting for init counts as gone
            if f.read().split(") ")[1].startswith("Z"):
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the hook's child survived the timeout")


def test_cancel_kills_the_hook() -> None:
    async def main() -> float:
        task = asyncio.create_task(run_hook(["sleep", "60"], {}, 30))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return time.monotonic() - t0

    assert run(main()) < 5
