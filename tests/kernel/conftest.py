"""Kernel tests: they need real IPVS and root, i.e. the VM of tests/kernel/vm.sh.

On a host without IPVS every test here is skipped with the command that runs them instead
(``tests/kernel/vm.sh tests/kernel/run.sh``), unless LVSD_KERNEL_REQUIRED=1 (run.sh sets it):
then the run stops with the reason, so a kernel suite can never pass by skipping. Fixtures: ``lab`` (a netns.Lab torn down after
the test), ``ipvs`` (the NetlinkBackend on this namespace's table, checked empty before and
emptied after, so one test's leftovers never pass or fail the next).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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
