"""Resume: DPO training in a separate process, killed with SIGKILL while a checkpoint is being
written, is started again and ends with exactly the adapter of an uninterrupted run.

Two places a checkpoint can be cut short:
- "local": the trainer is writing checkpoint-4 in its work folder (weights and optimizer state
  written, trainer_state.json not yet); the stage restarts on the same machine and must not
  trust the half-written folder.
- "store": checkpoint-4 is being uploaded to the store (some files up, no manifest); the stage
  restarts on another machine (a fresh work folder) and must resume from the last checkpoint
  the store committed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from character.progress import ProgressEvent
from character.stages import dpo
from character.store import LocalStore
from character.training.lora_trainer import CHECKPOINT_KIND, checkpoint_key
from safetensors.torch import load_file

from tests.unit.training.helpers import context, distill_result, pair_rows

ROOT = Path(__file__).resolve().parents[3]
CONFIG = {
    "lr": 5e-3,
    "global_batch": 2,
    "per_device_batch": 2,
    "max_steps": 4,
    "save_steps": 2,
    "max_length": 96,
    "lora_rank": 4,
    "lora_alpha": 8,
}
KILL_AT = "checkpoint-4"


def _ctx(tiny_model: Path, store: LocalStore, workdir: Path, events: list[ProgressEvent] | None = None,
         pairs: int = 8) -> Any:
    config = dpo.Config.for_scale("demo", CONFIG)
    inputs = {"distill": distill_result(store, pair_rows(pairs), [])}
    return context(store, tiny_model, "dpo", inputs, workdir, config, events)


def _hang(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    while True:  # until the parent's SIGKILL
        time.sleep(1)


def train_until_killed(tiny_model: str, store_dir: str, workdir: str, where: str, marker: str) -> None:
    """The child process: DPO training that stops dead in the middle of writing checkpoint-4,
    tells the parent (the marker file) and waits to be killed."""
    if where == "local":
        save = torch.save

        def save_then_hang(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            save(obj, f, *args, **kwargs)
            if KILL_AT in str(f) and str(f).endswith("optimizer.pt"):
                _hang(Path(marker))

        torch.save = save_then_hang
        store = LocalStore(store_dir)
    else:

        class DyingStore(LocalStore):
            def _put_file(self, key: str, path: Path) -> None:
                super()._put_file(key, path)
                if f"{CHECKPOINT_KIND}/" in key and key.split("/")[2].endswith("-step4"):
                    _hang(Path(marker))

        store = DyingStore(store_dir)
    config = dpo.Config.for_scale("demo", CONFIG)
    dpo.run(_ctx(Path(tiny_model), store, Path(workdir)), config)
    raise AssertionError("training finished without writing checkpoint-4")


def _kill_mid_checkpoint(tiny_model: Path, store_dir: Path, workdir: Path, where: str, tmp_path: Path) -> None:
    marker = tmp_path / f"hanging-{where}"
    code = ("import sys; from tests.unit.stages.test_dpo_resume import train_until_killed; "
            "train_until_killed(*sys.argv[1:])")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / f"child-{where}.log"
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", code, str(tiny_model), str(store_dir), str(workdir),
                                  where, str(marker)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            if child.poll() is not None:
                raise AssertionError(f"training exited with {child.returncode}:\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the child never reached checkpoint-4"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def _adapter_weights(store: LocalStore, key: str) -> dict[str, torch.Tensor]:
    return load_file(store.materialize("adapter", key) / "adapter_model.safetensors")


@pytest.mark.parametrize("where", ["local", "store"])
def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_result(
    tiny_model: Path, tmp_path: Path, where: str
) -> None:
    config = dpo.Config.for_scale("demo", CONFIG)
    straight_store = LocalStore(tmp_path / "straight")
    straight = dpo.run(_ctx(tiny_model, straight_store, tmp_path / "work-straight"), config)

    first_machine = tmp_path / "work-first-machine"
    _kill_mid_checkpoint(tiny_model, tmp_path / "resumed", first_machine, where, tmp_path)
    store = LocalStore(tmp_path / "resumed")
    events: list[ProgressEvent] = []
    # local: the same machine, with the half-written checkpoint-4 in its work folder;
    # store: another machine, with only what the store committed.
    workdir = first_machine if where == "local" else tmp_path / "work-second-machine"
    ctx = _ctx(tiny_model, store, workdir, events)
    if where == "local":
        partial = next(workdir.rglob(KILL_AT))
        assert (partial / "optimizer.pt").is_file() and not (partial / "trainer_state.json").exists()
    assert store.has(CHECKPOINT_KIND, checkpoint_key(ctx.key, 2))
    assert not store.has(CHECKPOINT_KIND, checkpoint_key(ctx.key, 4))
    assert not store.has("adapter", ctx.key)
    resumed = dpo.run(ctx, config)

    assert events[0].message == "resuming from checkpoint-2"
    assert [e.done for e in events if e.message.startswith("loss")] == [3, 4]  # only the missing steps ran
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 4
    # the whole run's figures, though this process trained only steps 3 and 4
    assert resumed.metrics["resumed_step"] == 2 and straight.metrics["resumed_step"] == 0
    assert resumed.metrics["loss"] == pytest.approx(straight.metrics["loss"], abs=1e-4)
    assert resumed.metrics["train_tokens"] == straight.metrics["train_tokens"] > 0
    assert store.has(CHECKPOINT_KIND, checkpoint_key(ctx.key, 4))

    expected = _adapter_weights(straight_store, straight.artifacts["adapter"].key)
    got = _adapter_weights(store, resumed.artifacts["adapter"].key)
    assert expected.keys() == got.keys() and expected
    for name, tensor in expected.items():
        assert torch.allclose(got[name], tensor, rtol=0, atol=1e-7), name
    # ...and training did move the weights (equality is not two untouched initialisations).
    assert any(t.abs().max() > 0 for n, t in expected.items() if "lora_B" in n)


# 8 pairs: the last step ends the epoch; 10: it ends mid-epoch, where transformers resuming
# at max_steps would train one step more
@pytest.mark.parametrize("pairs", [8, 10])
def test_a_run_stopped_after_its_last_checkpoint_has_nothing_left_to_train(tiny_model: Path,
                                                                            tmp_path: Path, pairs: int) -> None:
    """Killed after the final checkpoint was stored but before the adapter: the restart trains
    nothing, stores the checkpoint's adapter and reports the whole run's figures."""
    config = dpo.Config.for_scale("demo", CONFIG)
    store = LocalStore(tmp_path / "store")
    first = dpo.run(_ctx(tiny_model, store, tmp_path / "work", pairs=pairs), config)
    weights = _adapter_weights(store, first.artifacts["adapter"].key)
    events: list[ProgressEvent] = []
    ctx = _ctx(tiny_model, LocalStore(tmp_path / "store"), tmp_path / "work-other-machine", events, pairs=pairs)
    # Forget the adapter (as if the stage died right after its last checkpoint).
    shutil.rmtree(tmp_path / "store" / "artifacts" / "adapter")
    again = dpo.run(ctx, config)
    assert not [e for e in events if e.message.startswith("loss")]  # no step ran
    assert again.metrics["steps"] == 4
    assert again.metrics["resumed_step"] == 4 and again.metrics["tokens_per_second"] is None
    assert again.metrics["loss"] == first.metrics["loss"]
    assert again.metrics["train_tokens"] == first.metrics["train_tokens"]
    got = _adapter_weights(store, again.artifacts["adapter"].key)
    assert got.keys() == weights.keys()
    assert all(torch.equal(got[name], tensor) for name, tensor in weights.items())
