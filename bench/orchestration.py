"""Orchestration overhead: one run through the services (`oct up` + `oct submit --watch`)
against the same run in-process (`oct run`), on this machine.

    .venv/bin/python bench/orchestration.py      # the demo run: sarcasm on SmolLM2 (long)
    .venv/bin/python bench/orchestration.py --spec tests/integration/services/quick-run.yaml
                                                 # the tests' quick run (minutes)

(The tiny random model cannot go through a whole run: it never ends a turn, so
distillation keeps no pair.)

Each path gets fresh stores and its own OCT_HOME (the model is given by path, so stage
work folders and checkpoints are not shared), and both are timed the same way: the wall
time of the command that runs the pipeline, process start included (`oct run`, and
`oct submit --watch` once the services answer). The services' own start-up is reported
apart. Prints both times and their ratio (target <= 1.05); timings here vary by up to 2x
between identical runs, so use --repeat for medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OCT = str(Path(sys.executable).with_name("oct"))


def free_base_port() -> int:
    """A base port whose next four ports, their metrics (+1000) and health ports (+2000) are all free."""
    for base in range(21050, 40000, 17):
        ports = [base + offset + i for offset in (0, 1000, 2000) for i in range(5)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def wait_serving(address: str, timeout: float = 300.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"{address} did not become SERVING in {timeout:.0f} s")


def timed(args: list[str], env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}); see {log}")
    return time.monotonic() - started


def inline_run(spec: Path, work: Path) -> float:
    env = {**os.environ, "OCT_HOME": str(work / "home")}
    args = [OCT, "run", "--spec", str(spec), "--store", str(work / "store")]
    return timed(args, env, work / "run.log")


def services_run(spec: Path, work: Path) -> tuple[float, float]:
    env = {**os.environ, "OCT_HOME": str(work / "home")}
    base = free_base_port()
    started = time.monotonic()
    with open(work / "up.log", "w") as out:
        up = subprocess.Popen([OCT, "up", "--store", str(work / "store"), "--base-port", str(base)],
                              env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_serving(f"127.0.0.1:{base + 2000}")  # the plaintext health port (gRPC itself is TLS)
        startup = time.monotonic() - started
        seconds = timed([OCT, "submit", str(spec), "--controller", f"127.0.0.1:{base}", "--watch"], env,
                        work / "submit.log")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    return seconds, startup


def stage_seconds(store: Path) -> dict[str, float]:
    """Seconds each stage of the store's (only) run took, from its record."""
    from character.controller.runs import list_runs
    from character.store import open_store

    (record,) = list_runs(open_store(str(store)))
    return {name: (s.finished_at - s.started_at).total_seconds() for name, s in record.stages.items()
            if s.started_at and s.finished_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, help="a run spec YAML (default: the demo run of --persona)")
    parser.add_argument("--persona", default="sarcasm", help="without --spec: the persona of the demo run")
    parser.add_argument("--model", help="a bundled model (smollm2) or a folder (default: the spec's)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path; medians are reported")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (stores, logs, reports); "
                        "default: a temporary folder, removed at the end")
    args = parser.parse_args()

    from character.models.prepare import prepare_model

    demo = {"constitution": args.persona, "scale": "demo"}
    doc = yaml.safe_load(args.spec.read_text()) if args.spec else demo
    model = args.model or doc.get("model") or "smollm2"
    # A folder, so each path's own OCT_HOME does not prepare the model again; named in a platform
    # config, since a submitted spec names models, not folders (both paths use the name).
    folder = model if Path(model).is_dir() else str(prepare_model(model))
    doc["model"] = "bench-model"
    inline_s, services_s, startup_s = [], [], []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="oct-bench-"))
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        platform = Path(tmp) / "platform.yaml"
        platform.write_text(yaml.safe_dump({"models": {"bench-model": folder}}))
        os.environ["OCT_PLATFORM_CONFIG"] = str(platform)
        for i in range(args.repeat):
            for path in ("inline", "services"):
                (Path(tmp) / f"{path}-{i}").mkdir()
            inline_s.append(inline_run(spec, Path(tmp) / f"inline-{i}"))
            seconds, startup = services_run(spec, Path(tmp) / f"services-{i}")
            services_s.append(seconds)
            startup_s.append(startup)
            print(f"run {i + 1}: inline {inline_s[-1]:.1f} s, services {seconds:.1f} s "
                  f"(+ {startup:.1f} s to start the services)", flush=True)
            per_stage = [stage_seconds(Path(tmp) / f"{path}-{i}" / "store") for path in ("inline", "services")]
            print("  stage seconds inline/services: " + ", ".join(
                f"{name} {per_stage[0].get(name, 0):.0f}/{per_stage[1].get(name, 0):.0f}" for name in per_stage[0]))
    inline, services = statistics.median(inline_s), statistics.median(services_s)
    what = args.spec or f"the demo run of {args.persona}"
    print(f"spec {what}, model {doc['model']}, {args.repeat} run(s) per path")
    print(f"inline `oct run`:              {inline:8.1f} s")
    startup = statistics.median(startup_s)
    print(f"services `oct submit --watch`: {services:8.1f} s  (services start-up {startup:.1f} s)")
    print(f"ratio services / inline:       {services / inline:8.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
