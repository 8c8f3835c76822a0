#!/usr/bin/env bash
# Validates the Kubernetes deployment with real tools: `helm lint --strict` on the chart,
# `helm template` of it (defaults as release "ddprofiler", and a release with other values),
# then a Go test (deploy/validate) that decodes every object of deploy/kubernetes/ and of
# those renderings strictly into the Kubernetes API types (k8s.io/api, sigs.k8s.io/yaml),
# checks that the chart's defaults give the plain manifests' objects, and checks each
# DaemonSet's security and sizing contract. Helm is built from the Go module proxy into
# .cache/bin on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
HELM_VERSION=v3.19.0
bin=$PWD/.cache/bin
helm=$bin/helm
if ! [ -x "$helm" ] || ! "$helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  GOBIN=$bin GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
chart=deploy/helm/ddprofiler
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$helm" lint --strict "$chart"
"$helm" template ddprofiler "$chart" > "$out/defaults.yaml"
"$helm" template prod "$chart" --namespace observability \
  --set image.repository=registry.example/ddprofiler,image.tag=1.2.3 \
  --set-json 'extraEnv=[{"name":"DD_ENV","value":"prod"}]' \
  --set-json 'args=["run","--sampling-rate","49"]' > "$out/prod.yaml"
cd deploy/validate
DDPROF_RENDERED="$out/defaults.yaml,$out/prod.yaml" go test -count=1 -v ./...
