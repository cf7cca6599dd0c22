"""What a result was made with: installed versions of the packages that decide the numbers, and the git commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path


def package_versions() -> dict[str, str]:
    """Versions recorded with the results (the attack code is pyautoattack's)."""
    return {"python": platform.python_version(), **versions()}


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's numbers."""
    found = {}
    for name in ("memloss", "torch", "torchvision", "numpy", "zarr", "numcodecs", "ffcv", "pyautoattack"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str | None:
    """The commit of the memloss checkout this code runs from, if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
