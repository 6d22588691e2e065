"""lvsd's command line: --state without --backend memory is a mistake, not a kernel run."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.daemon.main import main


def test_state_without_the_memory_backend_is_refused(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text('[[service]]\nvip = "192.0.2.1:80"\n')
    for argv in (["--plan", str(cfg)], ["-f", str(cfg)], ["-f", str(cfg), "--backend", "netlink"]):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--state", str(tmp_path / "x.json")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == "lvsd: error: --state is the memory backend's file: add --backend memory"
    assert not (tmp_path / "x.json").exists()


def test_state_with_the_memory_backend_plans(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text('[[service]]\nvip = "192.0.2.1:80"\n  [[service.server]]\n  address = "10.0.0.1"\n')
    assert main(["--plan", str(cfg), "--backend", "memory", "--state", str(tmp_path / "x.json")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "add-service tcp 192.0.2.1:80 scheduler wlc",
        "add-server tcp 192.0.2.1:80 -> 10.0.0.1:80 weight 1 dr",
    ]


def test_plan_deletes_what_the_state_file_recorded_and_the_config_dropped(tmp_path: Path, capsys) -> None:
    """--plan shows what a start would do: a service recorded in daemon.state_file but no longer
    configured is deleted; an unrecorded one is left alone."""
    import json

    from lvsd.ipvs.backend import Op
    from lvsd.ipvs.memory import MemoryBackend
    from lvsd.ipvs.model import Service, ServiceKey

    state, kernel = tmp_path / "managed.json", tmp_path / "kernel.json"
    gone, other = ServiceKey.inet("tcp", "192.0.2.9", 80), ServiceKey.inet("tcp", "192.0.2.8", 80)
    with MemoryBackend(str(kernel)) as b:
        b.apply([Op.add_service(Service(gone)), Op.add_service(Service(other))])
    state.write_text(json.dumps({"services": [[gone.af, gone.protocol, gone.addr, gone.port, 0]]}))
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(f'[daemon]\nstate_file = "{state}"\n[[service]]\nvip = "192.0.2.1:80"\n')
    assert main(["--plan", str(cfg), "--backend", "memory", "--state", str(kernel)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["add-service tcp 192.0.2.1:80 scheduler wlc", "delete-service tcp 192.0.2.9:80"]
    assert "1 services in the kernel not in the config are left alone" in err


def test_check_config_does_not_import_asyncio_or_aiohttp(tmp_path: Path) -> None:
    """--check-config runs as ExecStartPre on every start: it loads the config and nothing else."""
    import subprocess
    import sys

    cfg = tmp_path / "lvsd.toml"
    cfg.write_text('[[service]]\nvip = "192.0.2.1:80"\n')
    code = (
        "import sys\nfrom lvsd.daemon.main import main\nrc = main(['--check-config', sys.argv[1]])\n"
        "print([m for m in ('asyncio', 'aiohttp') if m in sys.modules], rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[] 0"
