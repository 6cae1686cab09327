"""Measuring helpers shared by the djqueue, the Celery and the pgqueuer side (standard library
only: the Celery and the pgqueuer side run in virtualenvs of their own without Django)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

_log_fd: int | None = None


def record_start(key: int, enqueued_at: float) -> None:
    """Called first thing by the benchmark task: one line ``key start enqueued`` per execution."""
    global _log_fd
    start = time.time()
    if _log_fd is None:
        _log_fd = os.open(os.environ["BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_log_fd, f"{key} {start:.6f} {enqueued_at:.6f}\n".encode())


def read_starts(path: Path) -> list[tuple[int, float, float]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(k), float(s), float(e)) for k, s, e in (line.split() for line in lines if line)]


def wait_lines(path: Path, count: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        time.sleep(0.01)
    raise RuntimeError(f"only {len(read_starts(path))} of {count} tasks started in {timeout}s")


#: Whether the kernel lists each thread's children (CONFIG_PROC_CHILDREN); the main thread's id is
#: the process id.
_CHILDREN_LISTED = Path(f"/proc/self/task/{os.getpid()}/children").exists()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from the kernel's list of each process's children (a
    few small reads; scanning every process's status costs the sampling process milliseconds of
    CPU on each sample, taken from what is measured)."""
    if not _CHILDREN_LISTED:
        return _tree_by_scan(pid)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                todo.extend(int(child) for child in
                            Path(f"/proc/{current}/task/{thread}/children").read_text().split())
            except OSError:  # the thread or process has just ended
                continue
    return found


def _tree_by_scan(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _kb(path: str, field: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines()
                 if line.startswith(field + ":")), 0)


def tree_memory(pid: int, pss: bool = True) -> tuple[int, int]:
    """Bytes of ``pid`` and its descendants: resident (RSS, pages shared by forked processes
    counted in each) and, with ``pss``, proportional (PSS, shared pages divided among their
    sharers; else 0)."""
    pids = tree(pid)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
    if not pss:
        return rss * 1024, 0
    return rss * 1024, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids) * 1024


class MemorySampler(threading.Thread):
    """Samples the worker tree's memory every ``interval`` seconds and keeps the peaks.

    PSS comes from ``smaps_rollup``, which walks each process's page tables holding its memory
    map lock: a process that maps or unmaps memory meanwhile (Python's allocator does) waits, and
    so does any page fault behind it. Sampled every 50 ms during the latency run, that doubled
    djqueue's p95. :meth:`rss_only` stops reading it (RSS comes from counters, at no such cost).
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.pss = True
        self._stop_event = threading.Event()

    def rss_only(self) -> None:
        self.pss = False

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            rss, pss = tree_memory(self.pid, self.pss)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        return self.peak_rss, self.peak_pss


ROOT = Path(__file__).resolve().parent.parent

#: The worker commands measured (after the Python that runs them), shared by run.py's sides and
#: memory_floor.py so that both measure the same workers.
CELERY_WORKER = ["-m", "celery", "-A", "bench.celery_app", "worker", "-c", "2", "-P", "prefork",
                 "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
DJQUEUE_WORKER = ["manage.py", "celery", "worker", "-c", "2", "-l", "warning"]


def compile_checkout() -> None:
    """Write the bytecode of the checkout's modules (djqueue, the example project, the
    benchmark's own), as a deployed project has it: pip compiles what it installs and Python
    writes the rest on first import, unless PYTHONDONTWRITEBYTECODE is set (as on the development
    machines). Then every worker process would compile these modules from source at each start,
    which costs it time and leaves its heap about 1 MB larger (measured with
    bench/memory_floor.py), while the packages of every system, installed by pip, are compiled."""
    import compileall

    for name in ("djqueue", "example_project"):
        compileall.compile_dir(ROOT / name, quiet=1)
    compileall.compile_dir(ROOT / "bench", maxlevels=0, quiet=1)  # not the other systems' venvs
    for name in ("manage.py", "tasks.py"):
        compileall.compile_file(ROOT / name, quiet=1)


def start_worker_process(args: list[str], log: Path) -> subprocess.Popen:
    """A worker command started in the repository root in a session of its own (so that
    stop_worker can kill its whole process group), with BENCH_LOG set to ``log`` and its output
    appended to a file beside it."""
    with log.with_suffix(".worker.log").open("ab") as output:
        return subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, "BENCH_LOG": str(log)}, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen) -> None:
    """Warm shutdown, then make sure the whole process group is gone."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def drain_rate(path: Path) -> float:
    starts = sorted(s for _, s, _ in read_starts(path))
    return (len(starts) - 1) / (starts[-1] - starts[0])


def latency_run(enqueue, path: Path, count: int, proc: subprocess.Popen) -> tuple[float, float]:
    """``count`` tasks one after the other, each sent to an idle worker; (p50, p95) in ms."""
    latencies = []
    path.write_text("")
    for i in range(count):
        time.sleep(0.02)  # let the worker go idle (waiting for work) again
        enqueue(i, time.time())
        wait_lines(path, i + 1, 10, proc)
    for _, start, enqueued in read_starts(path):
        latencies.append((start - enqueued) * 1000)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]


def median_of(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = runs[0].keys()
    return {
        k: (None if runs[0][k] is None else statistics.median(r[k] for r in runs)) for k in keys
    }


SINGLE, BULK, DRAIN, LATENCY = (int(os.environ.get(f"BENCH_{n}", d)) for n, d in (("SINGLE", 2000), ("BULK", 20000), ("DRAIN", 5000), ("LATENCY", 200)))


def run_once(system, workdir: Path) -> dict[str, float | None]:
    """One pass of every measurement against ``system`` (see bench/djqueue_side.py)."""
    system.reset()
    began = time.perf_counter()
    for i in range(SINGLE):
        system.enqueue_one(i, 0.0)
    single = SINGLE / (time.perf_counter() - began)
    system.reset()
    bulk = None
    if system.bulk_enqueue is not None:
        began = time.perf_counter()
        system.bulk_enqueue(BULK)
        bulk = BULK / (time.perf_counter() - began)
        system.reset()
    log = workdir / "starts.log"
    log.write_text("")
    if system.bulk_enqueue is not None:
        system.bulk_enqueue(DRAIN)
    else:
        for i in range(DRAIN):
            system.enqueue_one(i, 0.0)
    proc = system.start_worker(log)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    try:
        wait_lines(log, DRAIN, 600, proc)
        drain = drain_rate(log)
        sampler.rss_only()  # PSS was read during the drain, when the tree holds the most
        p50, p95 = latency_run(system.enqueue_one, log, LATENCY, proc)
    finally:
        rss, pss = sampler.stop()
        stop_worker(proc)
    system.reset()
    return {"single": single, "bulk": bulk, "drain": drain, "p50": p50, "p95": p95,
            "rss_mb": rss / 2**20, "pss_mb": pss / 2**20}


def print_runs(system, runs: int) -> None:
    """What a bench/*_side.py does: ``runs`` passes of run_once, one JSON line each."""
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            print(json.dumps(run_once(system, Path(tmp))), flush=True)
