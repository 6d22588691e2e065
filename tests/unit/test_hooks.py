"""The one hook runner: results, environment, timeout killing the whole group, cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from lvsd.daemon.hooks import run_hook

# run_async (tests/conftest.py) runs a coroutine with a timeout: a hook runner that hangs fails.
# The bounds below on elapsed time are far from what a passing run takes and far below what a
# broken one would (the hooks sleep 60 s): they check that a hook is killed, not how fast.


def test_exit_codes_and_last_line(run_async) -> None:
    run = run_async
    assert run(run_hook(["true"], {}, 5)) == "ok"
    assert run(run_hook([sys.executable, "-c", "print('a'); print('no VIP'); raise SystemExit(3)"], {}, 5)) == (
        "exit 3: no VIP"
    )
    assert run(run_hook(["false"], {}, 5)) == "exit 1"


def test_environment_is_added_to_lvsds_own(tmp_path, run_async) -> None:
    run = run_async
    out = tmp_path / "env"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['LVSD_ROLE'] + ' ' + os.environ['PATH'][:1])"
    assert run(run_hook([sys.executable, "-c", code], {"LVSD_ROLE": "master"}, 5)) == "ok"
    assert out.read_text() == "master " + os.environ["PATH"][:1]


def test_cannot_run_names_the_program(run_async) -> None:
    assert run_async(run_hook(["/nonexistent/hook"], {}, 5)).startswith("cannot run /nonexistent/hook: ")


def test_timeout_kills_the_hook_and_what_it_started(tmp_path, run_async) -> None:
    pidfile = tmp_path / "child"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid));"
        "time.sleep(60)"
    )
    t0 = time.monotonic()
    assert run_async(run_hook([sys.executable, "-c", code], {}, 1.0)) == "killed after 1 s"
    assert time.monotonic() - t0 < 30  # not the 60 s the hook sleeps
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 20  # the child is gone at once; a loaded machine may lag
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


def test_cancel_kills_the_hook(run_async) -> None:
    async def main() -> float:
        task = asyncio.create_task(run_hook(["sleep", "60"], {}, 60))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return time.monotonic() - t0

    assert run_async(main(), timeout=90) < 20  # not the 60 s the hook sleeps
