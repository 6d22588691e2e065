"""``lvsd import keepalived`` on real keepalived.conf files (the shared corpus beside the
checkout, test input only: never copied into the project): each is translated and passes the
loader, or is refused with its file and line and no traceback, as its README says keepalived
does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from import_helpers import validate

from lvsd.migrate.emit import render
from lvsd.migrate.keepalived import import_keepalived
from lvsd.migrate.model import MigrateError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "keepalived"
FILES = sorted(CORPUS.glob("*.conf")) if CORPUS.is_dir() else []
#: file -> (line, what) of the refusal: a truncated first keyword; placeholders and vrid 0
REFUSED = {
    "07-chaihuo-multi-service-malformed.conf": (2, "unknown keyword 'bal_defs'"),
    "13-issue1715-tun-sorry-vrrp-tracks-quorum.conf": (23, "virtual_router_id must be 1..255, got 0"),
}
#: services each translated file must give (expanded groups count once per address)
SERVICES = {"01": 2, "02": 1, "03": 1, "04": 1, "05": 1, "06": 1, "08": 157, "09": 65, "10": 1, "11": 2,
            "12": 1, "14": 4, "15": 1}

pytestmark = pytest.mark.skipif(not FILES, reason=f"no keepalived corpus at {CORPUS} (shared/ is absent)")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name[:2])
def test_each_corpus_file_passes_the_loader_or_is_refused_with_its_line(path: Path) -> None:
    if path.name in REFUSED:
        line, what = REFUSED[path.name]
        with pytest.raises(MigrateError) as e:
            import_keepalived(str(path), "low")
        assert str(e.value) == f"{path}:{line}: {what}"
        return
    m = import_keepalived(str(path), "low")
    errors, pending = validate(render(m, "lvsd import keepalived"))
    assert errors == [] and pending == []
    assert len(m.services) == SERVICES[path.name[:2]]
    assert all(line.startswith(str(CORPUS)) or not line.startswith("/") for line in m.notes.render())


@pytest.mark.skipif(not FILES, reason="no corpus")
def test_corpus_output_passes_the_loader_with_the_keys_of_the_runtime_half() -> None:
    """sorry_mode, sorry_inhibit and [ha] auth_pass: the loader knows them (none is pending)."""
    for path in FILES:
        if path.name not in REFUSED:
            errors, pending = validate(render(import_keepalived(str(path), "low"), "x"))
            assert errors == [] and pending == [], path.name


def test_the_large_file_translates_every_service_and_server() -> None:
    path = CORPUS / "08-issue1773-large-tun-production.conf"
    if not path.exists():
        pytest.skip("no corpus")
    m = import_keepalived(str(path), "x")
    assert len(m.services) == 157 and sum(len(s["server"]) for s in m.services) == 448
    assert {s["forward"] for s in m.services} == {"tun"}
    https = [ck for s in m.services for srv in s["server"] for ck in srv["check"] if ck["type"] == "https"]
    assert https and all(ck["verify"] is False for ck in https)


def test_a_refused_file_prints_one_line_and_no_traceback() -> None:
    path = CORPUS / "13-issue1715-tun-sorry-vrrp-tracks-quorum.conf"
    if not path.exists():
        pytest.skip("no corpus")
    r = subprocess.run([sys.executable, "-m", "lvsd.daemon.main", "import", "keepalived", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 78 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{path}:23: virtual_router_id must be 1..255, got 0"]
