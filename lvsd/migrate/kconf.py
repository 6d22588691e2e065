"""keepalived.conf syntax: lines -> a tree of statements, as keepalived's lib/parser.c reads it.

What is handled (keepalived.conf(5), "ADVANCED CONFIGURATION" and the start of the page):
* comments from ``#`` or ``!`` (outside quotes) to the end of the line, anywhere on it;
* quoted strings with ``"`` or ``'``: ``ab" c "d`` is the one word ``ab c d``;
* ``{`` and ``}`` as words of their own, so a block may open on its statement's line, on the next
  line, or hold statements on one line (``url { path / }``);
* ``include`` (and ``includer/m/w/b/a``) with glob patterns, relative to the including file's
  directory, files in sorted order, depth-limited; a pattern matching nothing is a note for
  plain ``include`` (keepalived ignores it too) and an error for the checking variants;
* conditional lines ``@id ...`` / ``@^id ...`` against a config id (keepalived's default: the first
  part of the host name);
* parameters ``$NAME=value`` (a value may continue over lines ending in ``\\``, and then expands
  into several lines), used as ``$NAME`` or ``${NAME}``, expanded recursively at use;
* ``~SEQ(...)`` and other ``~`` sequences are refused with the line number (rarely used).

Everything after the words is kept as (file, line) so a note or an error can name it.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from .model import MigrateError, Where

#: include depth keepalived allows (it stops at a small fixed nesting)
MAX_INCLUDE_DEPTH = 8
#: a file bigger than this is not a keepalived.conf (keepalived itself has no limit; 08 is 158 kB)
MAX_FILE_BYTES = 64 << 20
_PARAM_DEF = re.compile(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_PARAM_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)(?=\s|$)")
_INCLUDES = ("include", "includer", "includem", "includew", "includeb", "includea")


@dataclass
class Stmt:
    """One statement: its words, where it is, and its block (None when it has no ``{ }``)."""

    words: list[str]
    where: Where
    block: list[Stmt] | None = None

    @property
    def key(self) -> str:
        """The keyword (first word)."""
        return self.words[0] if self.words else ""

    @property
    def args(self) -> list[str]:
        """The words after the keyword."""
        return self.words[1:]


@dataclass
class _Line:
    text: str
    where: Where


@dataclass
class Reader:
    """Reads a keepalived.conf and its includes into logical lines (see the module docstring)."""

    config_id: str
    skipped_conditional: int = 0
    missing_includes: list[str] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def read(self, path: str, depth: int = 0, where: Where | None = None) -> list[_Line]:
        """The logical lines of ``path`` with its includes spliced in."""
        if depth > MAX_INCLUDE_DEPTH:
            raise MigrateError(f"{where}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise MigrateError(f"{where or path}: cannot read {path}: {e.strerror or e}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise MigrateError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        self.files.append(path)
        text = raw.decode("utf-8", errors="surrogateescape")  # bad bytes fail only outside comments
        out: list[_Line] = []
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            w = Where(path, i + 1)
            line = lines[i].rstrip("\r")
            i += 1
            m = _PARAM_DEF.match(line)
            if m:
                parts = [m.group(2)]
                while parts[-1].endswith("\\") and i < len(lines):
                    parts[-1] = parts[-1][:-1]
                    parts.append(lines[i].rstrip("\r"))
                    i += 1
                if parts[-1].endswith("\\"):
                    parts[-1] = parts[-1][:-1]
                self.params[m.group(1)] = [p.strip() for p in parts if p.strip()]
                continue
            stripped = line.lstrip()
            if stripped.startswith("@"):
                cond, _, rest = stripped[1:].partition(" ")
                neg = cond.startswith("^")
                cond = cond[1:] if neg else cond
                if (cond == self.config_id) == neg:
                    self.skipped_conditional += 1
                    continue
                line = rest
                stripped = rest.lstrip()
            first = stripped.split(None, 1)
            if first and first[0] in _INCLUDES:
                out.extend(self._include(first[0], first[1] if len(first) > 1 else "", path, w, depth))
                continue
            out.extend(self._expand(line, w))
        return out

    def _include(self, kind: str, arg: str, path: str, w: Where, depth: int) -> list[_Line]:
        words = split_words(arg, w)
        if not words:
            raise MigrateError(f"{w}: {kind} needs a file name")
        pattern = os.path.join(os.path.dirname(path), words[0])
        names = sorted(glob.glob(pattern))
        if not names:
            if kind == "include" or kind == "includer":
                self.missing_includes.append(f"{w}: {kind} {words[0]}: no such file (ignored, as keepalived does)")
                return []
            raise MigrateError(f"{w}: {kind} {words[0]}: no such file")
        out: list[_Line] = []
        for name in names:
            out.extend(self.read(name, depth + 1, w))
        return out

    def _expand(self, line: str, w: Where, depth: int = 0) -> list[_Line]:
        """Substitute parameters; a multi-line value makes several lines."""
        if "~SEQ" in line or re.search(r"(^|\s)~[A-Za-z]", strip_comment(line)):
            raise MigrateError(f"{w}: ~SEQ sequences are not supported by lvsd import: expand them by hand")
        if "$" not in line:
            return [_Line(line, w)]
        if depth > 20:
            raise MigrateError(f"{w}: parameter substitution does not end (a parameter refers to itself?)")
        changed = False

        def sub(m: re.Match[str]) -> str:
            nonlocal changed
            name = m.group(1) or m.group(2)
            if name not in self.params:
                return m.group(0)  # keepalived leaves unknown parameters as they are
            changed = True
            return "\n".join(self.params[name])

        new = _PARAM_USE.sub(sub, strip_comment(line))
        if not changed:
            return [_Line(line, w)]
        out: list[_Line] = []
        for part in new.split("\n"):
            out.extend(self._expand(part, w, depth + 1))
        return out


def strip_comment(line: str) -> str:
    """``line`` without its comment (``#`` or ``!`` outside quotes)."""
    q = ""
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = ""
        elif c in "\"'":
            q = c
        elif c in "#!":
            return line[:i]
    return line


def split_words(line: str, w: Where) -> list[str]:
    """Words of one line (comment removed, quotes joined, braces separate)."""
    words: list[str] = []
    cur: list[str] = []
    have = False
    q = ""
    for c in line:
        if q:
            if c == q:
                q = ""
            else:
                cur.append(c)
            continue
        if c in "\"'":
            q = c
            have = True
        elif c in "#!":
            break
        elif c.isspace():
            if have:
                words.append("".join(cur))
                cur, have = [], False
        elif c in "{}":
            if have:
                words.append("".join(cur))
                cur, have = [], False
            words.append(c)
        else:
            cur.append(c)
            have = True
    if q:
        raise MigrateError(f"{w}: unterminated quoted string")
    if have:
        words.append("".join(cur))
    for word in words:
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            raise MigrateError(f"{w}: not UTF-8 text outside a comment: {word.encode('utf-8', 'surrogateescape')!r}") from None
    return words


def parse(path: str, config_id: str) -> tuple[list[Stmt], Reader]:
    """The statement tree of ``path`` (includes followed) and the reader (for its notes)."""
    rd = Reader(config_id)
    lines = rd.read(path)
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], Where | None]] = [(root, None)]
    last: Stmt | None = None  # the last statement of the current block (a lone "{" opens its block)
    for ln in lines:
        words = split_words(ln.text, ln.where)
        cur: list[str] = []
        for word in words + ["\n"]:
            if word in ("{", "}", "\n"):
                if cur:
                    last = Stmt(cur, ln.where)
                    stack[-1][0].append(last)
                    cur = []
                if word == "{":
                    if last is None or last.block is not None:
                        raise MigrateError(f"{ln.where}: '{{' without a keyword before it")
                    last.block = []
                    stack.append((last.block, ln.where))
                    last = None
                elif word == "}":
                    if len(stack) == 1:
                        raise MigrateError(f"{ln.where}: '}}' closes no block")
                    stack.pop()
                    last = None
                else:
                    pass
            else:
                cur.append(word)
        # a statement ends at the end of its line: only a lone "{" on the next line may open its block
        if words and words[-1] not in ("{", "}") and stack[-1][0]:
            last = stack[-1][0][-1]
        elif words and words[-1] == "}":
            last = None
    if len(stack) > 1:
        raise MigrateError(f"{stack[-1][1]}: block opened here is never closed")
    return root, rd
