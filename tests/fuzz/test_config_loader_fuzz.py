"""Fuzzer of the config loader, structure-aware: the shipped conf/*.toml parsed to documents, then
every kind of leaf or table replaced by hostile values (huge and tiny numbers, NaN and inf, NUL and
control characters, long strings, deep nesting, wrong types, dates), keys removed, added and
duplicated, list items repeated; and the TOML text itself cut at any length, lines duplicated
(duplicate keys and tables) or hostile lines inserted.

The oracle: either ``ConfigError`` whose every line is one ``path: what is wrong`` (never a
traceback, never the loader's "internal error" safety net), or a ``Config`` whose plan the memory
backend (the kernel's twin: its refusals, its wraps) applies without a refusal and dumps back
exactly as planned. ``LVSD_FUZZ_EXAMPLES=N`` sets the budget (tests/fuzz/budget.py).
"""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import re
from typing import Any

from budget import budget
from hypothesis import given
from hypothesis import strategies as st

from lvsd.config import ConfigError, parse_config
from lvsd.config.load import build_config
from lvsd.config.model import Config
from lvsd.core.plan import plan
from lvsd.ipvs.backend import BatchError, IPVSError
from lvsd.ipvs.memory import KERNEL_SCHEDULERS, MemoryBackend

try:
    import tomli as toml
except ImportError:  # pragma: no cover
    import tomllib as toml  # type: ignore[no-redef]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = sorted(glob.glob(os.path.join(ROOT, "conf", "*.toml")))
TEXTS = {os.path.basename(p): open(p, encoding="utf-8").read() for p in FILES}
DOCS = {name: toml.loads(text) for name, text in TEXTS.items()}
#: one line of a ConfigError: a path or a file name, ": ", what is wrong
LINE = re.compile(r"[^\s:][^\n]*?: \S[^\n]*")


def resolver(host: str, af: int | None) -> list[str]:
    """Hostnames resolve to a documentation address of the family asked (no DNS in a fuzzer)."""
    return ["2001:db8::77"] if af == 10 else ["192.0.2.77"]


# --- the oracle ------------------------------------------------------------------------------------


def judge(build: Any) -> str:
    """Run ``build()`` (a loader call); check the outcome against the oracle; "ok" or "error"."""
    try:
        cfg = build()
    except ConfigError as e:
        assert e.errors, "an empty ConfigError"
        for line in e.errors:
            assert LINE.fullmatch(line), f"not a one-line error: {line!r}"
            assert "internal error" not in line, line
        return "error"
    assert isinstance(cfg, Config)
    kernel_accepts(cfg)
    return "ok"


def kernel_accepts(cfg: Config) -> None:
    """The planner's ops for ``cfg`` apply to a fresh memory backend with no refusal, and the
    table dumps back as planned (a value that wraps or is refused would show here).

    One refusal is the config's promise, not a defect: a scheduler name lvsd does not know is
    taken as a third-party kernel module, which this kernel may lack (ENOENT)."""
    b = MemoryBackend()
    p = plan(cfg, {}, b.dump(), managed={s.key for s in cfg.services}, timeouts=b.timeouts())
    unknown = {s.key for s in cfg.services if s.service.scheduler not in KERNEL_SCHEDULERS}
    try:
        b.apply(p.ops)
    except IPVSError as e:
        failed = e.failed if isinstance(e, BatchError) else [(e.op, e)]
        for op, err in failed:
            assert op.key in unknown, f"refused: {op}: {err}"
    got = b.dump()
    assert set(got) == set(p.desired) - unknown
    for key, want in p.desired.items():
        if key in unknown:
            continue
        assert got[key].service == want.service, key
        assert got[key].dests == want.dests, key
    if cfg.ipvs.timeouts is not None:
        t, have = cfg.ipvs.timeouts, b.timeouts()
        assert (t.tcp or have.tcp, t.tcp_fin or have.tcp_fin, t.udp or have.udp) == (have.tcp, have.tcp_fin, have.udp)


# --- hostile values --------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
#: the values most likely to break a loader, drawn far more often than arbitrary ones
NASTY = [
    0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, -(2**63), 10**400, -(10**400), 10**4000,
    4294967, 4294968, 2147483, 2147484, 65487, 65488, 1023,
    float("nan"), float("inf"), -float("inf"), 1e308, 5e-324, -0.0, 0.5,
    "", "\0", "a\0b", "/bin/true\0", "root\0", "\x1b[2J", "\n", "\r\n", "\u202e", "\u00b2", "\u0663",
    "9" * 400 + "s", "9" * 400 + "ms", "9" * 400, "9" * 5000, "1e400s", "0666", "0o777", "-1s", "nan", "inf",
    "a" * 5000, "/" * 300, "255.255.255.255", "0.0.0.0:0", "[::]:0", "eth0" * 10, True, False, [], {},
]
NUMBERS = st.one_of(st.integers(), st.floats())
STRINGS = st.one_of(
    TEXT,
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "9", "\0", "é", "/"]), st.integers(200, 5000)),
)


def deep(depth: int, kind: str) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v] if kind == "list" else {"a": v}
    return v


SCALARS = st.one_of(st.sampled_from(NASTY), st.sampled_from(NASTY), NUMBERS, STRINGS, st.booleans(), st.dates(), st.datetimes(), st.times())
HOSTILE = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(NASTY),
    st.sampled_from(NASTY),
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(TEXT, SCALARS, max_size=4),
    st.builds(deep, st.integers(1, 1200), st.sampled_from(["list", "dict"])),
)


def _key_names() -> list[str]:
    """Every key name of the key table and of every check type (keys to add anywhere)."""
    from lvsd.config import load

    out = {k for n in load.__all__ if n.endswith("_KEYS") for k in getattr(load, n)}
    out |= set(load.ALL_CHECK_KEYS)
    return sorted(out)


KEY_NAMES = _key_names()


def fresh(v: Any) -> Any:
    """``v``, or a new empty container for NASTY's shared ``[]`` and ``{}`` (drawn values are
    mutated later; everything else drawn is new or immutable)."""
    return type(v)() if isinstance(v, list | dict) and not v else v


def nodes(v: Any, limit: int = 64) -> list[tuple]:
    """Every path into a document (tables, arrays and leaves) down to ``limit`` levels, without
    recursion (a drawn value may be nested 1,200 deep)."""
    out: list[tuple] = []
    stack: list[tuple[tuple, Any]] = [((), v)]
    while stack:
        path, x = stack.pop()
        out.append(path)
        if len(path) >= limit:
            continue
        if isinstance(x, dict):
            stack.extend((path + (k,), y) for k, y in x.items())
        elif isinstance(x, list):
            stack.extend((path + (i,), y) for i, y in enumerate(x))
    return out


def at(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    """A shipped config with 1..4 structure-aware mutations."""
    doc = copy.deepcopy(DOCS[draw(st.sampled_from(sorted(DOCS)))])
    for _ in range(draw(st.integers(1, 8))):
        paths = [p for p in nodes(doc) if p]
        leaves = [p for p in paths if not isinstance(at(doc, p), dict | list)]
        if not paths:
            break
        op = draw(st.sampled_from(["leaf", "leaf", "leaf", "replace", "delete", "add", "add", "repeat"]))
        path = draw(st.sampled_from(leaves if op == "leaf" and leaves else paths))
        parent, last = at(doc, path[:-1]), path[-1]
        if op == "leaf":
            op = "replace"
        if op == "replace":
            parent[last] = fresh(draw(HOSTILE))  # never the shared NASTY objects themselves
        elif op == "delete":
            del parent[last]
        elif op == "add":
            target = at(doc, path) if isinstance(at(doc, path), dict) else parent
            if isinstance(target, dict):
                target[draw(st.one_of(st.sampled_from(KEY_NAMES), st.sampled_from(KEY_NAMES), TEXT))] = fresh(draw(HOSTILE))
        elif isinstance(parent, list) and max(map(len, nodes(parent[last], 40))) < 40:  # deepcopy recurses
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(parent[last]))  # a duplicate item
    return doc


# --- a document back to TOML text ------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return v.isoformat()  # dates and times


def dumps(doc: dict) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in doc.items())


def fits_text(v: Any, depth: int = 0) -> bool:
    """What the text path can write: no integer str() refuses, nesting the parser takes."""
    if depth > 300:
        return False
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) < 10**4000
    if isinstance(v, dict):
        return all(fits_text(x, depth + 1) for x in v.values())
    if isinstance(v, list):
        return all(fits_text(x, depth + 1) for x in v)
    return True


# --- the fuzz tests --------------------------------------------------------------------------------


def test_shipped_configs_pass_the_oracle() -> None:
    for name, doc in DOCS.items():
        assert judge(lambda d=doc, n=name: build_config(d, n, resolver, check_files=False)) == "ok", name


@budget(400)
@given(mutated())
def test_mutated_documents_give_config_errors_or_a_config_the_kernel_keeps(doc: dict) -> None:
    judge(lambda: build_config(doc, "fuzz", resolver, check_files=False))


@budget(150)
@given(mutated())
def test_mutated_documents_as_toml_text(doc: dict) -> None:
    """The same documents written as TOML and read back through the parser."""
    if fits_text(doc):
        judge(lambda: parse_config(dumps(doc), "fuzz.toml", resolver, check_files=False))


@budget(300)
@given(st.sampled_from(sorted(TEXTS)), st.data())
def test_text_cut_duplicated_or_extended_anywhere(name: str, data: st.DataObject) -> None:
    """A shipped file cut at any length (a full disk), a line repeated (duplicate keys and
    tables) or a hostile line inserted anywhere."""
    text = TEXTS[name]
    lines = text.splitlines(keepends=True)
    op = data.draw(st.sampled_from(["cut", "dup", "insert"]))
    if op == "cut":
        text = text[: data.draw(st.integers(0, len(text)))]
    elif op == "dup":
        i = data.draw(st.integers(0, len(lines) - 1))
        text = "".join(lines[: i + 1] + lines[i:])
    else:
        i = data.draw(st.integers(0, len(lines)))
        key = data.draw(st.one_of(TEXT, st.sampled_from(["weight", "timeout", "upper", "mode", "user", "argv", "service", "check"])))
        value = fresh(data.draw(SCALARS.filter(fits_text)))
        text = "".join(lines[:i] + [f"{json.dumps(key, ensure_ascii=False)} = {toml_value(value)}\n"] + lines[i:])
    judge(lambda: parse_config(text, name, resolver, check_files=False))


def test_every_line_boundary_cut_of_every_shipped_file() -> None:
    """The deterministic part of truncation: every shipped file cut after each of its lines."""
    for name, text in TEXTS.items():
        lines = text.splitlines(keepends=True)
        for i in range(len(lines) + 1):
            cut = "".join(lines[:i])
            judge(lambda t=cut, n=name: parse_config(t, n, resolver, check_files=False))
