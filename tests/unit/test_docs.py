"""The user documentation names everything the code accepts or emits: every config key in its
section of configuration.md, every hook variable, every metric, API route and command-line option,
and every relative link resolves. A new key, metric or option without documentation fails here."""

from __future__ import annotations

import itertools
import os
import re

import pytest

import lvsd.config.load as L
from lvsd.cli import lvsctl
from lvsd.cli.lvsadm_parse import OPTIONS
from lvsd.daemon import main as lvsd_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def _section(text: str, heading: str) -> str:
    """The text from the heading line that starts with ``heading`` to the next heading of its level."""
    m = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.M)  # heading without its #s
    assert m, f"no heading {heading!r}"
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, m.end())
    return text[m.end() : end.start() if end else len(text)]


def _code_words(text: str) -> set[str]:
    """Every word inside a `code span` (keys are named there, also inside `{ a, b }` types)."""
    return {w for span in re.findall(r"`([^`\n]+)`", text) for w in re.findall(r"[A-Za-z_][\w.-]*", span)}


CONFIG_SECTIONS = {
    "`[daemon]`": L.DAEMON_KEYS,
    "`[ipvs]`": L.IPVS_KEYS + L.TIMEOUT_KEYS,
    "`[defaults]`": (),
    "`[[service]]`": L.SERVICE_ONLY + L.SERVICE_INHERITED + L.PERSISTENCE_KEYS + L.SORRY_KEYS,
    "`[[service.server]]`": L.SERVER_KEYS + L.THRESHOLD_KEYS + L.TUNNEL_KEYS,
    "Health checks": L.ALL_CHECK_KEYS,
    "`[ha]`": L.HA_KEYS,
    "`[sync]`": L.SYNC_KEYS,
    "`[api]`": L.API_KEYS,
    "`[metrics]`": L.METRICS_KEYS,
}


@pytest.mark.parametrize("heading", CONFIG_SECTIONS)
def test_every_config_key_is_documented_in_its_section(heading: str) -> None:
    words = _code_words(_section(_read("docs", "configuration.md"), heading))
    words |= {w.rsplit(".", 1)[-1] for w in words}  # `persistence.timeout` names `timeout`
    assert [k for k in CONFIG_SECTIONS[heading] if k not in words] == []


def test_every_top_level_table_has_a_section() -> None:
    headings = re.findall(r"^## `\[+([\w.]+)\]+`", _read("docs", "configuration.md"), re.M)
    assert set(L.TOP_KEYS) <= set(headings)


def test_every_check_type_has_a_section() -> None:
    text = _section(_read("docs", "configuration.md"), "Health checks")
    for t in L.CHECK_KEYS:
        assert re.search(rf"^### .*`{t}`", text, re.M), t


def _env_vars_in(*paths: str) -> set[str]:
    found: set[str] = set()
    for p in paths:
        src = _read(*p.split("/"))
        found |= set(re.findall(r"[\"'](LVSD_[A-Z_]+)[\"']", src))
        found |= set(re.findall(r"\b(LVSD_[A-Z_]+)=", src))
    return found


def test_every_hook_and_script_variable_is_documented() -> None:
    env = _env_vars_in("lvsd/daemon/daemon.py", "lvsd/daemon/ha.py", "lvsd/checks/script.py")
    assert {"LVSD_EVENT", "LVSD_ROLE", "LVSD_CHECK_ADDR"} <= env  # the scan itself works
    doc = _read("docs", "configuration.md")
    assert sorted(v for v in env if f"`{v}`" not in doc) == []


def _metric_names(word: str) -> list[str]:
    """`lvsd_x_{a,b}_total{service}` -> lvsd_x_a_total, lvsd_x_b_total (a final label set is dropped)."""
    word = re.sub(r"(?<!_)\{[^{}]*\}$", "", word)
    parts = re.split(r"\{([^{}]*)\}", word)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_every_metric_is_documented() -> None:
    names = set(re.findall(r"\"(lvsd_[a-z_]+)\"", _read("lvsd", "daemon", "metrics.py")))
    assert len(names) > 10
    doc = _read("docs", "operations.md")
    documented = {n for w in re.findall(r"`(lvsd_[^`]+)`", doc) for n in _metric_names(w)}
    assert sorted(names - documented) == []


def test_every_api_route_and_lvsctl_command_is_documented() -> None:
    doc = _read("docs", "operations.md")
    for method, route in re.findall(r"add_(get|post)\(\"(/\w+)\"", _read("lvsd", "daemon", "api.py")):
        assert f"`{method.upper()} {route}" in doc, route
    for cmd in ("status", "services", "reload", "role", "metrics"):
        assert f"lvsctl {cmd}" in doc or re.search(rf"\|{cmd}\b|\b{cmd}\|", doc), cmd
    assert lvsctl.DEFAULT_SOCKET in doc


def test_every_lvsd_option_is_documented() -> None:
    doc = _read("docs", "operations.md")
    opts = [o for a in lvsd_main._parser()._actions for o in a.option_strings if o.startswith("--")]
    assert sorted(o for o in opts if o not in doc and o != "--help") == []


def test_every_lvsadm_option_is_documented() -> None:
    doc = _read("docs", "lvsadm.md")
    missing = [f"--{o[0]}" for o in OPTIONS if f"`--{o[0]}" not in doc]
    missing += [f"-{o[1]}" for o in OPTIONS if o[1] and not re.search(rf"`-{re.escape(o[1])}\b", doc)]
    missing += [x for x in ("--json", "--atomic", "--backend", "--state", "LVSADM_BACKEND", "LVSADM_STATE") if x not in doc]
    assert missing == []


def test_relative_links_resolve() -> None:
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".md"):
            continue
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _read("docs", name)):
            assert os.path.exists(os.path.normpath(os.path.join(DOCS, target))), f"{name}: {target}"
