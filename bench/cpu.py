"""Where the cores went during a timed section (Linux /proc).

On a small machine the benchmark, the code under test, its peers (receiver, API) and
PostgreSQL all share the same cores, so throughput alone cannot say which one saturated,
or whether something outside the run spoiled it. Each measured section therefore records
the core-seconds of named groups of processes and of the whole machine.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

# Core-seconds used so far, by process id. Per process, so that a process starting
# mid-section counts in full and one ending mid-section cannot make a total go backwards.
Source = Callable[[], dict[int, float]]

MACHINE = "machine"  # the source name for all busy cores, of which the others are part
_TICK = os.sysconf("SC_CLK_TCK")
# Shared PostgreSQL processes that work for every database, so also for this run's.
_PG_SHARED = ("walwriter", "checkpointer", "background writer", "autovacuum", "logical rep")


def _seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # the name may contain spaces
    except OSError:  # gone
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def this_process() -> dict[int, float]:
    return {os.getpid(): time.process_time()}  # finer than /proc's clock ticks


def processes(*pids: int) -> Source:
    return lambda: {pid: s for pid in pids if (s := _seconds(pid)) is not None}


def _children(parent: int) -> list[int]:
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        return []


def process_tree(pid: int) -> Source:
    """A process and its children (`api --processes N`: the parent and its API processes),
    listed at each reading."""
    return lambda: processes(pid, *_children(pid))()


def combined(*sources: Source) -> Source:
    return lambda: {pid: s for source in sources for pid, s in source().items()}


def postgres(database: str) -> Source:
    """The backends serving `database` plus the shared WAL/checkpoint/vacuum processes;
    other databases' backends are someone else's load. Listed at each reading, since
    backends come and go."""

    def pids() -> Iterator[int]:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().decode(errors="replace")
                if title.startswith("postgres: ") and (
                    f" {database} " in title or any(name in title for name in _PG_SHARED)
                ):
                    yield int(entry)

    return lambda: processes(*pids())()


def machine() -> dict[int, float]:
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:]]
    busy = sum(jiffies[i] for i in (0, 1, 2, 5, 6))  # user nice system irq softirq
    return {0: busy / _TICK}


@dataclass
class Section:
    """Wall seconds of a measured section and core-seconds per source."""

    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def other(self) -> float:
        """Core-seconds of processes outside the measured groups: noise."""
        ours = sum(v for name, v in self.cpu.items() if name != MACHINE)
        return max(self.cpu.get(MACHINE, 0.0) - ours, 0.0)

    def noise_note(self, label: str) -> str | None:
        if self.other <= 0.1 * self.seconds * (os.cpu_count() or 1):
            return None
        return (
            f"{label}: other processes used {self.other:.1f} core-s"
            f" ({self.other / self.seconds:.2f} cores) — the machine was not quiet, numbers are noisy"
        )


@contextlib.contextmanager
def measure(sources: Mapping[str, Source]) -> Iterator[Section]:
    """Time the block and the CPU each source used in it; the Section is filled on exit."""
    section = Section()
    before = {name: read() for name, read in sources.items()}
    began = time.perf_counter()
    yield section
    section.seconds = time.perf_counter() - began
    for name, read in sources.items():
        section.cpu[name] = sum(s - before[name].get(pid, 0.0) for pid, s in read().items())
