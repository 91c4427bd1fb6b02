"""A process's own memory on Linux, for the benchmarks that run each measurement in a child process."""

from __future__ import annotations


def status_mib(key: str) -> float | None:
    """A kB field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB (None where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
