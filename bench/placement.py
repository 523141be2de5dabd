"""Core placement of a benchmark: where the server and the load generator run.

    split   the load generator pinned to the first core, the server (every process and thread) to the
            others: the server's figures are not the generator's CPU weakness, and the reverse
    shared  both on every core, as the OS schedules them (as a user's own load generator would run)

On a machine with one core there is nothing to split: `split` is then `shared`, and says so. The server
is pinned after it started (every thread of its process tree, `pin_tree`), so that one server serves
both placements in one run, interleaved: a drift in the machine's load then hits both alike. Each figure
is reported with the load average (`loadavg`) at its end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PLACEMENTS = ("split", "shared")


@dataclass(frozen=True)
class Placement:
    name: str
    server: frozenset[int]  # the cores the server's threads may run on
    generator: frozenset[int]  # the load generator's

    def describe(self) -> str:
        return f"{self.name} (server on cores {_cores(self.server)}, generator on {_cores(self.generator)})"


def placement(name: str) -> Placement:
    cores = sorted(os.sched_getaffinity(0))
    every = frozenset(cores)
    if name == "shared" or len(cores) < 2:
        return Placement("shared" if name == "shared" else "split (1 core: shared)", every, every)
    if name != "split":
        raise ValueError(f"placement {name!r}: use one of {', '.join(PLACEMENTS)}")
    return Placement("split", frozenset(cores[1:]), frozenset(cores[:1]))


def placements(names: str) -> list[Placement]:
    """`split,shared` (a --placements argument) as Placements."""
    return [placement(name.strip()) for name in names.split(",") if name.strip()]


def pin_tree(pid: int, cores: frozenset[int]) -> None:
    """Every thread of a process and of its descendants (uvicorn workers, inference threads) on `cores`;
    threads started later inherit it from the thread that starts them."""
    from bench.run import process_tree

    for process in process_tree(pid):
        for task in Path(f"/proc/{process}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), cores)


def pinned(cores: frozenset[int]) -> Callable[[], None]:
    """A subprocess `preexec_fn` that runs the child (wrk, h2load) on `cores`."""
    return lambda: os.sched_setaffinity(0, cores)


@contextlib.contextmanager
def this_thread_on(cores: frozenset[int]) -> Iterator[None]:
    """The calling thread (an in-process load generator) on `cores` for the block."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages, as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cores(cores: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cores)))
