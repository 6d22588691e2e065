#!/usr/bin/env python3
"""Render the man pages lvsd(8), lvsctl(8), lvsadm(8) and lvsd.toml(5) from the docs.

The pages have no text of their own beyond a NAME line and a FILES/SEE ALSO footer: their body is
docs/operations.md, docs/lvsadm.md and docs/configuration.md (the Markdown the docs are), and the
SYNOPSIS/OPTIONS of lvsd and lvsctl come from their argparse parsers, so a page cannot drift from
the docs or the code. Only the Markdown the docs use is handled (headings, paragraphs, lists,
tables, fenced code, inline code/bold/italic/links); the output is plain man(7) roff, no tbl.

    python3 docs/man/render.py --out DIR      # writes DIR/lvsd.8 DIR/lvsctl.8 DIR/lvsadm.8 DIR/lvsd.toml.5

Run from the checkout (it imports lvsd from it). The Debian package runs it at build time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
DATE = "2026-12-03"
SOURCE = "lvsd 0.1.0"


# --- inline Markdown -> roff --------------------------------------------------------------------

def _esc(text: str, code: bool = False) -> str:
    """Escape roff's specials; in code every hyphen is a minus (options must copy-paste)."""
    text = text.replace("\\", "\\e")
    if code:
        text = text.replace("-", "\\-")
    else:
        text = re.sub(r"(?:(?<=^)|(?<=[\s(\[/|]))-", r"\\-", text)  # -f, --json in prose
    text = text.replace("'", "\\(aq") if code else text
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def inline(text: str) -> str:
    """One line of Markdown inline markup as roff (code bold, emphasis italic, links as their text)."""
    out: list[str] = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            code = _esc(part[1:-1], code=True)
            if len(code) > 30:  # a long literal (a metric family) may break after , and _
                code = re.sub(r"([,_])", r"\1\\:", code)
            out.append("\\fB" + code + "\\fR")
            continue
        part = re.sub(r"\[([^\]]+)\]\((https?://[^)]+)\)", r"\1 <\2>", part)
        part = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", part)  # relative links: the page's text
        part = _esc(part)
        part = re.sub(r"\*\*(.+?)\*\*", r"\\fB\1\\fR", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\\fI\1\\fR", part)
        part = re.sub(r"(?<!\w)_(?!\s)([^_]+?)(?<!\s)_(?!\w)", r"\\fI\1\\fR", part)
        out.append(part)
    return "".join(out)


def _line(text: str) -> str:
    """A roff text line: a leading . or ' would be read as a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


# --- block Markdown -> roff ---------------------------------------------------------------------

def _heading(text: str) -> str:
    """A heading's text for .SH/.SS: prose in capitals (man's convention), code spans as they are."""
    parts = re.split(r"(`[^`]*`)", text)
    plain = "".join(p if i % 2 else p.upper() for i, p in enumerate(parts))
    return inline(plain).replace('"', '\\(dq')


def markdown(text: str, skip_title: bool = True) -> list[str]:
    """Markdown (the subset the docs use) as man(7) roff lines."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.extend([".PP", _line(inline(" ".join(s.strip() for s in para)))])
            para.clear()

    while i < len(lines):
        ln = lines[i]
        if ln.startswith("```"):
            flush()
            out.extend([".PP", ".RS 4", ".nf"])
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(_line(_esc(lines[i], code=True)) if lines[i] else "")
                i += 1
            out.extend([".fi", ".RE"])
        elif m := re.match(r"(#+) (.*)", ln):
            flush()
            level, title = len(m.group(1)), m.group(2).strip()
            if level == 1 and skip_title:
                pass
            elif level <= 2:
                out.append(f'.SH "{_heading(title)}"')
            else:
                out.append(f'.SS "{inline(title).replace(chr(34), "")}"')
        elif ln.startswith("|") and i + 1 < len(lines) and re.match(r"\|?\s*:?-{3}", lines[i + 1]):
            flush()
            head = _cells(ln)
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _cells(lines[i])
                out.extend([".TP", _line(inline(cells[0]))])
                rest = []
                for h, c in zip(head[1:-1], cells[1:-1], strict=False):  # a short row: fewer cells
                    if c:
                        rest.append(f"\\fI{_esc(h)}\\fR {inline(c)};")
                if len(cells) > 1:
                    rest.append(inline(cells[-1]))
                out.append(_line(" ".join(rest)))
                i += 1
            continue
        elif m := re.match(r"(\s*)([*-]|\d+\.) (.*)", ln):
            flush()
            mark = "\\(bu" if m.group(2) in "*-" else m.group(2)
            indent = len(m.group(1)) + len(m.group(2)) + 1
            item = [m.group(3)]
            i += 1
            while i < len(lines) and lines[i].startswith(" " * indent) and lines[i].strip():
                item.append(lines[i])
                i += 1
            out.extend([f".IP {mark} 4", _line(inline(" ".join(s.strip() for s in item)))])
            continue
        elif not ln.strip():
            flush()
        else:
            para.append(ln)
        i += 1
    flush()
    return out


def section(text: str, heading: str) -> str:
    """The Markdown from the heading that starts with ``heading`` to the next one of its level."""
    m = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.M)
    if not m:
        raise SystemExit(f"render.py: no heading {heading!r}")
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, m.end())
    return text[m.start() : end.start() if end else len(text)]


# --- command-line options, from the parsers ------------------------------------------------------

class _Parser(Exception):
    """Carries the parser a command's main() built (raised from its parse_args)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser")
        self.parser = parser


def parser_of(main: Callable[[list[str]], object]) -> argparse.ArgumentParser:
    """The ArgumentParser ``main`` builds, caught at its parse_args (lvsctl builds it inline)."""
    real = argparse.ArgumentParser.parse_args

    def catch(self: argparse.ArgumentParser, *a: object, **kw: object) -> argparse.Namespace:
        raise _Parser(self)

    argparse.ArgumentParser.parse_args = catch  # type: ignore[method-assign,assignment]  # caught, restored
    try:
        main([])
    except _Parser as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]  # restore
    raise SystemExit("render.py: main() built no parser")


def _usage_word(a: argparse.Action) -> str:
    """A sub-command's argument as its usage shows it: SERVICE, [SERVER], [--reason REASON]."""
    if a.option_strings:
        meta = "" if a.nargs == 0 else " " + (a.metavar if isinstance(a.metavar, str) else a.dest.upper())
        return f"[{a.option_strings[-1]}{meta}]"
    word = "|".join(map(str, a.choices)) if a.choices else (a.metavar if isinstance(a.metavar, str) else a.dest.upper())
    return f"[{word}]" if a.nargs == "?" else word


def options(parser: argparse.ArgumentParser) -> list[str]:
    """SYNOPSIS and OPTIONS sections: every option and sub-command with its help."""
    usage = parser.format_usage().strip().removeprefix("usage: ")
    out = [".SH SYNOPSIS", ".nf", _line(_esc(re.sub(r"\s+", " ", usage), code=True)), ".fi", ".SH OPTIONS"]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for choice in a._choices_actions:
                sub = a.choices[choice.dest]
                args = " ".join(_usage_word(x) for x in sub._actions
                                if not isinstance(x, argparse._HelpAction))
                out.extend([".TP", f"\\fB{_esc(choice.dest, code=True)}\\fR {_esc(args)}".rstrip(),
                            _line(_esc(choice.help or ""))])
            continue
        if not a.option_strings:
            continue
        meta = ""
        if a.nargs != 0:
            choices = "{" + ",".join(map(str, a.choices)) + "}" if a.choices else a.dest.upper()
            meta = a.metavar if isinstance(a.metavar, str) else choices
            meta = f"[{meta}]" if a.nargs == "?" else meta
        names = ", ".join(f"\\fB{_esc(o, code=True)}\\fR" + (f" \\fI{_esc(meta)}\\fR" if meta else "")
                          for o in a.option_strings)
        out.extend([".TP", names, _line(_esc((a.help or "") % {"default": a.default}))])
    return out


# --- the pages ----------------------------------------------------------------------------------

@dataclass
class Page:
    """One man page: its name, section, NAME line and body."""

    name: str
    section: int
    summary: str
    body: list[str] = field(default_factory=list)

    def roff(self) -> str:
        """The page as a man(7) source file."""
        head = [
            f'.TH "{self.name.upper()}" "{self.section}" "{DATE}" "{SOURCE}" "lvsd"',
            ".\\\" Generated by docs/man/render.py from the docs; edit those, not this file.",
            ".ad l",  # ragged right: long literals leave lines that justification cannot fill
            ".nh",  # no hyphenation: options and keys are copied from the page
            ".SH NAME",
            f"{_esc(self.name, code=True)} \\- {_esc(self.summary)}",
        ]
        return "\n".join(head + self.body) + "\n"


def _read(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def _footer(files: list[tuple[str, str]], see: list[str]) -> list[str]:
    out = [".SH FILES"]
    for path, what in files:
        out.extend([".TP", f"\\fI{_esc(path, code=True)}\\fR", _line(_esc(what))])
    refs = [re.sub(r"^([\w.]+)\((\d)\)$", r"\\fB\1\\fR(\2)", x) for x in see]
    return out + ['.SH "SEE ALSO"', ",\n".join(refs)]


FILES = [
    ("/etc/lvsd/lvsd.toml", "the configuration (lvsd.toml(5))"),
    ("/run/lvsd/lvsd.sock", "the control socket lvsctl talks to"),
    ("/var/lib/lvsd/managed.json", "the services lvsd manages (daemon.state_file)"),
    ("/lib/systemd/system/lvsd.service", "the systemd unit"),
]


def pages() -> Iterator[Page]:
    """Every man page the package ships."""
    sys.path.insert(0, ROOT)
    from lvsd.cli import lvsctl
    from lvsd.daemon import main as lvsd_main

    ops = _read("operations.md")
    yield Page("lvsd", 8, "director agent for Linux IPVS: health checks, reconcile, HA",
               options(lvsd_main._parser()) + markdown(section(_read("migration.md"), "The import command"))
               + [".SH DESCRIPTION"] + markdown(ops)
               + _footer(FILES, ["lvsctl(8)", "lvsadm(8)", "lvsd.toml(5)", "ipvsadm(8)", "systemctl(1)"]))
    yield Page("lvsctl", 8, "query and steer a running lvsd",
               options(parser_of(lvsctl.main))
               + markdown(section(ops, "Control socket and lvsctl"))
               + markdown(section(ops, "Metrics"))
               + _footer(FILES[1:2], ["lvsd(8)", "lvsd.toml(5)"]))
    yield Page("lvsadm", 8, "the ipvsadm 1.31 drop-in: administer the kernel's IPVS table",
               [".SH SYNOPSIS"] + markdown(_read("lvsadm.md"))
               + _footer([], ["ipvsadm(8)", "lvsd(8)"]))
    yield Page("lvsd.toml", 5, "lvsd configuration file",
               [".SH DESCRIPTION"] + markdown(_read("configuration.md"))
               + _footer(FILES[:1], ["lvsd(8)", "lvsctl(8)"]))


def main(argv: list[str] | None = None) -> int:
    """Write every page into --out."""
    p = argparse.ArgumentParser(description="Render lvsd's man pages from its docs.")
    p.add_argument("--out", required=True, help="directory for NAME.SECTION files")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for page in pages():
        with open(os.path.join(args.out, f"{page.name}.{page.section}"), "w", encoding="utf-8") as f:
            f.write(page.roff())
    return 0


if __name__ == "__main__":
    sys.exit(main())
