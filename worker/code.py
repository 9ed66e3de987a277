"""Which runs a worker may claim: only those submitted for the code it runs.

A run's identity (``spec_hash``, what a later submit reuses) was computed by ``submit`` for the code it
saw, recorded as ``runs.code_identity``. The worker's code is what its main process loaded at start
(``worker.main`` hashes it there, before forking; the task processes inherit the hash). Were a worker of
other code to run the run, the result of one code would be recorded, and reused, as another's. So the
claim is refused, and the run stays queued for a worker of its code: the refusal forgets the message,
and only reapers of workers that run that code send it again (``worker.maintenance``), so a refusing
worker never loops on it; ``orchestrator workers`` names the code such runs wait for.

A task process also imports modules lazily (the engine, Keras's side of convlab) from the files on disk.
When those no longer hash to what the main process loaded, the task would run a mix of two versions:
the worker claims nothing then, and says to restart it.
"""

from __future__ import annotations

from contract.version import SHORT, code_identity, source_identity_now

# What a worker whose source changed on disk sends: a code no run is submitted for, so nothing.
STALE = "stale"


def claim_refusal(run_code: str | None) -> str | None:
    """Why this worker must not claim a run submitted for ``run_code``, or None when it may (also for a
    run without a recorded code, written before it was recorded)."""
    if run_code is None:
        return None
    loaded = code_identity()
    if run_code != loaded:
        return (
            f"submitted for code {run_code[:SHORT]}, this worker runs code {loaded[:SHORT]}: "
            "it waits for a worker started from that code"
        )
    on_disk = source_identity_now()
    if on_disk != loaded:
        return (
            f"this worker's source changed on disk since it started (loaded {loaded[:SHORT]}, now "
            f"{on_disk[:SHORT]}): restart the worker"
        )
    return None


def sending_code(loaded: str | None) -> str | None:
    """The code whose runs this worker's reaper sends: the code it loaded (None: unknown, all runs), or
    :data:`STALE` once the files on disk no longer are that code. Called in the maintenance process,
    which imports from the same folders as the worker."""
    if loaded is None or source_identity_now() == loaded:
        return loaded
    return STALE
