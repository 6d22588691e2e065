"""File check (``type = "file"``): a file another system writes steers a server (keepalived's
FILE_CHECK/track_file, ldirectord's ``maintenancedir``).

Modes (``mode``):
* ``"presence"``: the file exists (any type) = down ("maintenance"); absent = up.
* ``"status"``: the file holds an integer: 0 = up, anything else = down (keepalived's track_file with
  ``weight 0``). Absent or empty = up (keepalived reads that as 0).
* ``"weight"``: the file holds an integer: N > 0 = up with weight N (over the configured one),
  0 or negative = down. Absent or empty = up with the configured weight (no override).
Content that is not an integer, a file over 4 KiB, a directory, a FIFO or a device (in the two
content modes), or a read error (permission denied) = down with that reason, never an exception.

Watched without polling: one inotify descriptor per event loop (ctypes, no dependency) watches the
file's directory (so creation, deletion and atomic renames are seen); a probe re-reads the file only
after an event for its name, and otherwise answers from the last read without a system call. Where
inotify is not available (the directory does not exist, no inotify, out of watches) every probe
reads the file: a poll at ``interval``. Reads never block: the file is opened with O_NONBLOCK and
checked to be a regular file before a bounded read.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.config.checks import CheckConfig
from lvsd.config.keys import Choice, Key
from lvsd.config.reader import Reader, Table, _p, _show

from .base import Checker

if TYPE_CHECKING:
    import asyncio

    from .base import Done

MODES = ("presence", "status", "weight")
#: the largest file the content modes read (an integer needs a few bytes)
MAX_BYTES = 4096
WEIGHT_MAX = 2147483647


def _path(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """Required, absolute (the daemon's working directory is not the config's)."""
    v = r.get_str(tbl, key, path)
    if v is None:
        if key not in tbl:
            r.err(_p(path, key), 'missing: the file to watch, e.g. "/var/lib/lvsd/maint/web1"')
        return default
    if not v.startswith("/") or v.endswith("/"):
        r.err(_p(path, key), f"must be an absolute file path, got {_show(v)}")
    return v


@dataclass(frozen=True, slots=True)
class FileCheck(CheckConfig):
    """``type = "file"``: the server's state (or weight) comes from a file; see the module docstring."""

    KEYS: ClassVar[tuple[Key, ...]] = (
        Key("path", _path, "", doc="the file to watch, an absolute path (required)"),
        Key("mode", Choice(MODES), "presence",
            doc="presence: file there = down; status: integer 0 = up, else down; weight: integer = weight"),
    )

    type: str = "file"
    path: str = KEYS[0].default
    mode: str = KEYS[1].default

    def target_of(self, addr: str, port: int) -> tuple[str, int]:
        return addr, port

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return FileChecker(self, addr, port, loop, done)


def judge(cfg: FileCheck) -> tuple[bool, str, int | None]:
    """Read the file once (bounded, non-blocking) and give the verdict (ok, detail, weight)."""
    name = cfg.path
    if cfg.mode == "presence":
        try:
            os.lstat(name)
        except FileNotFoundError:
            return True, f"file {name}: absent", None
        except NotADirectoryError:
            return True, f"file {name}: absent (a parent is not a directory)", None
        except OSError as e:
            return False, f"file {name}: {os.strerror(e.errno or 0).lower()}", None
        return False, f"file {name}: present (maintenance)", None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return True, f"file {name}: absent", None
    except OSError as e:
        return False, f"file {name}: {os.strerror(e.errno or 0).lower()}", None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            return False, f"file {name}: {kind}", None
        if st.st_size > MAX_BYTES:
            return False, f"file {name}: larger than {MAX_BYTES} bytes", None
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as e:
        return False, f"file {name}: {os.strerror(e.errno or 0).lower()}", None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        return False, f"file {name}: larger than {MAX_BYTES} bytes", None
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        return True, f"file {name}: empty", None
    try:
        value = int(text, 10)
    except ValueError:
        return False, f"file {name}: content is not an integer: {text[:40]!r}", None
    if cfg.mode == "status":
        return (value == 0), f"file {name}: status {value}", None
    if value <= 0:
        return False, f"file {name}: weight {value} (out)", None
    if value > WEIGHT_MAX:
        return False, f"file {name}: weight {value} above {WEIGHT_MAX}", None
    return True, f"file {name}: weight {value}", value


class FileChecker(Checker):
    """Answers from the last read; re-reads after an inotify event for its file (or every probe
    when the file cannot be watched)."""

    kind = "file"
    cfg: FileCheck

    def __init__(self, cfg: FileCheck, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        super().__init__(cfg, addr, port, loop, done)
        self.dirty = True
        self.last: tuple[bool, str, int | None] | None = None
        self.watch = watcher_for(loop).subscribe(cfg.path, self)

    def changed(self) -> None:
        """An event for this file (or a lost event): read it at the next probe."""
        self.dirty = True

    def start(self) -> None:
        if self.dirty or self.last is None or self.watch is None:
            self.dirty = False  # before the read: an event during it marks it dirty again
            self.last = judge(self.cfg)
        ok, detail, weight = self.last
        self.done(ok, detail, weight)

    def cancel(self) -> str:
        return f"file {self.cfg.path}: read timed out"

    def close(self) -> None:
        if self.watch is not None:
            watcher_for(self.loop).unsubscribe(self.cfg.path, self)
            self.watch = None


# --- inotify through ctypes --------------------------------------------------------------------

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR = 0x01000000
_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
         | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")


class Watcher:
    """One inotify descriptor per event loop: directory watches, subscribers by file name."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fd = -1
        self.libc: Any = None
        self.dirs: dict[str, int] = {}  # directory -> watch descriptor
        self.wds: dict[int, str] = {}
        self.subs: dict[str, dict[str, set[FileChecker]]] = {}  # directory -> name -> checkers
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            self.libc, self.fd = libc, fd
            loop.add_reader(fd, self.on_events)
        except (OSError, AttributeError):
            self.fd = -1

    def subscribe(self, path: str, checker: FileChecker) -> int | None:
        """Watch ``path``'s directory for ``checker``; None when it cannot be watched (poll)."""
        if self.fd < 0:
            return None
        d, name = os.path.split(path)
        wd = self.dirs.get(d)
        if wd is None:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(d), _MASK)
            if wd < 0:
                return None  # no such directory, no permission, out of watches: poll
            self.dirs[d] = wd
            self.wds[wd] = d
        self.subs.setdefault(d, {}).setdefault(name, set()).add(checker)
        return int(wd)

    def unsubscribe(self, path: str, checker: FileChecker) -> None:
        """Forget ``checker``; drop the directory watch when nobody uses it."""
        d, name = os.path.split(path)
        names = self.subs.get(d)
        if names is None:
            return
        names.get(name, set()).discard(checker)
        if not names.get(name):
            names.pop(name, None)
        if not names:
            del self.subs[d]
            wd = self.dirs.pop(d, None)
            if wd is not None:
                self.wds.pop(wd, None)
                if self.fd >= 0:
                    self.libc.inotify_rm_watch(self.fd, wd)

    def on_events(self) -> None:
        """Drain the inotify descriptor and mark the named files' checkers dirty."""
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EINTR:
                self.everyone_dirty()
            return
        off = 0
        while off + _EVENT.size <= len(buf):
            wd, mask, _cookie, n = _EVENT.unpack_from(buf, off)
            name = buf[off + _EVENT.size: off + _EVENT.size + n].split(b"\0", 1)[0]
            off += _EVENT.size + n
            if mask & IN_Q_OVERFLOW:
                self.everyone_dirty()
                continue
            d = self.wds.get(wd)
            if d is None:
                continue
            names = self.subs.get(d, {})
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                # the directory itself went away: its watch is gone; poll from now on
                for cks in names.values():
                    for ck in cks:
                        ck.watch = None
                        ck.dirty = True
                self.subs.pop(d, None)
                self.dirs.pop(d, None)
                self.wds.pop(wd, None)
                continue
            for ck in names.get(os.fsdecode(name), ()):
                ck.changed()

    def everyone_dirty(self) -> None:
        """Events were lost: every checker reads its file at its next probe."""
        for names in self.subs.values():
            for cks in names.values():
                for ck in cks:
                    ck.dirty = True

    def close(self) -> None:
        """Stop watching (the loop is closing)."""
        if self.fd >= 0:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


_watchers: dict[int, tuple[asyncio.AbstractEventLoop, Watcher]] = {}


def watcher_for(loop: asyncio.AbstractEventLoop) -> Watcher:
    """The Watcher of this event loop (one inotify descriptor for every file check on it)."""
    hit = _watchers.get(id(loop))
    if hit is not None and hit[0] is loop and not loop.is_closed():
        return hit[1]
    for k, (lp, w) in list(_watchers.items()):
        if lp.is_closed():
            w.close()
            del _watchers[k]
    w = Watcher(loop)
    _watchers[id(loop)] = (loop, w)
    return w
