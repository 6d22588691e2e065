"""Kernel tests: they need real IPVS and root, i.e. the VM of tests/kernel/vm.sh.

On a host without IPVS every test here is skipped with the command that runs them instead
(``tests/kernel/vm.sh tests/kernel/run.sh``), unless LVSD_KERNEL_REQUIRED=1 (run.sh sets it):
then the run stops with the reason, so a kernel suite can never pass by skipping. Fixtures: ``lab`` (a netns.Lab torn down after
the test), ``ipvs`` (the NetlinkBackend on this namespace's table, checked empty before and
emptied after, so one test's leftovers never pass or fail the next), ``as_nobody`` (runs Python
code as uid 65534 with lvsd importable, wherever the checkout lies).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import netns` from any test here

from netns import Lab  # noqa: E402

RUN_HINT = "run them with: tests/kernel/vm.sh tests/kernel/run.sh"


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "kernel tests need root"
    if not os.path.exists("/proc/net/ip_vs"):
        return "this kernel has no IPVS loaded"
    if not os.path.isdir("/sys/class/net/lo"):
        return "no network stack visible"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this directory `kernel`, and skip them where there is no IPVS."""
    here = Path(__file__).resolve().parent
    why = kernel_unavailable()
    if why and os.environ.get("LVSD_KERNEL_REQUIRED") == "1":
        pytest.exit(f"kernel tests required (LVSD_KERNEL_REQUIRED=1) but {why}", returncode=1)
    for item in items:
        if here not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.kernel)
        if why:
            item.add_marker(pytest.mark.skip(reason=f"{why}; {RUN_HINT}"))


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A namespace lab, undone after the test even when it fails."""
    with Lab() as lab:
        yield lab


@pytest.fixture
def ipvs() -> Iterator[object]:
    """lvsd's NetlinkBackend on this namespace's IPVS table, empty at start and flushed at the end."""
    from lvsd.ipvs.backend import open_backend

    backend = open_backend("netlink")
    try:
        left = backend.services()
        assert not left, f"IPVS table not empty before the test (a previous test leaked): {left}"
        yield backend
    finally:
        try:
            backend.flush()
        finally:
            backend.close()


NOBODY = 65534


@pytest.fixture
def as_nobody() -> Iterator[Callable[[str], str]]:
    """A runner of Python code as uid/gid 65534 without capabilities, returning its stdout.

    Such a process cannot read a checkout (or its venv) under a 0700 directory: a clone under
    /root or a ``mktemp -d`` directory. So the lvsd package is copied to a world-readable
    temporary directory, and the venv's base interpreter runs the code isolated (``-I``: no
    PYTHONPATH, no cwd on sys.path) with that directory first on sys.path. Skips, saying why,
    when the base interpreter itself is out of uid 65534's reach.
    """
    import lvsd

    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
    top = tempfile.mkdtemp(prefix="lvsd-nobody-")  # under /tmp, not pytest's 0700 tmp_path
    try:
        shutil.copytree(
            Path(lvsd.__file__).parent,
            Path(top, "lvsd"),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for d, _dirs, files in os.walk(top):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)

        def run(code: str) -> str:
            p = subprocess.run(
                [*setpriv, python, "-I", "-c", f"import sys; sys.path.insert(0, {top!r})\n{code}"],
                capture_output=True, text=True, cwd=top, timeout=120,
            )  # fmt: skip
            if p.returncode:
                raise AssertionError(f"as uid {NOBODY}: {python} -> {p.returncode}: {p.stderr.strip()}")
            return p.stdout

        probe = subprocess.run(
            [*setpriv, python, "-I", "-c", "pass"], capture_output=True, text=True, cwd=top
        )
        if probe.returncode:
            pytest.skip(f"uid {NOBODY} cannot run this interpreter ({python}): {probe.stderr.strip()}")
        yield run
    finally:
        shutil.rmtree(top, ignore_errors=True)
