"""The kernel's counters and connection counts, read for the control API and /metrics only.

One cache for both: the whole table is dumped when a request needs it and at most once per
``KERNEL_STATS_SECONDS`` (the kernel's estimator updates every 2 s; reading 50,000 destinations
more often shows nothing new and costs the loop a dump each time). Requests that arrive while a
dump is being made wait for it instead of starting another. A request about a few services (the
API's ``/services?service=NAME``) reads only those services' destinations when the whole table
is not fresh, each at most once per period too: it answers in the time of its own rows, not of a
dump of 50,000. The reconciler's own dumps are its business: they neither fill nor replace this
cache (they run when the kernel must be written, not when someone asks). But a read taken before
lvsd last wrote to the kernel is not served again: an operator who reloads or drains and then
looks sees the new weights, not the ones of up to 2 s before. So the kernel is read at most once
per period plus once per batch lvsd writes, and only when a request asks.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from lvsd.daemon.limits import KERNEL_STATS_SECONDS
from lvsd.ipvs.backend import IPVSError
from lvsd.ipvs.model import Destination, DestKey, ServiceEntry, ServiceKey

Table = dict[ServiceKey, ServiceEntry]
Dests = dict[DestKey, Destination]

#: when a read was made: (monotonic time, lvsd's count of kernel writes then)
_Stamp = tuple[float, int]
#: (its stamp, the table or None, the read's error or None)
_Read = tuple[_Stamp, "Table | None", "Exception | None"]


class KernelStats:
    """A kernel table served again for ``period`` seconds while ``writes()`` (a count of the
    kernel writes lvsd made) stays the same; ``dump`` and ``dests`` read the kernel
    (``Backend.dump`` and ``Backend.dests``, or fakes counting their calls; ``dump`` may also
    return an awaitable, a read that lets the loop run while it works)."""

    def __init__(
        self,
        dump: Callable[[], Table | Awaitable[Table]],
        dests: Callable[[ServiceKey], list[Destination]] | None = None,
        period: float = KERNEL_STATS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        writes: Callable[[], int] = lambda: 0,
    ) -> None:
        self._dump = dump
        self._writes = writes
        self._dests = dests
        self.period = period
        self._clock = clock
        self._read: _Read | None = None
        self._inflight: asyncio.Future[_Read] | None = None
        self._one: dict[ServiceKey, tuple[_Stamp, Dests | None]] = {}
        #: reads made: whole-table dumps and single services (for tests and benchmarks)
        self.dumps = 0
        self.service_reads = 0

    def _fresh(self, stamp: _Stamp) -> bool:
        return stamp[1] == self._writes() and self._clock() - stamp[0] < self.period

    async def table(self) -> Table:
        """The whole table, as fresh as the period allows; raises the read's error (an error is
        also kept for the period: a broken backend is not asked again by every request)."""
        read = self._read
        if read is None or not self._fresh(read[0]):
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._read_all())
            read = await asyncio.shield(self._inflight)  # a cancelled request leaves the read to the others
        if read[2] is not None:
            raise read[2]
        assert read[1] is not None
        return read[1]

    async def _read_all(self) -> _Read:
        try:
            self.dumps += 1
            writes = self._writes()  # a write made while the read runs makes it stale at once
            got: Table | None = None
            error: Exception | None = None
            try:
                dumped = self._dump()
                got = await dumped if inspect.isawaitable(dumped) else dumped
            except Exception as e:  # reported to every waiter as the answer's kernel error
                error = e
            read: _Read = ((self._clock(), writes), got, error)
            self._read = read
            self._one.clear()  # the whole table supersedes single reads
            return read
        finally:
            self._inflight = None

    async def services(self, keys: Sequence[ServiceKey], of: int) -> Mapping[ServiceKey, Dests | None]:
        """The destinations of each of ``keys`` (None: not in the kernel), out of ``of`` services
        in all. From the whole table if it is fresh or if ``keys`` are a good part of it; else
        each service on its own (a dump of one service's destinations), kept for the period."""
        read = self._read
        if self._dests is None or (read is not None and read[1] is not None and self._fresh(read[0])) or len(keys) * 4 > of:
            table = await self.table()
            return {k: (e.dests if (e := table.get(k)) is not None else None) for k in keys}
        if len(self._one) > 4 * of:  # keys of services a reload removed: forget them all at once
            self._one.clear()
        out: dict[ServiceKey, Dests | None] = {}
        for k in keys:
            hit = self._one.get(k)
            if hit is None or not self._fresh(hit[0]):
                self.service_reads += 1
                writes = self._writes()
                try:
                    dests: Dests | None = {d.key: d for d in self._dests(k)}
                except IPVSError as e:
                    if e.errno != errno.ESRCH:
                        raise
                    dests = None  # the service is not in the kernel
                hit = self._one[k] = ((self._clock(), writes), dests)
            out[k] = hit[1]
        return out
