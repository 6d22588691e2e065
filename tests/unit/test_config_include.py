"""``include``: services from conf.d files, sorted, errors naming their file, duplicates across
files refused naming both, the one-file limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config import ConfigError, load_config
from lvsd.config import include as include_mod
from lvsd.config import load as load_mod

MAIN = """
include = ["conf.d/*.toml"]
[defaults]
forward = "nat"
[[service]]
name = "main"
vip = "10.0.0.1:80"
server = [{ address = "192.168.0.1" }]
"""


def svc(name: str, vip: str, extra: str = "") -> str:
    return f'[[service]]\nname = "{name}"\nvip = "{vip}"\n{extra}server = [{{ address = "192.168.1.1" }}]\n'


def setup(tmp_path: Path, files: dict[str, str], main: str = MAIN) -> Path:
    (tmp_path / "conf.d").mkdir()
    for name, text in files.items():
        (tmp_path / "conf.d" / name).write_text(text)
    p = tmp_path / "lvsd.toml"
    p.write_text(main)
    return p


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(str(path), check_files=False)
    return e.value.errors


def test_included_services_follow_the_main_files_in_sorted_order_with_its_defaults(tmp_path: Path) -> None:
    p = setup(tmp_path, {"b.toml": svc("b", "10.0.0.3:80"), "a.toml": svc("a", "10.0.0.2:80"), "x.conf": "junk"})
    cfg = load_config(str(p), check_files=False)
    assert [s.name for s in cfg.services] == ["main", "a", "b"]
    assert cfg.services[1].servers[0].dest.forward == cfg.services[0].servers[0].dest.forward  # [defaults] apply


def test_an_empty_conf_d_is_fine_and_a_missing_literal_path_is_not(tmp_path: Path) -> None:
    p = setup(tmp_path, {})
    assert [s.name for s in load_config(str(p), check_files=False).services] == ["main"]
    p.write_text(MAIN.replace('"conf.d/*.toml"', '"conf.d/web.toml"'))
    assert errors(p) == [f"include: {tmp_path}/conf.d/web.toml: no such file"]


def test_an_error_in_an_included_service_names_its_file(tmp_path: Path) -> None:
    p = setup(tmp_path, {"a.toml": svc("a", "10.0.0.2:80"), "b.toml": "[[service]]\nvip = \"10.0.0.3:80\"\nweight = -1\n"})
    b = tmp_path / "conf.d" / "b.toml"
    errs = errors(p)
    assert errs and all(e.startswith(f"{b}: service[0]") for e in errs), errs
    (tmp_path / "conf.d" / "a.toml").write_text(svc("a", "10.0.0.2:80", "scheduler = 7\n"))
    b.unlink()
    assert errors(p) == [f"{tmp_path}/conf.d/a.toml: service[a].scheduler: must be a string, got integer 7"]


def test_toml_syntax_errors_and_foreign_sections_name_the_file(tmp_path: Path) -> None:
    p = setup(tmp_path, {"a.toml": "[[service]\n", "b.toml": "[daemon]\nresync = 5\n"})
    errs = errors(p)
    assert errs[0].startswith(f"{tmp_path}/conf.d/a.toml:1:") and "TOML syntax error" in errs[0]
    assert errs[1] == f"{tmp_path}/conf.d/b.toml: daemon: not allowed in an included file (only [[service]] tables)"


def test_a_service_defined_twice_across_files_names_both(tmp_path: Path) -> None:
    p = setup(tmp_path, {"a.toml": svc("web", "10.0.0.2:80"), "b.toml": svc("web", "10.0.0.9:80")})
    a, b = tmp_path / "conf.d" / "a.toml", tmp_path / "conf.d" / "b.toml"
    assert errors(p) == [f"{b}: service[0]: name 'web' defined twice: also in {a}"]
    (tmp_path / "conf.d" / "b.toml").write_text(svc("other", "10.0.0.1:80"))  # the main file's vip
    assert errors(p) == [f"{b}: service[0]: vip tcp/10.0.0.1:80 defined twice: also in {p}"]


def test_bounded_like_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = setup(tmp_path, {"a.toml": svc("a", "10.0.0.2:80") + "#" * 5000 + "\n"})
    monkeypatch.setattr(load_mod, "MAX_CONFIG_BYTES", 4000)
    assert errors(p) == [f"{tmp_path}/conf.d/a.toml: the main file and its includes together are larger than 0 MiB"]
    monkeypatch.setattr(load_mod, "MAX_CONFIG_BYTES", 1 << 20)
    monkeypatch.setattr(include_mod, "MAX_INCLUDE_FILES", 0)
    assert errors(p) == ["include: 1 files, more than 0"]


def test_include_must_be_patterns(tmp_path: Path) -> None:
    p = setup(tmp_path, {}, main=MAIN.replace('["conf.d/*.toml"]', "5"))
    assert errors(p)[0].startswith("include: must be a path pattern or a list of them")
