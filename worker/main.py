"""The module ``celery -A worker.main worker`` loads: the app, its tasks and its worker signals.

Loaded once, in the worker's main process, before any task process is forked from it: what is decided
here holds for every task the worker runs.
"""

from __future__ import annotations

from contract.version import code_version
from worker.app import default_app
from worker.owner import die_with_owner, owner_from_env

# A local worker (started by `submit`) ends when that submit is gone: see worker.owner.
if (_owner := owner_from_env()) is not None:
    die_with_owner(_owner)

app = default_app()

import worker.lifecycle  # noqa: E402,F401  (connects worker signals: heartbeat, reaper, shutdown flag)
import worker.tasks  # noqa: E402,F401  (registers the tasks on this app)

# The code this worker runs is the code loaded now: hashed here, before any fork, and inherited by every
# task process (the hash is cached per process), which records it (see contract.version.loaded_code).
code_version()
