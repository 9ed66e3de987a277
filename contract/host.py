"""Facts about the machine that both the worker (what it ran on) and the orchestrator (estimates) state."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU's model name, as the kernel reports it (else what Python knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
