"""Build the CPU image, run the platform from it as the Helm chart runs it, and push a run through.

    make images-smoke          # = .venv/bin/python scripts/images-smoke.py
    options: --base IMAGE (skip the local Debian base), --keep (leave containers and folders),
             --timeout SECONDS (the run's limit)

1. podman (with runc: crun refuses this machine's hybrid cgroups) and debootstrap come from
   Debian's packages when missing (`apt-get update` only when an install fails without it).
2. The base image: --base, or a Debian bookworm made here with debootstrap (python3,
   python3-venv, ca-certificates, from this machine's apt source) and `podman import`
   (localhost/character-base:bookworm, kept for the next build).
3. `podman build` of Dockerfiles/cpu.Dockerfile (the build argument PYTHON_IMAGE is that base)
   with this machine's pip configuration passed in: the build secrets pip.conf and pip-ca (its
   CA bundle), and the local folders it names (find-links, file:// indexes) mounted read-only.
4. SeaweedFS on 127.0.0.1 (tests/fixtures/s3.py); `helm template` of charts/character for the
   services executor with that S3 (chart-made TLS certificates and token file); every rendered
   Deployment run as a container the way its pod spec says: uid/gid and fsGroup, read-only root
   filesystem, all capabilities dropped, no privilege escalation, memory limit, its env and
   envFrom, writable volumes only where it mounts emptyDirs, ConfigMaps and Secrets read-only,
   init containers first. Host network: each Service name resolves to 127.0.0.1, ports are free.
5. The quick run (tests/integration/services/quick-run.yaml: SmolLM2-135M, every stage; the
   random tiny model never ends a turn, so distillation keeps nothing) submitted to the
   containerised controller over TLS with a bearer token, and watched until it succeeds.

Prints the image size, each container's start-up time (`podman run` until its gRPC health
service answers SERVING) and the run's wall time; exits non-zero on any failure, with the
containers' last log lines.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fixtures.s3 import seaweedfs  # noqa: E402  (the same SeaweedFS the tests start)

BASE_IMAGE = "localhost/character-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
NAMESPACE = RELEASE = "character"
QUICK_RUN = ROOT / "tests" / "integration" / "services" / "quick-run.yaml"
HELM = ROOT / ".tools" / "bin" / "helm"
PODMAN = ["podman", "--runtime", "runc"]
STARTUP_TIMEOUT_S = 300.0
SERVICES = ("controller", "generation", "introspection", "training", "evaluation")
PIP_INDEX_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "timeout")


def log(message: str) -> None:
    print(f"images-smoke: {message}", flush=True)


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("check", True)
    kwargs.setdefault("text", True)
    return subprocess.run(list(args), **kwargs)


def version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "pyproject.toml has no version"
    return match.group(1)


# ---------------------------------------------------------------------- tools
def ensure_debian_packages(wanted: dict[str, str]) -> None:
    """Install the Debian packages whose command (the value) is missing."""
    missing = [package for package, command in wanted.items() if shutil.which(command) is None]
    if not missing:
        return
    log(f"installing {' '.join(missing)} (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        run("apt-get", "update", "-q", env=env, stdout=subprocess.DEVNULL)
        run(*install, env=env, stdout=subprocess.DEVNULL)


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or a sources.list line)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.MULTILINE))
            if "debian-security" not in fields.get("URIs", "") and "main" in fields.get("Components", ""):
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                    return parts[1] if not parts[1].startswith("[") else parts[2]
    sys.exit("images-smoke: no Debian mirror in /etc/apt: pass --base IMAGE")


def make_base(work: Path) -> str:
    """A Debian bookworm base image with python3 made here, once."""
    if run(*PODMAN, "image", "exists", BASE_IMAGE, check=False).returncode == 0:
        log(f"base image {BASE_IMAGE} (made earlier)")
        return BASE_IMAGE
    rootfs = work / "rootfs"
    mirror = apt_mirror()
    log(f"making {BASE_IMAGE} with debootstrap (minbase + {BASE_PACKAGES})")
    start = time.monotonic()
    run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs), mirror,
        stdout=subprocess.DEVNULL)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(*PODMAN, "import", "--quiet", "-", BASE_IMAGE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    if tar.wait() != 0:
        sys.exit("images-smoke: tar of the debootstrap folder failed")
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"base image made in {time.monotonic() - start:.0f} s")
    return BASE_IMAGE


# ---------------------------------------------------------------------- build
def pip_configuration(work: Path) -> tuple[list[str], list[str]]:
    """(build secrets, read-only volumes): this machine's pip index settings for the build."""
    listed = run(sys.executable, "-m", "pip", "config", "list", capture_output=True).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for key in (*PIP_INDEX_KEYS, "cert"):  # the environment overrides the files, as in pip
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            settings[key] = env
    conf = ["[global]"] + [f"{key} = {settings[key]}" for key in PIP_INDEX_KEYS if key in settings]
    args, volumes = [], []
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        conf.append("cert = /run/secrets/pip-ca")
        args += ["--secret", f"id=pip-ca,src={cert}"]
    for key in ("find-links", "extra-index-url", "index-url"):
        for location in settings.get(key, "").split():
            path = Path(location.removeprefix("file://"))
            if path.is_absolute() and path.exists():
                # a local index's pages link to files beside it (../../files/...)
                folder = path.parent if key.endswith("index-url") else path
                volumes += ["-v", f"{folder}:{folder}:ro"]
    (work / "pip.conf").write_text("\n".join(conf) + "\n")
    args += ["--secret", f"id=pip.conf,src={work / 'pip.conf'}"]
    return args, volumes


def build(image: str, base: str, work: Path) -> float:
    secret_args, volumes = pip_configuration(work)
    log(f"building {image} on {base}")
    start = time.monotonic()
    run(*PODMAN, "build", "--format", "docker", "--network", "host", "-f", "Dockerfiles/cpu.Dockerfile",
        "--build-arg", f"PYTHON_IMAGE={base}", *secret_args, *volumes, "-t", image, ".", cwd=ROOT)
    return time.monotonic() - start


# ---------------------------------------------------------------------- chart
def free_port_base(count: int = 5) -> int:
    """A port P with P..P+count-1, +1000 and +2000 all free on 127.0.0.1 (gRPC, metrics, health)."""
    for _ in range(200):
        base = secrets.randbelow(20000) + 20000
        ports = [base + i + offset for i in range(count) for offset in (0, 1000, 2000)]
        try:
            with contextlib.ExitStack() as stack:
                for port in ports:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    sys.exit("images-smoke: no free port range")


def render_chart(image: str, s3_endpoint: str, access_key: str, secret_key: str, token: str,
                 base_port: int, work: Path) -> list[dict[str, Any]]:
    repository, tag = image.rsplit(":", 1)
    values = {
        "image": {"cpu": {"repository": repository, "tag": tag}},
        "controller": {"executor": "services",
                       "auth": {"tokenReview": False,  # no Kubernetes API here
                                "tokens": [{"name": "smoke", "roles": ["admin"],
                                            "sha256": hashlib.sha256(token.encode()).hexdigest()}]}},
        "minio": {"enabled": False},
        "externalS3": {"endpoint": s3_endpoint.split("://", 1)[1], "secure": False},
        "s3": {"accessKey": access_key, "secretKey": secret_key},
        "store": {"uri": "s3://character-smoke/runs", "createBucket": True},
        # Host network: listen on loopback only, on free ports.
        "services": {name: {"port": base_port + i, "extraArgs": ["--host", "127.0.0.1"]}
                     for i, name in enumerate(SERVICES)},
    }
    (work / "values.yaml").write_text(yaml.safe_dump(values))
    out = run(str(HELM), "template", RELEASE, str(ROOT / "charts" / "character"), "--namespace", NAMESPACE,
              "-f", str(work / "values.yaml"), capture_output=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _data(doc: dict[str, Any]) -> dict[str, str]:
    """A ConfigMap's or Secret's keys and their text values."""
    data = {key: str(value) for key, value in (doc.get("stringData") or {}).items()}
    if doc["kind"] == "Secret":
        data.update({key: base64.b64decode(value).decode() for key, value in (doc.get("data") or {}).items()})
    else:
        data.update({key: str(value) for key, value in (doc.get("data") or {}).items()})
    return data


class Pod:
    """One rendered Deployment's pod, as podman arguments."""

    def __init__(self, deployment: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]],
                 hosts: list[str], work: Path):
        self.name = deployment["metadata"]["name"]
        self.spec = deployment["spec"]["template"]["spec"]
        self.objects = objects
        self.hosts = hosts
        self.folder = work / self.name
        self.pod_security = self.spec.get("securityContext", {})
        self.fs_group = self.pod_security.get("fsGroup")
        self.volumes = {volume["name"]: self._volume(volume) for volume in self.spec.get("volumes", [])}

    def _volume(self, volume: dict[str, Any]) -> Path:
        folder = self.folder / volume["name"]
        folder.mkdir(parents=True)
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:
            # what fsGroup gives a pod's volumes: group-owned, group-writable, setgid
            os.chown(folder, 0, self.fs_group or 0)
            folder.chmod(0o2775)
            return folder
        kind, source = ("ConfigMap", volume["configMap"]) if "configMap" in volume else ("Secret", volume["secret"])
        name = source.get("name") or source.get("secretName")
        data = _data(self.objects[(kind, name)])
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            path = folder / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            os.chown(path, 0, self.fs_group or 0)
            path.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        folder.chmod(0o755)
        return folder

    def _env(self, container: dict[str, Any]) -> list[str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
                "Secret", source["secretRef"])
            env.update(_data(self.objects[(kind, ref["name"])]))
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[item["name"]] = NAMESPACE
            else:
                sys.exit(f"images-smoke: {self.name}: env {item['name']} has a source this script cannot give")
        return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]

    def args(self, container: dict[str, Any], image: str, name: str) -> list[str]:
        """`podman run` arguments for one of the pod's containers."""
        security = {**self.pod_security, **container.get("securityContext", {})}
        args = ["--name", name, "--network", "host", "--pull", "never", *ulimit_args()]
        args += [arg for host in self.hosts for arg in ("--add-host", f"{host}:127.0.0.1")]
        uid, gid = security.get("runAsUser"), security.get("runAsGroup", security.get("runAsUser"))
        if uid is not None:
            args += ["--user", f"{uid}:{gid}"]
        if self.fs_group is not None:
            args += ["--group-add", str(self.fs_group)]
        if security.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs that the pod does not have
        for capability in security.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", capability]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        if memory:
            args += ["--memory", memory.replace("Gi", "g").replace("Mi", "m")]
        for mount in container.get("volumeMounts", []):
            source = self.volumes[mount["name"]] / mount.get("subPath", "")
            args += ["-v", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
        args += self._env(container)
        if container.get("command"):
            args += ["--entrypoint", container["command"][0], image, *container["command"][1:]]
        else:
            args.append(image)
        return args + [str(arg) for arg in container.get("args", [])]


def ulimit_args() -> list[str]:
    """podman's default ulimits (nofile, nproc) can exceed what a process may set on this machine
    (runc: "error setting rlimit ... operation not permitted"): give the containers this
    process's own hard limits, nproc capped at pid_max as the kernel does here."""
    def hard(limit: int, cap: int) -> int:
        value = resource.getrlimit(limit)[1]
        return cap if value == resource.RLIM_INFINITY else min(value, cap)

    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nofile, nproc = hard(resource.RLIMIT_NOFILE, 1 << 20), hard(resource.RLIMIT_NPROC, pid_max)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def wait_serving(port: int, container: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            state = run(*PODMAN, "inspect", "--format", "{{.State.Status}}", container,
                        capture_output=True, check=False).stdout.strip()
            if state not in ("running", "created"):
                raise RuntimeError(f"{container} is {state or 'gone'} before serving")
            time.sleep(0.5)
    raise RuntimeError(f"{container}: no SERVING health answer on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def containers(pods: list[Pod], image: str, suffix: str, keep: bool) -> Iterator[dict[str, float]]:
    """Run each pod's init containers, then its containers; yield start-up seconds per container."""
    started: list[str] = []
    startup: dict[str, float] = {}
    try:
        launched = []
        for pod in pods:
            for init in pod.spec.get("initContainers", []):
                name = f"{pod.name}-{init['name']}-{suffix}"
                started.append(name)
                log(f"init container {init['name']} of {pod.name}")
                run(*PODMAN, "run", *pod.args(init, image, name))
            for container in pod.spec["containers"]:
                name = f"{pod.name}-{suffix}"
                health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
                started.append(name)
                launched.append((name, health, time.monotonic()))
                run(*PODMAN, "run", "--detach", *pod.args(container, image, name), stdout=subprocess.DEVNULL)
        for name, health, since in launched:
            wait_serving(health, name, STARTUP_TIMEOUT_S)
            startup[name] = time.monotonic() - since
        yield startup
    except BaseException:
        for name in started:
            logs = run(*PODMAN, "logs", "--tail", "30", name, capture_output=True, check=False)
            print(f"--- {name} (last lines)\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    finally:
        if not keep:
            for name in started:
                run(*PODMAN, "rm", "--force", "--time", "10", name, check=False,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="base image for the build (default: a local debootstrap Debian)")
    parser.add_argument("--image", default=f"localhost/oct-cpu:{version()}")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the run may take")
    parser.add_argument("--keep", action="store_true", help="leave the containers and their folders")
    args = parser.parse_args()

    ensure_debian_packages({"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"})
    if not HELM.exists():
        run("bash", str(ROOT / "scripts" / "install-helm.sh"))
    work = Path(tempfile.mkdtemp(prefix="oct-images-smoke-"))
    work.chmod(0o755)  # the containers' uid reads the mounted folders below it
    try:
        base = args.base or make_base(work)
        build_s = build(args.image, base, work)
        size = int(run(*PODMAN, "image", "inspect", "--format", "{{.Size}}", args.image,
                       capture_output=True).stdout.strip())
        log(f"image {args.image}: {size / 1e6:.0f} MB, built in {build_s:.0f} s")

        (work / "s3").mkdir()
        with seaweedfs(work / "s3") as s3:
            token = secrets.token_urlsafe(32)
            base_port = free_port_base()
            docs = render_chart(args.image, s3.endpoint, s3.access_key, s3.secret_key, token, base_port, work)
            objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
            hosts = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"]
            deployments = [doc for doc in docs if doc["kind"] == "Deployment"]
            pods = [Pod(d, objects, hosts, work / "pods") for d in deployments]
            suffix = f"smoke{os.getpid()}"
            with containers(pods, args.image, suffix, args.keep) as startup:
                for name, seconds in startup.items():
                    log(f"start-up {name}: {seconds:.1f} s (podman run -> gRPC health SERVING)")
                client = work / "client-tls"
                client.mkdir()
                controller_tls = _data(objects[("Secret", f"{RELEASE}-controller-tls")])
                (client / "ca.crt").write_text(controller_tls["ca.crt"])
                env = {**os.environ, "OCT_TOKEN": token, "OCT_TLS_DIR": str(client),
                       "OCT_HOME": str(work / "client-home")}
                log("submitting tests/integration/services/quick-run.yaml to the containerised controller")
                start = time.monotonic()
                submitted = subprocess.run(
                    [str(Path(sys.executable).parent / "oct"), "submit", str(QUICK_RUN), "--watch",
                     "--controller", f"127.0.0.1:{base_port}"],
                    env=env, text=True, timeout=args.timeout, check=False)
                wall = time.monotonic() - start
                if submitted.returncode != 0:
                    raise RuntimeError(f"the run did not succeed (oct submit exited {submitted.returncode})")
        log(f"image size {size / 1e6:.0f} MB; start-up {max(startup.values()):.1f} s (slowest of "
            f"{len(startup)} containers); run wall time {wall:.0f} s")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
