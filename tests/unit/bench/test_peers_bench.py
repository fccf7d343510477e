"""`make bench-peers` (bench/peers_bench.py): its last line, and the pins it installs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def peers() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "bench"))  # the bench's modules import each other by name
    try:
        yield importlib.import_module("peers_bench")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_the_peers_line_is_the_engine_over_each_measured_peer(peers: ModuleType) -> None:
    results = {
        "engine": {"tokens_per_cpu_second": 120.0},
        "transformers": {"tokens_per_cpu_second": 80.0},
        "llama.cpp-F16": {"unavailable": "llama_cpp is not installed"},
        "ctranslate2-int8": {"tokens_per_cpu_second": 360.0},
    }
    assert peers.peers_line(peers.ratios(results)) == "peers: transformers 1.50x, ctranslate2-int8 0.33x"


LOCK = """\
#    make lock
#
alpha==1.0 \\
    --hash=sha256:aa \\
    --hash=sha256:ab
    # via -r requirements/peers.in
Beta_Two==2.0 \\
    --hash=sha256:bb
    # via
    #   -c requirements/lock.txt
    #   alpha
"""


def test_a_pin_is_its_line_and_its_hashes_without_the_comments(peers: ModuleType) -> None:
    assert peers.pinned_requirements(LOCK) == {
        "alpha": "alpha==1.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:ab\n",
        "beta-two": "Beta_Two==2.0 \\\n    --hash=sha256:bb\n",
    }


def test_the_peers_install_every_pin_the_runtime_lock_lacks(peers: ModuleType) -> None:
    """`--install` installs each engine's own packages without dependencies: together they must
    be every pin of requirements/peers.txt that the runtime lock (already in .venv) lacks."""
    runtime = peers.pinned_requirements((ROOT / "requirements" / "lock.txt").read_text())
    needed = set(peers.pinned_requirements(peers.PEERS_LOCK.read_text())) - set(runtime)
    assert {peers.normalised(n) for p in peers.PEERS.values() for n in p.packages} == needed
