"""The user documentation names everything the code accepts or emits: every config key in its
section of configuration.md, every hook variable, every metric, API route and command-line option,
and every relative link resolves. A new key, metric or option without documentation fails here."""

from __future__ import annotations

import itertools
import os
import re

import pytest

from lvsd.checks.registry import CHECK_TYPES, check_class
from lvsd.cli import lvsctl
from lvsd.cli.lvsadm_parse import OPTIONS
from lvsd.config import layers, sections
from lvsd.config.checks import COMMON_KEYS, NET_KEYS, NetCheckConfig
from lvsd.config.keys import Key, names
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


#: the key rows (lvsd.config.keys.Key) of each section of configuration.md
CONFIG_SECTIONS: dict[str, tuple[Key, ...]] = {
    "`[daemon]`": sections.DAEMON_ROWS,
    "`[ipvs]`": sections.IPVS_ROWS + sections.TIMEOUT_ROWS,
    "`[defaults]`": (),
    "`[[service]]`": layers.SERVICE_ROWS + layers.SERVICE_WIDE_ROWS + layers.PERSISTENCE_ROWS + layers.SORRY_ROWS,
    "`[[service.server]]`": layers.SERVER_ROWS + layers.SERVER_WIDE_ROWS + layers.THRESHOLD_ROWS + layers.TUNNEL_ROWS,
    "`[ha]`": sections.HA_ROWS,
    "`[sync]`": sections.SYNC_ROWS,
    "`[api]`": sections.API_ROWS,
    "`[metrics]`": sections.METRICS_ROWS,
}


@pytest.mark.parametrize("heading", CONFIG_SECTIONS)
def test_every_config_key_is_documented_in_its_section(heading: str) -> None:
    words = _code_words(_section(_read("docs", "configuration.md"), heading))
    words |= {w.rsplit(".", 1)[-1] for w in words}  # `persistence.timeout` names `timeout`
    assert [k for k in names(CONFIG_SECTIONS[heading]) if k not in words] == []


def test_every_top_level_table_has_a_section() -> None:
    headings = re.findall(r"^## `\[+([\w.]+)\]+`", _read("docs", "configuration.md"), re.M)
    assert set(sections.TOP_KEYS) <= set(headings)


def _check_sections() -> dict[str, str]:
    """Check type -> the text of its ``### `type` ...`` subsection of "Health checks"."""
    text = _section(_read("docs", "configuration.md"), "Health checks")
    out = {}
    for t in CHECK_TYPES:
        # the type's own heading names only types: "### `tcp`", "### `http` and `https`"
        own = [h for h in re.findall(r"^### ((?:`\w+`(?: and )?)+)$", text, re.M) if f"`{t}`" in h]
        assert own, f"no section for check type {t}"
        out[t] = _section(text, own[0])
    return out


@pytest.mark.parametrize("ctype", CHECK_TYPES)
def test_every_check_key_is_documented_under_its_type(ctype: str) -> None:
    """The registry's rows of each type: common keys under "Keys of every check", network keys
    under "Network checks", the type's own keys in its own section."""
    health = _section(_read("docs", "configuration.md"), "Health checks")
    cls = check_class(ctype)
    own = [k for k in cls.rows(ctype) if k not in COMMON_KEYS + NET_KEYS]
    places = [(_section(health, "Keys of every check"), COMMON_KEYS), (_check_sections()[ctype], tuple(own))]
    if issubclass(cls, NetCheckConfig):
        places.append((_section(health, "Network checks"), NET_KEYS))
    for text, rows in places:
        words = _code_words(text)
        assert [k for k in names(rows) if k not in words] == [], ctype


def _every_row() -> list[Key]:
    rows = [k for rs in CONFIG_SECTIONS.values() for k in rs]
    return rows + [k for t in CHECK_TYPES for k in check_class(t).rows(t)]


def test_every_key_row_has_a_one_line_doc() -> None:
    assert [k.name for k in _every_row() if not k.doc or "\n" in k.doc] == []


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
