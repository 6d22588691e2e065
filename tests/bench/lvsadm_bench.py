"""lvsadm against ipvsadm: -R of 1,000 services x 10 real servers, -Ln and -Ln --stats of that
table, and -Ln of an empty table, each as a whole process (start-up included). Run by hand, with
lvsd installed as a user installs it (pip, not editable: an editable install's import hook alone
costs ~0.4 s per start under emulation):

    python3 -m venv /tmp/lvsadm-bench && /tmp/lvsadm-bench/bin/pip install .      # host (PyPI)
    tests/kernel/vm.sh /tmp/lvsadm-bench/bin/python tests/bench/lvsadm_bench.py    # VM, both tools
    /tmp/lvsadm-bench/bin/python tests/bench/lvsadm_bench.py --host                # host start-up

The bench times the installed `lvsadm` script; from any other interpreter it falls back to the
source tree (and says so). Targets (issue 3): -R <= 0.25x ipvsadm; -Ln and -Ln --stats
<= 1.0x; -Ln of an empty table under 150 ms on the host with the memory backend. Prints times
(best of N interleaved runs, medians in brackets) and ratios. BENCH_ROUNDS (5) and
BENCH_R_ROUNDS (3) set N.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time


def installed_lvsadm() -> list[str] | None:
    """The ``lvsadm`` script pip installed next to this interpreter, if lvsd is installed there
    as a user installs it (not editable, not this source tree)."""
    script = os.path.join(os.path.dirname(sys.executable), "lvsadm")
    if not os.path.exists(script):
        return None
    probe = subprocess.run(
        [sys.executable, "-c", "import lvsd, os; print(os.path.dirname(lvsd.__file__))"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    where = probe.stdout.strip()
    if probe.returncode != 0 or "site-packages" not in where:
        return None  # an editable install's finder (pathlib & co.) costs ~0.4 s per start in the VM
    return [script]


INSTALLED = installed_lvsadm()
if INSTALLED:
    # What a user runs: the installed script (lvsd/cli/scripts/lvsadm) and the byte-compiled
    # modules pip wrote; the bench process's cwd is moved out of the source tree.
    LVSADM = INSTALLED
    os.chdir("/")
else:
    # From the source tree: an installed lvsadm runs from byte-compiled modules (pip compiles
    # them); this environment sets PYTHONDONTWRITEBYTECODE, which would make every run compile
    # lvsd from source: compile once into a cache outside the work tree instead.
    PYC = os.path.join(tempfile.gettempdir(), "lvsadm-bench-pyc")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = PYC
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            os.path.join(os.path.dirname(__file__), "..", "..", "lvsd"),
        ]
    )
    LVSADM = [sys.executable, "-c", "import sys; from lvsd.cli.lvsadm import main; sys.exit(main())"]
    print(
        "note: lvsd is not installed (non-editable) beside this interpreter; timing it from the\n"
        "source tree, which is not what a user runs. See the docstring for the installed way.",
        file=sys.stderr,
    )


def rules(services: int = 1000, reals: int = 10) -> str:
    out = []
    for i in range(services):
        vip = f"10.{100 + i // 250}.{i % 250}.1"
        out.append(f"-A -t {vip}:80 -s wrr")
        for j in range(reals):
            out.append(f"-a -t {vip}:80 -r 10.200.{i % 250}.{j + 2}:8080 -m -w {j + 1}")
    return "\n".join(out) + "\n"


def timed(cmd: list[str], stdin: bytes = b"", env: dict | None = None) -> tuple[float, bytes]:
    t = time.perf_counter()
    p = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[:300]}")
    return dt, p.stdout


def median(cmd: list[str], n: int, stdin: bytes = b"", env: dict | None = None) -> float:
    return statistics.median(timed(cmd, stdin, env)[0] for _ in range(n))


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def interleaved(
    cases: dict[str, list[list[str]]], rounds: int, stdin: bytes = b""
) -> dict[str, list[list[float]]]:
    """Run each case's commands in turn (ipvsadm, lvsadm, lvsadm -S, ipvsadm, ...) ``rounds``
    times; checks they all print the same bytes."""
    res: dict[str, list[list[float]]] = {k: [[] for _ in cmds] for k, cmds in cases.items()}
    for _ in range(rounds):
        for name, cmds in cases.items():
            first = None
            for i, cmd in enumerate(cmds):
                t, out = timed(cmd, stdin)
                if first is None:
                    first = out
                assert out == first, f"{name}: {cmd} printed something else than {cmds[0]}"
                res[name][i].append(t)
    return res


def vm() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    r_rounds = int(os.environ.get("BENCH_R_ROUNDS", "3"))
    data = rules().encode()
    print(f"guest load at start: {load()}")
    subprocess.run(["ipvsadm", "-C"], check=True)
    base = min(timed([sys.executable, "-c", "pass"])[0] for _ in range(rounds))
    two = lambda *a: [["ipvsadm", *a], LVSADM + list(a)]  # noqa: E731
    empty = interleaved({"-Ln (empty table)": two("-Ln")}, rounds)
    r_times: list[list[float]] = [[], []]
    saved_ref = b""
    for _ in range(r_rounds):  # -R interleaved too: ipvsadm, lvsadm, ipvsadm, ...
        for i, cmd in enumerate(two("-R")):
            subprocess.run(["ipvsadm", "-C"], check=True)
            r_times[i].append(timed(cmd, data)[0])
            saved = timed(["ipvsadm", "-Sn"])[1]
            if i == 0:
                saved_ref = saved
            assert saved == saved_ref, f"{cmd} built a different table"
    lists = interleaved({"-Ln": two("-Ln"), "-Ln --stats": two("-Ln", "--stats")}, rounds)
    subprocess.run(["ipvsadm", "-C"], check=True)
    print("lvsadm vs ipvsadm in the VM (1,000 services x 10 real servers; whole processes, interleaved;")
    print(f"best of {rounds} ({r_rounds} for -R), median in brackets; guest load at end: {load()})")
    print(f"lvsadm: {' '.join(LVSADM)}")
    print(f"{'':19} {'ipvsadm':>17} {'lvsadm':>17} {'ratio':>5}  target")
    rows = [("-R (11,000 lines)", r_times, "<= 0.25")]
    rows += [(k, v, "<= 1.0") for k, v in lists.items()]
    rows += [(k, v, "") for k, v in empty.items()]
    med = statistics.median
    for name, (a, b), target in rows:
        ma, mb = min(a), min(b)
        print(f"{name:19} {ma:6.3f}s ({med(a):6.3f}) {mb:6.3f}s ({med(b):6.3f}) {mb / ma:5.2f}  {target}")
    print(f"(python -c pass alone: {base:.3f}s)")


def host() -> None:
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LVSADM_BACKEND="memory", LVSADM_STATE=os.path.join(d, "state.json"))
        timed(LVSADM + ["-C"], env=env)
        base = median([sys.executable, "-c", "pass"], 15)
        t = median(LVSADM + ["-Ln"], 15, env=env)
        timed(LVSADM + ["-R"], rules().encode(), env=env)
        big = median(LVSADM + ["-Ln"], 3, env=env)
        print("lvsadm on the host, memory backend (median of 15 processes)")
        print(f"python -c pass           {base * 1000:7.1f} ms")
        print(
            f"lvsadm -Ln (empty)       {t * 1000:7.1f} ms   (+{(t - base) * 1000:.1f} ms over python; target < 150 ms)"
        )
        print(f"lvsadm -Ln (1000x10)     {big * 1000:7.1f} ms")


if __name__ == "__main__":
    host() if "--host" in sys.argv else vm()
