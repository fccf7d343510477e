"""Print the entries of a hashed lock (pip-compile's output) whose package this Python lacks.

    python lock_missing.py requirements/lock.txt > /tmp/rest.txt

The GPU image keeps every package its vLLM base ships, at the base's version (vLLM pins its
own CUDA torch and transformers), and installs the rest of the lock with its hashes.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> None:
    installed = {normalise(dist.metadata["Name"]) for dist in metadata.distributions()}
    keep = False
    for line in Path(lock).read_text(encoding="utf-8").splitlines(keepends=True):
        match = ENTRY.match(line)
        if match:  # an entry starts; its hash and comment lines are indented below it
            keep = normalise(match.group(1)) not in installed
        elif not line[:1].isspace():
            keep = False
        if keep:
            sys.stdout.write(line)


if __name__ == "__main__":
    main(sys.argv[1])
