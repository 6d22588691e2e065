"""``lvsd import keepalived|ldirectord FILE``: print the lvsd TOML on stdout (or ``-o FILE``), the
notes (what was not translated, file:line) on stderr. Exit 0, or 78 (EX_CONFIG) with one
``file:line: what is wrong`` line when the input is invalid."""

from __future__ import annotations

import argparse
import os
import sys

from .model import Imported, MigrateError

EX_CONFIG = 78


def parser() -> argparse.ArgumentParser:
    """The ``lvsd import`` argument parser."""
    p = argparse.ArgumentParser(
        prog="lvsd import",
        description="Translate a keepalived.conf (its LVS part and VRRP instance) or an ldirectord.cf into an "
        "lvsd TOML config on stdout; what cannot be translated is listed on stderr with file and line.",
    )
    p.add_argument("format", choices=("keepalived", "ldirectord"), help="the input's format")
    p.add_argument("file", metavar="FILE", help="the keepalived.conf or ldirectord.cf to translate")
    p.add_argument("-o", "--output", metavar="OUT", help="write the TOML here instead of stdout")
    p.add_argument("--config-id", metavar="ID",
                   help="keepalived: the config id that '@ID' lines are kept for (default: the host name's "
                   "first part, as keepalived)")
    p.add_argument("--quiet", action="store_true", help="do not print the notes")
    return p


def translate(fmt: str, path: str, config_id: str | None = None) -> Imported:
    """The model of ``path`` in format ``fmt`` (MigrateError if it is invalid)."""
    if fmt == "keepalived":
        from .keepalived import import_keepalived

        return import_keepalived(path, config_id)
    from .ldirectord import import_ldirectord

    return import_ldirectord(path)


def main(argv: list[str]) -> int:
    """Run ``lvsd import``."""
    args = parser().parse_args(argv)
    from .emit import render

    try:
        m = translate(args.format, args.file, args.config_id)
        text = render(m, f"lvsd import {args.format}")
    except MigrateError as e:
        print(str(e), file=sys.stderr)
        return EX_CONFIG
    except RecursionError:
        print(f"{args.file}: nested too deeply", file=sys.stderr)
        return EX_CONFIG
    if not args.quiet:
        for line in m.notes.render():
            print(f"note: {line}", file=sys.stderr)
    if args.output:
        tmp = f"{args.output}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, args.output)
        except OSError as e:
            print(f"{args.output}: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
