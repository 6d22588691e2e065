"""Issue 11, item 6 (hook half: unbounded hook output, raw control characters in the log): a
hook's output costs bounded memory whatever it prints, the hook is still killed at its timeout,
and the line that reaches the log is one printable line, for every byte string a hook can print."""

from __future__ import annotations

import asyncio
import logging
import sys
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.daemon.hooks import last_line, run_hook
from lvsd.daemon.limits import HOOK_LINE_MAX, HOOK_OUTPUT_MAX
from lvsd.daemon.log import _JournalFormatter, _TerminalFormatter, one_line

MB = 1 << 20


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_hook_output_is_bounded_in_memory() -> None:
    """40 MB of output, then a last line: lvsd holds at most HOOK_OUTPUT_MAX (plus a read
    buffer) of it, and still reports the last line."""
    code = "import sys; b = b'x' * 65535 + b'\\n'\nfor _ in range(640): sys.stdout.buffer.write(b)\nprint('the end'); sys.exit(3)"
    tracemalloc.start()
    try:
        result = _run(run_hook([sys.executable, "-c", code], {}, 50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == "exit 3: the end"
    assert peak < HOOK_OUTPUT_MAX * 4 + 2 * MB, f"peak {peak / MB:.1f} MB for 40 MB of hook output"


def test_a_hook_printing_without_end_is_killed_at_its_timeout() -> None:
    code = "import sys\nwhile True: sys.stdout.write('y' * 4096 + '\\n')"
    assert _run(run_hook([sys.executable, "-c", code], {}, 1.0)) == "killed after 1 s"


def test_a_hook_whose_child_keeps_its_output_open_is_killed_at_its_timeout() -> None:
    """The hook exits at once, a process it forked keeps the pipe and hangs: killed at the timeout."""
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nelse:\n    print('forked')"
    assert _run(run_hook([sys.executable, "-c", code], {}, 1.0)) == "killed after 1 s"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_what_a_hook_prints_reaches_the_log_as_one_printable_line(out: bytes) -> None:
    line = last_line(out)
    assert line.isprintable() and len(line) <= HOOK_LINE_MAX
    assert "\n" not in line and "\r" not in line and "\x1b" not in line


@given(st.text(max_size=300))
def test_every_log_line_is_one_line_without_control_characters(msg: str) -> None:
    record = logging.LogRecord("lvsd", logging.WARNING, __file__, 1, "%s", (msg,), None)
    for fmt in (_JournalFormatter(), _TerminalFormatter()):
        text = fmt.format(record)
        assert len(text.splitlines()) <= 1
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text)
    assert one_line("a\x1b[2Jb") == "a\\x1b[2Jb"
