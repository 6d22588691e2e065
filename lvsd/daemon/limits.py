"""Every limit and timeout the daemon puts on what users, local clients and hooks send it.

One place, named, so docs/operations.md ("Limits") can list them and a later config key can
replace a constant without hunting for it. None of them is configurable yet: the values are
generous for the control socket's and the metrics listener's legitimate users (lvsctl, one or
a few Prometheus servers) and small against a local user who opens connections in a loop.
"""

from __future__ import annotations

# --- listeners (control unix socket, [metrics] TCP listener) ----------------------------------

#: Open connections per listener; a connection above it is closed at once (no answer).
CONTROL_MAX_CONNECTIONS = 32
METRICS_MAX_CONNECTIONS = 64
#: Seconds a connection may wait between requests (keep-alive) before it is closed.
IDLE_TIMEOUT = 15.0
#: Seconds from a request's first byte to the end of its headers; a slower client is dropped.
HEADER_TIMEOUT = 5.0
#: Seconds to read a request body (POST /role); a slower client gets 408.
BODY_TIMEOUT = 5.0
#: Largest request body accepted (bytes); a bigger one gets 413 and the connection is closed.
MAX_BODY = 64 * 1024
#: Seconds an unread request body is still read and discarded after an error answer.
LINGER_TIME = 1.0
#: Descriptors kept for health checks, hooks and the kernel socket: a listener refuses a new
#: connection once the process's descriptors are within this many of its limit (RLIMIT_NOFILE).
FD_RESERVE = 256
#: Seconds between two log lines about refused connections or exhausted descriptors.
EXHAUSTION_LOG_INTERVAL = 60.0
#: The soft RLIMIT_NOFILE is raised at start to the hard limit, but not above this.
NOFILE_TARGET = 65536

# --- metrics -----------------------------------------------------------------------------------

#: Seconds a rendered /metrics page is served again before it is rendered anew.
METRICS_CACHE_SECONDS = 1.0
#: Seconds the kernel's counters and connection counts (one dump, shared by the control API and
#: /metrics) are served again before the kernel is read anew: its rate estimator runs every 2 s.
KERNEL_STATS_SECONDS = 2.0

# --- hooks -------------------------------------------------------------------------------------

#: Bytes of a hook's output kept (its last line is reported); the rest is read and discarded.
HOOK_OUTPUT_MAX = 64 * 1024
#: Characters of a hook's last line put in the log (control characters escaped first).
HOOK_LINE_MAX = 200

# --- kernel operations the kernel refuses -------------------------------------------------------

#: First retry of a refused op after this many seconds, doubling on each refusal up to the max.
REFUSED_RETRY_INITIAL = 1.0
REFUSED_RETRY_MAX = 60.0
