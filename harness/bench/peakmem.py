"""Peak memory a block of work adds: the CUDA allocator's counter, or on CPU the profiler's allocation
records (exact for tensors) cross-checked against the process's RSS high-water mark (`harness.bench`)."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading

import torch


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class PeakMemory:
    """Peak memory a block adds above what was allocated when it started, in bytes (`.bytes`).

    CUDA: the caching allocator's own peak counter. CPU: torch's allocations are invisible to
    tracemalloc; the profiler's allocation records (profile_memory=True) are exact for tensors:
    `.bytes` is the peak of their running sum. `.rss_bytes` is the process's RSS peak above its RSS
    at the start (cross-check; ~5 MB noise from malloc): malloc_trim(0) first (freed heap pages go
    back to the OS, so reusing them faults them in again and counts), reset the kernel's RSS
    high-water mark (/proc/self/clear_refs, Linux >= 4.0) and read VmHWM at the end; where that
    reset is not allowed, a thread samples RSS every millisecond instead.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.bytes: int | None = None
        self.rss_bytes: int | None = None
        self.prof = None

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise OSError("no VmHWM")

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.linux = os.path.exists("/proc/self/statm")
        self.sampler = None
        if self.linux:
            self._start_rss()
        from torch.profiler import ProfilerActivity, profile

        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():  # kineto prints start/stop lines to fd 2
            self.prof.__enter__()
        return self

    def _start_rss(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.base = self._rss()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.samples, self.stop = [self.base], threading.Event()

            def sample():
                while not self.stop.wait(0.001):
                    self.samples.append(self._rss())

            self.sampler = threading.Thread(target=sample, daemon=True)
            self.sampler.start()

    def _profiled_peak(self) -> int:
        events = [e for e in self.prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        live = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            live += e.nbytes()
            peak = max(peak, live)
        return peak

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
            return False
        if self.prof is not None:
            with _quiet_stderr():
                self.prof.__exit__(*exc)
            self.bytes = self._profiled_peak()
        if self.linux:
            if self.sampler is not None:
                self.stop.set()
                self.sampler.join()
                peak = max(self.samples + [self._rss()])
            else:
                peak = self._hwm()
            self.rss_bytes = max(0, peak - self.base)
        return False
