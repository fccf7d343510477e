"""`oct serve-personas`: the OpenAI-compatible persona server (character.serving.server)."""

from __future__ import annotations

import signal
import threading
from typing import cast

import typer

from character.serving.api import DEFAULT_PORT
from character.serving.pool import ServingEngineKind


def serve_personas(
    store: str | None = typer.Option(None, help="Local folder or s3://bucket/prefix (default $OCT_HOME/store)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, help="HTTPS port (0: a free one)."),
    health_port: int | None = typer.Option(None, help="Plaintext /healthz and /metrics (default: port + 2000)."),
    tls_dir: str | None = typer.Option(None, help="TLS folder: tls.crt, tls.key, ca.crt (default $OCT_TLS_DIR, "
                                                  "else the local CA `oct up` makes)."),
    tokens_file: str | None = typer.Option(None, help="The token file (default $OCT_AUTH_TOKENS, else `oct up`'s "
                                                      "local one, whose admin token the `oct` client holds)."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when available); the "
                                                "transformers engine only."),
    engine: str = typer.Option("transformers", help="transformers (CPU or CUDA; requests take turns per base "
                                                    "model) or vllm (GPU image; requests for any personas "
                                                    "share batches)."),
    dtype: str = typer.Option("auto", help="Precision: auto (bf16 on a GPU, float32 on a CPU), float32 or "
                                           "bfloat16 (~1.5x faster on a CPU with AVX512-BF16/AMX)."),
) -> None:
    """Serve the published personas (NAME[:TAG]), the trained runs (by run id) and the base
    models over an OpenAI-compatible HTTPS API until Ctrl-C or SIGTERM; prints the base URL
    when ready."""
    from character.pipeline.spec import default_store_uri
    from character.serving.server import ServerOptions, build_server
    from character.store import open_store

    if engine not in ("transformers", "vllm"):
        raise typer.BadParameter(f"{engine!r}: choose transformers or vllm", param_hint="--engine")
    if engine == "vllm" and device not in (None, "cuda"):
        raise typer.BadParameter(f"vllm runs on the GPU vLLM chooses; drop --device {device}", param_hint="--device")
    if dtype not in ("auto", "float32", "bfloat16"):
        raise typer.BadParameter(f"{dtype!r}: choose auto, float32 or bfloat16", param_hint="--dtype")
    the_store = open_store(store or default_store_uri())
    server = build_server(the_store, ServerOptions(host=host, port=port, health_port=health_port), tls_dir,
                          tokens_file, device=device, engine=cast(ServingEngineKind, engine), dtype=dtype).start()
    typer.echo(f"serving {the_store.uri} at {server.base_url} (health and metrics: "
               f"http://{host}:{server.health_port}/healthz, /metrics); CA {server.tls.folder / 'ca.crt'}", )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.command("serve-personas")(serve_personas)
