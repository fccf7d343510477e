"""`oct serve`, `oct up` and the controller's client: `submit`, `status`, `watch`, `cancel`, `list`.

The library's `oct` loads `register` through the `oct.commands` entry point (pyproject.toml).
gRPC modules are imported inside the commands so `oct --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from character_services.api.character.v1 import controller_pb2
    from character_services.common.server import ServeOptions

console = Console()

DEFAULT_CONTROLLER = "127.0.0.1:50050"
CONTROLLER_HELP = "Controller host:port (default $OCT_CONTROLLER_ADDRESS or 127.0.0.1:50050)."
STORE_HELP = "Local folder or s3://bucket/prefix (default $OCT_STORE_URI or $OCT_HOME/store)."


def _store_uri(store: str | None) -> str:
    from character.pipeline.spec import default_store_uri

    return store or os.environ.get("OCT_STORE_URI") or default_store_uri()


def _controller_address(controller: str | None) -> str:
    return controller or os.environ.get("OCT_CONTROLLER_ADDRESS") or DEFAULT_CONTROLLER


def _state(value: int) -> str:
    """A StageState or RunState value, coloured (the two enums number their states alike)."""
    from character_services.common import convert

    names = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    state = convert.from_stage_state(value).value
    color = names.get(state)
    return f"[{color}]{state}[/{color}]" if color else state


def _show_run(run: controller_pb2.Run) -> None:
    from character_services.common import convert

    console.print(f"run [bold]{run.run_id}[/bold]: {_state(run.state)}  persona {run.persona}, "
                  f"model {run.model}, scale {run.scale}, store {run.store_uri}")
    if run.message:
        console.print(f"  {run.message}")
    table = Table("stage", "state", "attempts", "seconds", "key", "detail")
    for stage in run.stages:
        seconds = ""
        if stage.HasField("started_at") and stage.HasField("finished_at"):
            took = stage.finished_at.ToDatetime() - stage.started_at.ToDatetime()
            seconds = f"{took.total_seconds():.1f}"
        detail = stage.message
        if stage.HasField("progress") and convert.from_stage_state(stage.state).value == "running":
            p = stage.progress
            detail = f"{p.task}: {p.done}/{p.total if p.HasField('total') else '?'} {p.message}".strip()
        table.add_row(stage.stage, _state(stage.state), str(stage.attempts), seconds, stage.key[:12],
                      detail[:100])
    console.print(table)
    console.print("config each stage runs with (resolved at submit):")
    for stage in run.stages:
        console.print(f"  {stage.stage}: {_compact(stage.config_json)}", soft_wrap=True, markup=False,
                      highlight=False)


def _compact(config_json: str) -> str:
    """A recorded config as `field=value` pairs (values as compact JSON)."""
    if not config_json:
        return "(not recorded: a stage of an older run)"
    values = json.loads(config_json)
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in values.items())


def _finished_ok(run: controller_pb2.Run) -> None:
    """Exit 1 unless the run succeeded (for scripts)."""
    from character_services.common import convert

    if convert.from_run_state(run.state).value != "succeeded":
        raise typer.Exit(1)


# ---------------------------------------------------------------------- servers
def _options(store: str | None, host: str, port: int | None, **kw: Any) -> ServeOptions:
    from character_services.common.server import ServeOptions

    return ServeOptions(store=_store_uri(store), host=host, port=port, **kw)


def serve(
    service: str = typer.Argument(help="controller, generation, introspection, training or evaluation."),
    port: int | None = typer.Option(None, help="gRPC port (default: the service's own, 50050-50054)."),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    store: str | None = typer.Option(None, help=STORE_HELP),
    grace: float = typer.Option(30.0, help="Seconds running tasks get to finish on SIGTERM."),
    max_tasks: int = typer.Option(1, help="Workers: stage tasks run at once (the rest wait)."),
    executor: str | None = typer.Option(None, help="Controller: services, kubernetes or inline "
                                                    "(default $OCT_EXECUTOR or services)."),
    executor_config: str | None = typer.Option(None, help="Controller, kubernetes executor: its settings "
                                                           "file (default $OCT_KUBERNETES_EXECUTOR_CONFIG)."),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR."),
    tls_dir: str | None = typer.Option(None, help="TLS folder: tls.crt, tls.key, ca.crt (default $OCT_TLS_DIR, "
                                                  "else the local CA `oct up` made)."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext gRPC (logs a warning); controller without "
                                                            "a token file: no authentication."),
    tokens_file: str | None = typer.Option(None, help="Controller: the operator's token file "
                                                      "(default $OCT_AUTH_TOKENS)."),
    health_port: int | None = typer.Option(None, help="Plaintext gRPC health port (default: gRPC port + 2000)."),
) -> None:
    """Run one service until SIGTERM or Ctrl-C (JSON logs on stderr, metrics on port + 1000,
    plaintext health on port + 2000). Other services are found at $OCT_<SERVICE>_ADDRESS
    (default 127.0.0.1 and their ports); limits and registries come from $OCT_PLATFORM_CONFIG."""
    import importlib

    from character_services.common.catalog import service as find_service
    from character_services.common.logs import configure_logging
    from character_services.common.server import serve_until_signal

    info = find_service(service)
    configure_logging(info.name, log_level)
    options = _options(store, host, port, max_tasks=max_tasks,
                       executor=executor or os.environ.get("OCT_EXECUTOR") or "services",
                       executor_config=executor_config, tls_dir=tls_dir, insecure=insecure,
                       tokens_file=tokens_file, health_port=health_port)
    server = importlib.import_module(f"character_services.{info.name}.server").build(options).start()
    serve_until_signal([server], grace)


def up(
    store: str | None = typer.Option(None, help=STORE_HELP),
    base_port: int = typer.Option(50050, help="Controller port; the workers take the next four."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    grace: float = typer.Option(30.0, help="Seconds running tasks get to finish on Ctrl-C."),
    log_level: str = typer.Option("WARNING", help="DEBUG, INFO, WARNING or ERROR (JSON logs on stderr)."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext gRPC and no authentication (a warning "
                                                            "says so)."),
) -> None:
    """Run all five services in this process, over real gRPC on HOST, until Ctrl-C. On first
    use it makes a local CA and an admin token under $OCT_HOME (tls/, auth/), which the `oct`
    client then finds by itself: TLS and authentication without flags."""
    from character.security.auth import ensure_local_token
    from character.security.pki import ensure_local_pki

    from character_services.common.logs import configure_logging
    from character_services.common.server import serve_until_signal

    configure_logging("oct-up", log_level)
    secure: dict[str, Any] = {"insecure": True} if insecure else {
        "tls_dir": str(ensure_local_pki()), "tokens_file": str(ensure_local_token())}
    servers = start_all(_store_uri(store), host, base_port, **secure)
    table = Table("service", "gRPC", "metrics", "health")
    for server in servers:
        table.add_row(server.info.name, server.address, f"http://{host}:{server.metrics_port_bound}/metrics",
                      f"{host}:{server.health_port_bound}")
    console.print(table)
    console.print(f"store {_store_uri(store)}; submit with `oct submit SPEC.yaml --controller "
                  f"{servers[0].address}`; Ctrl-C stops all")
    serve_until_signal(servers, grace)


def start_all(store: str, host: str = "127.0.0.1", base_port: int = 50050, **options: Any) -> list[Any]:
    """Start the five services in this process (controller first in the list); ports are
    base_port + the offset of each service's default port (base_port 0: free ports).
    `options`: further ServeOptions fields for all five (tls_dir, tokens_file, platform, ...)."""
    import importlib

    from character_services.common.catalog import SERVICES, WORKERS

    def port_of(name: str) -> int:
        return base_port + SERVICES[name].port - SERVICES["controller"].port if base_port else 0

    started: list[Any] = []
    addresses: dict[str, str] = {}
    try:
        for name in ("generation", *[w for w in WORKERS if w != "generation"], "controller"):
            serve = _options(store, host, port_of(name), addresses=dict(addresses), **options)
            server = importlib.import_module(f"character_services.{name}.server").build(serve).start()
            addresses[name] = server.address
            started.append(server)
    except BaseException:
        for server in reversed(started):
            server.stop(0)
        raise
    return [started[-1], *started[:-1]]


# ---------------------------------------------------------------------- client
def _client(controller: str | None) -> Any:
    from character_services.controller.client import ControllerClient

    return ControllerClient(_controller_address(controller))


def _spec_text(path: Path) -> str:
    """The spec file, validated here by the library's parser (errors name the file), as the YAML
    the controller takes: the fields the file sets, its constitution inline (the controller
    cannot read the submitter's files)."""
    import yaml
    from character.pipeline.spec import load_spec

    spec = load_spec(path)
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False, allow_unicode=True)


def submit(
    spec: str = typer.Argument(help="A run spec YAML (as for `oct run --spec`)."),
    controller: str | None = typer.Option(None, help=CONTROLLER_HELP),
    watch_: bool = typer.Option(False, "--watch", help="Follow the run until it ends."),
) -> None:
    """Submit a run to the controller (the same spec is the same run: resubmitting resumes it)."""
    client = _client(controller)
    run, created = client.submit(_spec_text(Path(spec)))
    console.print(f"{'submitted' if created else 'already known'}: [bold]{run.run_id}[/bold] "
                  f"({_state(run.state)})")
    if watch_:
        _watch(client, run.run_id)


def _watch(client: Any, run_id: str) -> None:
    from character.cli.progress import bars

    from character_services.common import convert

    with bars() as update:
        for event in client.watch(run_id):
            kind = event.WhichOneof("event")
            if kind == "progress":
                update(convert.from_progress(event.progress))
            elif kind == "stage_state":
                attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                console.print(f"{event.stage}: {_state(event.stage_state)}{attempt} {event.message}".rstrip())
    run = client.get(run_id)
    _show_run(run)
    _finished_ok(run)


def status(
    run_id: str = typer.Argument(help="The run id (`oct list` shows them)."),
    controller: str | None = typer.Option(None, help=CONTROLLER_HELP),
    store: str | None = typer.Option(None, help="Read the run's record from this store instead of asking "
                                                "the controller (runs made by `oct run`)."),
) -> None:
    """A run's stages: state, attempts, time, detail."""
    _show_run(_get_run(run_id, controller, store))


def _get_run(run_id: str, controller: str | None, store: str | None) -> controller_pb2.Run:
    """From the store when one is named; else from the controller, falling back to the
    default store when no controller answers and none was named."""
    from character.controller.runs import load_run
    from character.store import open_store

    from character_services.common import convert
    from character_services.common.errors import ServiceUnavailable

    if store is None:
        try:
            return _client(controller).get(run_id)
        except ServiceUnavailable:
            if controller is not None or os.environ.get("OCT_CONTROLLER_ADDRESS"):
                raise
            console.print(f"[dim]no controller at {DEFAULT_CONTROLLER}; reading {_store_uri(None)}[/dim]")
    return convert.run(load_run(open_store(_store_uri(store)), run_id))


def watch(
    run_id: str = typer.Argument(help="The run id."),
    controller: str | None = typer.Option(None, help=CONTROLLER_HELP),
) -> None:
    """Follow a run with progress bars until it ends (exit 1 unless it succeeded)."""
    _watch(_client(controller), run_id)


def cancel(
    run_id: str = typer.Argument(help="The run id."),
    controller: str | None = typer.Option(None, help=CONTROLLER_HELP),
) -> None:
    """Cancel a run: its running stage stops, the rest never start. Resubmit to resume."""
    run = _client(controller).cancel(run_id)
    console.print(f"{run.run_id}: {_state(run.state)} {run.message}".rstrip())


def list_(
    controller: str | None = typer.Option(None, help=CONTROLLER_HELP),
    store: str | None = typer.Option(None, help="List the runs recorded in this store instead."),
) -> None:
    """Runs, newest first."""
    from character_services.common import convert

    if store is not None:
        from character.controller.runs import list_runs
        from character.store import open_store

        runs = [convert.run(r, with_spec=False) for r in list_runs(open_store(store))]
    else:
        runs = _client(controller).list()
    table = Table("run", "state", "persona", "model", "scale", "stages done", "updated")
    for run in runs:
        done = sum(1 for s in run.stages if convert.from_stage_state(s.state).value == "succeeded")
        table.add_row(run.run_id, _state(run.state), run.persona, run.model, run.scale,
                      f"{done}/{len(run.stages)}", run.updated_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("up")(up)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("watch")(watch)
    app.command("cancel")(cancel)
    app.command("list")(list_)
