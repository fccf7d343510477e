#!/usr/bin/env bash
# Generate the Python gRPC stubs of proto/character/v1/*.proto into services/character_services/api/ (or into
# the folder given as $1, which is how tests/unit/services/test_proto_in_sync.py checks
# that the committed stubs are current). Uses grpcio-tools from .venv: no network, no buf
# remote plugins.
#
# protoc writes imports as `from character.v1 import x_pb2`, which would resolve to the
# library package `character`; they are rewritten to `character_services.api.character.v1` .
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/services/character_services/api}"
python="${PYTHON:-$root/.venv/bin/python}"

mkdir -p "$out/character/v1"
"$python" -m grpc_tools.protoc \
  -I "$root/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/proto/character/v1/*.proto
for f in "$out"/character/v1/*_pb2*.py "$out"/character/v1/*_pb2.pyi; do
  sed -i -E 's/^from character\.v1 import /from character_services.api.character.v1 import /' "$f"
done
for d in "$out" "$out/character" "$out/character/v1"; do
  [ -f "$d/__init__.py" ] || echo '"""Generated gRPC stubs (scripts/gen-proto.sh); do not edit."""' > "$d/__init__.py"
done
