"""Process-tree sampling from /proc (Linux): summed RSS of a process and its children, and CPU busy share."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


@dataclass
class TreeSampler:
    """Samples a process tree every `interval` s: peak summed RSS and (cpu seconds, wall) pairs."""

    pid: int
    interval: float = 0.2
    peak_rss: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (wall time, tree cpu seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _cpu_seen: dict[int, float] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)  # pid -> process_name(pid), the last one read

    def start(self) -> TreeSampler:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = tree(self.pid)
            self.peak_rss = max(self.peak_rss, rss_bytes(pids))
            for p in pids:  # keep finished children's cpu time: remember the last value per pid
                self._cpu_seen[p] = max(self._cpu_seen.get(p, 0.0), cpu_seconds([p]))
                self._names[p] = process_name(p) if p not in self._names else _settled(self._names[p], p)
            self.samples.append((time.perf_counter(), sum(self._cpu_seen.values())))
            time.sleep(self.interval)

    def busy_cores(self, skip_first: float = 0.2, skip_last: float = 0.1) -> float:
        """Mean cores busy in the steady state (the middle of the run, start-up and tail cut off)."""
        if len(self.samples) < 4:
            return 0.0
        n = len(self.samples)
        a, b = self.samples[int(n * skip_first)], self.samples[max(int(n * (1 - skip_last)) - 1, 0)]
        return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)

    def cpu_by_name(self) -> dict[str, float]:
        """CPU seconds of the tree summed by process name (see `process_name`), largest first."""
        out: dict[str, float] = {}
        for p, cpu in self._cpu_seen.items():
            name = self._names.get(p, "?")
            out[name] = out.get(name, 0.0) + cpu
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def process_name(pid: int) -> str:
    """A short name: Ray's process titles (`ray::EncoderActor`; `ray::tasks` for the workers that run its
    tasks, whose title changes with each task), the module of `python -m MODULE`, else the executable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        title = words[0].split(".")[0].split()[0]
        return title if title.endswith("Actor") or title.endswith("Agent") else "ray::tasks"
    if any(w.endswith("default_worker.py") for w in words):
        return "ray::starting"  # a Ray worker before it has set its title
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return Path(words[0]).name


def _settled(name: str, pid: int) -> str:
    """Re-read a Ray worker's name until it has set its title."""
    return process_name(pid) if name in ("ray::starting", "?") else name
