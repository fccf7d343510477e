"""$OCT_HOME: where prepared models, the embedded store, stage work folders, reports and the S3
download cache live on this machine (default ~/.cache/oct)."""

from __future__ import annotations

import os
from pathlib import Path


def oct_home() -> Path:
    """$OCT_HOME, default ~/.cache/oct."""
    return Path(os.environ.get("OCT_HOME") or Path.home() / ".cache" / "oct").expanduser()
