#!/usr/bin/env bash
# Tests of the Helm chart: renders helm/runwarden with helm/tests/render (Go text/template +
# sprig + Helm's template functions; Helm itself is not installable here), validates every
# manifest of every documented mode against the Kubernetes schemas (kubernetes-validate) and
# asserts the chart's behaviours (helm/tests/test_chart.py). Installs what it needs
# (Debian's Go and Go libraries, PyPI's kubernetes-validate and pytest); safe to re-run.
# Exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

step() { printf '\n=== helm: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "tools"
debs=(golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev golang-gopkg-yaml.v3-dev
  golang-github-xeipuuv-gojsonschema-dev)
missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'install ok installed' || missing+=("$deb")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import kubernetes_validate, pytest, yaml' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate pytest pyyaml
go version
python3 -c 'import kubernetes_validate; print("kubernetes-validate", kubernetes_validate.__version__)'

step "build the renderer"
# Debian's Go libraries live in /usr/share/gocode; GOPATH mode, no module downloads.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(
  cd "$here/render"
  export GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="${XDG_CACHE_HOME:-$HOME/.cache}/runwarden-helm-go"
  go vet .
  go build -o "$build/render" .
)
export RUNWARDEN_HELM_RENDER="$build/render"

step "render, validate and test"
cd "$here"
# No __pycache__ or .pytest_cache in the work tree.
PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider test_chart.py
