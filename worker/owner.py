"""The owner of a local worker: the ``submit`` or ``retry`` that started it. The worker ends with it.

A local worker runs in its own session (so that Ctrl-C reaches only ``submit``, which then stops it), so
nothing ends it when ``submit`` dies without cleaning up (SIGKILL, the OOM killer): left running, it would
keep that submit's settings and code and take the work of later submits. Two mechanisms end it:

- Linux: the worker's main process asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``), set in that process itself, after the exec that made it, so no set-user-ID exec
  can clear it. Its task processes follow (Celery sets the same for them), and the maintenance process,
  which sees its parent gone and its owner dead, hands the runs back and exits.
- Everywhere: the maintenance process checks the owner's pid and start time (so a reused pid is not
  taken for the owner) several times a second, and kills the worker itself when the owner is gone.

The owner is handed over in the environment (``CONVLAB_OWNER``, ``CONVLAB_OWNER_SWEEP``): these are a
handshake between ``orchestrator.local_worker`` and the worker, not user settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ENV = "CONVLAB_OWNER"  # "PID:START", START from /proc/PID/stat ("" where there is no /proc)
OWNER_SWEEP_ENV = "CONVLAB_OWNER_SWEEP"  # the sweep the owner follows: cancelled when the owner dies
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot, /proc/PID/stat field 22), or None: no such live
    process (a zombie counts as dead). "" where there is no /proc: the pid alone must do."""
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it exists, under another user
        return ""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass(frozen=True)
class Owner:
    pid: int
    start: str
    sweep_id: str | None = None

    @classmethod
    def this_process(cls, sweep_id: str | None = None) -> Owner:
        return cls(os.getpid(), process_start(os.getpid()) or "", sweep_id)

    def alive(self) -> bool:
        """Whether the owner still runs: the same pid, started at the same moment."""
        return process_start(self.pid) == self.start

    def to_env(self) -> dict[str, str]:
        env = {OWNER_ENV: f"{self.pid}:{self.start}"}
        if self.sweep_id:
            env[OWNER_SWEEP_ENV] = self.sweep_id
        return env


def owner_from_env(env: Mapping[str, str] | None = None) -> Owner | None:
    """The owner handed over by ``orchestrator.local_worker``; None for a worker nobody owns."""
    env = os.environ if env is None else env
    value = env.get(OWNER_ENV, "")
    pid, _, start = value.partition(":")
    if not pid.isdigit():
        return None
    return Owner(int(pid), start, env.get(OWNER_SWEEP_ENV) or None)


def die_with_owner(owner: Owner) -> None:
    """In the worker's main process, at its start: SIGKILL from the kernel when its parent (the owner)
    dies; exit at once if the owner is already gone.

    The signal is tied to the parent *thread* that forked this process: the owner must start the worker
    from its main thread (``submit`` does), or the worker would die with a short-lived thread.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        except (OSError, AttributeError):
            log.warning("cannot ask to die with the owner; the maintenance process watches it", exc_info=True)
    # Checked after asking: had the owner died before, the kernel would never send the signal.
    if os.getppid() != owner.pid or not owner.alive():
        log.error("the process that started this local worker (pid %d) is gone: exiting", owner.pid)
        os._exit(1)


def kill_own_group(timeout: float = 10.0) -> None:
    """SIGKILL every other process of this process group (the worker's main and task processes) and
    wait until none is left. Without /proc, only the parent can be named: it is killed, and Celery's
    task processes die with it (their own parent-death signal)."""
    me, group = os.getpid(), os.getpgid(0)
    if not Path("/proc").is_dir():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(os.getppid(), signal.SIGKILL)
        return
    deadline = time.monotonic() + timeout
    while members := [pid for pid in _group_members(group) if pid != me]:
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            log.error("processes %s of group %d survive SIGKILL", members, group)
            return
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members
