"""What this machine offers outside convlab's own settings: GPUs, Keras's cache folder, terminal width.

The second module (after ``contract/settings.py``) allowed to read the environment: it reads only
variables that other programs define (``KERAS_HOME``, ``COLUMNS``), never convlab's own settings.
Nothing here imports TensorFlow or Keras: the CLI must answer in a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path


def nvidia_gpus(proc_root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """Names of the NVIDIA GPUs this process can see, in ``nvidia-smi`` order; [] when there are none.

    ``nvidia-smi`` first: inside a container the NVIDIA runtime injects it and lists only the GPUs the
    container was given, renumbered from 0, which is what ``CUDA_VISIBLE_DEVICES`` indexes. Without it,
    the driver's ``/proc`` entries (one folder per GPU, in PCI bus order). No driver: no GPU.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0:
                return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        folders = sorted(p for p in proc_root.iterdir() if p.is_dir())
    except OSError:
        return []
    names = []
    for folder in folders:
        name = "NVIDIA GPU"
        try:
            for line in (folder / "information").read_text().splitlines():
                if line.startswith("Model:"):
                    name = line.split(":", 1)[1].strip()
        except OSError:
            pass
        names.append(name)
    return names


def keras_home() -> Path:
    """Keras's cache folder, computed as ``keras.src.backend.config`` does (without importing Keras):
    ``$KERAS_HOME``, else ``~/.keras``, else ``/tmp/.keras`` when the home folder is not writable."""
    explicit = os.environ.get("KERAS_HOME")
    if explicit:
        return Path(explicit).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def columns_given() -> bool:
    """True when ``COLUMNS`` sets the width explicitly (then even piped output is laid out to it)."""
    return os.environ.get("COLUMNS", "").isdigit()


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a download from ``host`` could start: a TCP connection opens within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
