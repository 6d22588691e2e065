"""The man pages (docs/man/render.py renders them from the docs and the parsers) name every config
key the docs test requires, every option and command of lvsd, lvsctl and lvsadm, and render
without groff warnings; the bash completions offer every option. A key or option the pages or the
completions miss fails here."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import test_docs  # the docs test's key lists: what the docs must name, the pages must name too

from lvsd.cli import lvsctl
from lvsd.cli.lvsadm_parse import OPTIONS
from lvsd.daemon import main as lvsd_main

ROOT = Path(__file__).resolve().parents[2]


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lvsd_man_render", ROOT / "docs" / "man" / "render.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


render = _render_module()


def plain(roff: str) -> str:
    """What a reader sees of a roff text, near enough: escapes undone, fonts dropped."""
    text = re.sub(r"\\\[u([0-9A-F]{4,5})\]", lambda m: chr(int(m.group(1), 16)), roff)
    for esc, char in (("\\fB", ""), ("\\fI", ""), ("\\fR", ""), ("\\-", "-"), ("\\(aq", "'"),
                      ("\\(dq", '"'), ("\\(bu", "*"), ("\\&", ""), ("\\:", ""), ("\\e", "\\")):
        text = text.replace(esc, char)
    return text


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    assert render.main(["--out", str(out)]) == 0
    return {p.name: p.read_text() for p in out.iterdir()}


def test_the_four_pages_are_rendered_with_a_whatis_line(pages: dict[str, str]) -> None:
    assert sorted(pages) == ["lvsadm.8", "lvsctl.8", "lvsd.8", "lvsd.toml.5"]
    for name, text in pages.items():
        page, section = name.rsplit(".", 1)
        assert text.startswith(f'.TH "{page.upper()}" "{section}"'), name
        assert re.search(rf"^\.SH NAME\n{re.escape(page)} \\- \S", text, re.M), name  # what `whatis` parses


def _all_keys() -> list[str]:
    """Every key the docs test requires configuration.md to name: the sections' rows and every
    check type's rows (from the check registry)."""
    rows = [k for keys in test_docs.CONFIG_SECTIONS.values() for k in keys]
    rows += [k for t in test_docs.CHECK_TYPES for k in test_docs.check_class(t).rows(t)]
    return sorted({k if isinstance(k, str) else k.name for k in rows})


def test_every_config_key_is_in_lvsd_toml_5(pages: dict[str, str]) -> None:
    keys = _all_keys()
    assert len(keys) > 50  # the key lists were found
    words = set(re.findall(r"[A-Za-z_][\w-]*", plain(pages["lvsd.toml.5"])))
    assert [k for k in keys if k not in words] == []


def _options(parser_help: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", parser_help))


def test_every_lvsd_option_is_in_lvsd_8(pages: dict[str, str]) -> None:
    opts = [o for a in lvsd_main._parser()._actions for o in a.option_strings]
    assert "--check-config" in opts
    text = plain(pages["lvsd.8"])
    assert [o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)] == []


def _lvsctl_help() -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        lvsctl.main(["--help"])
    return buf.getvalue()


def _sub_options() -> set[str]:
    """The options of lvsctl's sub-commands (--reason, --timeout, ...)."""
    parser = render.parser_of(lvsctl.main)
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {o for sp in subs for p in sp.choices.values() for a in p._actions for o in a.option_strings
            if o not in ("-h", "--help")}


def test_every_lvsctl_option_and_command_is_in_lvsctl_8(pages: dict[str, str]) -> None:
    helptext = _lvsctl_help()
    opts = _options(helptext)
    commands = re.search(r"\{([\w,-]+)\}", helptext).group(1).split(",")  # type: ignore[union-attr]  # argparse's usage
    opts |= _sub_options()
    assert {"--socket", "--json"} <= opts and "role" in commands
    text = plain(pages["lvsctl.8"])
    assert [w for w in sorted(opts) + commands if not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)] == []
    assert "master|backup|fault" in text  # role's argument


def test_every_lvsadm_option_is_in_lvsadm_8(pages: dict[str, str]) -> None:
    text = plain(pages["lvsadm.8"])
    opts = [f"--{o[0]}" for o in OPTIONS] + [f"-{o[1]}" for o in OPTIONS if o[1]]
    assert [o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)] == []


def test_markdown_blocks_become_man_macros() -> None:
    roff = "\n".join(render.markdown(
        "# Title\n\nSome `--opt` and **bold**.\n\n## Keys\n\n| key | default | what |\n| --- | --- | --- |\n"
        "| `a_b` | `1` | the a \\| b |\n\n* one\n  two\n\n```\n.dot -x\n```\n"))
    assert ".SH \"KEYS\"" in roff and "Title" not in roff
    assert "Some \\fB\\-\\-opt\\fR and \\fBbold\\fR." in roff
    assert ".TP\n\\fBa_b\\fR\n\\fIdefault\\fR \\fB1\\fR; the a | b" in roff
    assert ".IP \\(bu 4\none two" in roff
    assert ".nf\n\\&.dot \\-x\n.fi" in roff  # a code line starting with a dot is not a request


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_pages_render_without_groff_warnings(pages: dict[str, str], tmp_path: Path) -> None:
    for name, text in pages.items():
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=text, capture_output=True, text=True,
                           env=dict(os.environ, LC_ALL="C.UTF-8"))
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)  # lintian's groff-message


@pytest.mark.parametrize("cmd", ["lvsd", "lvsctl", "lvsadm"])
def test_bash_completion_offers_every_option(cmd: str) -> None:
    text = (ROOT / "completions" / cmd).read_text()
    words = set(re.findall(r"(?<![\w-])(--?[\w-]+)", text)) | set(re.findall(r"[\w-]+", text))
    if cmd == "lvsd":
        want = {o for a in lvsd_main._parser()._actions for o in a.option_strings}
    elif cmd == "lvsctl":
        want = _options(_lvsctl_help()) | _sub_options()
        want |= set(re.search(r"\{([\w,-]+)\}", _lvsctl_help()).group(1).split(","))  # type: ignore[union-attr]  # usage
    else:
        want = {f"--{o[0]}" for o in OPTIONS} | {f"-{o[1]}" for o in OPTIONS if o[1]}
        want |= {"--json", "--atomic", "--backend", "--state"}
    assert sorted(want - words) == []
