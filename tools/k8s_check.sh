#!/usr/bin/env bash
# Validate Tutti's Kubernetes manifests (docs/deploy.md): render every kustomize overlay, and
# production with each optional component, then check every object against the Kubernetes
# OpenAPI schemas with kubeconform in strict mode (unknown or misspelt fields are errors), for
# the oldest and the newest Kubernetes version we support.
#
# Tools are installed under .tutti/ (git-ignored) on first use, by name from the Go module proxy
# (kustomize, kubeconform) and PyPI (kubernetes-validate, which ships the Kubernetes JSON
# schemas: kubeconform's default schema download from GitHub is not reachable everywhere).
# The prometheus-operator objects (ServiceMonitor, PrometheusRule) are checked against the CRDs
# of the prometheus-operator Go module (from the module proxy too), converted to JSON schemas.
# promtool (the Prometheus module, a long build on first use) checks the alert rules.
#
#   tools/k8s_check.sh              install what is missing, render, validate; exit 1 on any error
#   tools/k8s_check.sh install      only install the tools (exit 3 when one cannot be installed)
#   tools/k8s_check.sh render DIR   print the rendered manifests of a kustomization directory
#   tools/k8s_check.sh validate FILE...  kubeconform -strict on rendered manifest files
#   tools/k8s_check.sh promtool ARG...   run promtool (installed on first use)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/.tutti"
BIN="$WORK/bin"
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.7.1 # v5.8 needs Go >= 1.27
SCHEMAS_VERSION=1.37.0   # PyPI kubernetes-validate: schemas of Kubernetes 1.25 ... 1.37
K8S_VERSIONS=(1.27.0 1.37.0) # 1.27: native gRPC probes are GA
OVERLAYS=(dev production)
COMPONENTS=(gateway-tls) # each validated on top of the production overlay
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SCHEMAS="$WORK/k8s/schemas-$SCHEMAS_VERSION"
OPERATOR_VERSION=v0.85.0 # prometheus-operator: the CRDs of ServiceMonitor and PrometheusRule
CRD_KINDS=(servicemonitors prometheusrules)
CRD_SCHEMAS="$WORK/k8s/crd-schemas-$OPERATOR_VERSION"
PROMETHEUS_VERSION=v0.316.0 # the Go module's version of Prometheus 3.x, for promtool

die() { echo "k8s_check: $*" >&2; exit "${2:-1}"; }

go_install() { # name module version
    local stamp="$BIN/.$1-$3"
    [[ -x "$BIN/$1" && -e "$stamp" ]] && return 0
    command -v go >/dev/null || die "cannot install $1: the Go toolchain is missing (apt-get install golang-go)" 3
    echo "k8s_check: installing $1 $3 into .tutti/bin" >&2
    GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "$2@$3" >&2 || die "cannot install $1 ($2@$3) with go install" 3
    rm -f "$BIN/.$1-"*
    touch "$stamp"
}

install_schemas() {
    [[ -e "$SCHEMAS/.complete" ]] && return 0
    [[ -x "$PYTHON" ]] || die "cannot install the Kubernetes schemas: no Python at $PYTHON (make install)" 3
    local pkg="$WORK/k8s/kubernetes-validate-$SCHEMAS_VERSION" staging="$SCHEMAS.tmp.$$"
    if [[ ! -d "$pkg/kubernetes_validate" ]]; then
        echo "k8s_check: installing the Kubernetes JSON schemas (kubernetes-validate $SCHEMAS_VERSION)" >&2
        "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$pkg.tmp.$$" \
            "kubernetes-validate==$SCHEMAS_VERSION" >&2 || die "cannot pip install kubernetes-validate==$SCHEMAS_VERSION" 3
        rm -rf "$pkg" && mv "$pkg.tmp.$$" "$pkg"
    fi
    # kubernetes-validate's schemas point into one shared _definitions.json by an absolute
    # "/api/..." reference that kubeconform cannot resolve: write, for each resource kind, a
    # standalone schema embedding just the definitions it reaches.
    rm -rf "$staging"
    "$PYTHON" - "$pkg/kubernetes_validate/kubernetes-json-schema" "$staging" "${K8S_VERSIONS[@]}" <<'PY' || die "cannot convert the schemas" 3
import json, sys
from pathlib import Path

source, target, versions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
for version in versions:
    src = source / f"v{version}-local-strict"
    out = target / f"v{version}-standalone-strict"
    out.mkdir(parents=True)
    definitions = json.loads((src / "_definitions.json").read_text())["$defs"]
    for path in sorted(src.glob("*.json")):
        schema = json.loads(path.read_text())
        if "x-kubernetes-group-version-kind" not in schema:
            continue  # not a resource kind (a part of one)
        reached: dict[str, object] = {}

        def walk(node: object) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and "#/$defs/" in ref:
                    name = ref.split("#/$defs/", 1)[1]
                    node["$ref"] = f"#/$defs/{name}"
                    if name not in reached:
                        reached[name] = definitions[name]
                        walk(definitions[name])
                for key, value in node.items():
                    if key != "$ref":
                        walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(schema)
        schema["$defs"] = reached
        (out / path.name).write_text(json.dumps(schema))
PY
    touch "$staging/.complete"
    rm -rf "$SCHEMAS" && mv "$staging" "$SCHEMAS"
}

install_crd_schemas() {
    [[ -e "$CRD_SCHEMAS/.complete" ]] && return 0
    command -v go >/dev/null || die "cannot fetch the prometheus-operator CRDs: the Go toolchain is missing" 3
    local dir staging="$CRD_SCHEMAS.tmp.$$"
    echo "k8s_check: fetching the prometheus-operator $OPERATOR_VERSION CRDs (Go module proxy)" >&2
    dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION" \
        | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
        || die "cannot download github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION" 3
    rm -rf "$staging"
    # Each version's openAPIV3Schema, as kubeconform wants it: strict (objects that list their
    # properties accept no other), named <group>/<kind>_<version>.json.
    "$PYTHON" - "$dir/example/prometheus-operator-crd" "$staging" "${CRD_KINDS[@]}" <<'PY' || die "cannot convert the CRDs" 3
import json, sys
from pathlib import Path

import yaml

source, target, kinds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]


def strict(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


for kind in kinds:
    crd = yaml.safe_load((source / f"monitoring.coreos.com_{kind}.yaml").read_text())
    group, name = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        strict(schema)
        out = target / group / f"{name}_{version['name']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(schema))
PY
    touch "$staging/.complete"
    rm -rf "$CRD_SCHEMAS" && mv "$staging" "$CRD_SCHEMAS"
}

install_all() {
    mkdir -p "$BIN" "$WORK/k8s"
    go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
    go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
    install_schemas
    install_crd_schemas
}

render() { "$BIN/kustomize" build "$1"; }

kubeconform() { # files...
    local failed=0 version
    for version in "${K8S_VERSIONS[@]}"; do
        echo "k8s_check: kubeconform -strict, Kubernetes $version" >&2
        "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
            -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -schema-location "$CRD_SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
            "$@" || failed=1
    done
    return $failed
}

validate() {
    local out="${K8S_CHECK_OUT:-$WORK/k8s/rendered}" dir name # K8S_CHECK_OUT: where to write them
    rm -rf "$out" && mkdir -p "$out"
    for name in "${OVERLAYS[@]}"; do
        render "$ROOT/k8s/overlays/$name" >"$out/$name.yaml" || die "kustomize build k8s/overlays/$name failed"
    done
    for name in "${COMPONENTS[@]}"; do
        # A throwaway kustomization (kustomize only loads relative paths) = production + component.
        dir="$WORK/k8s/with-$name"
        mkdir -p "$dir"
        printf 'resources:\n  - ../../../k8s/overlays/production\ncomponents:\n  - ../../../k8s/components/%s\n' \
            "$name" >"$dir/kustomization.yaml"
        render "$dir" >"$out/production+$name.yaml" || die "kustomize build of production + components/$name failed"
    done
    kubeconform "$out"/*.yaml || die "the manifests do not validate (see above)"
    echo "k8s_check: ok (${OVERLAYS[*]}, production+${COMPONENTS[*]}; Kubernetes ${K8S_VERSIONS[*]})" >&2
}

case "${1:-check}" in
    install) install_all ;;
    render)
        [[ $# == 2 ]] || die "usage: $0 render DIR" 2
        install_all
        render "$2"
        ;;
    validate)
        [[ $# -ge 2 ]] || die "usage: $0 validate FILE..." 2
        shift
        install_all
        kubeconform "$@" || die "invalid manifests (see above)"
        ;;
    check) install_all && validate ;;
    promtool)
        shift
        mkdir -p "$BIN"
        go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"
        exec "$BIN/promtool" "$@"
        ;;
    *) die "usage: $0 [check|install|render DIR|validate FILE...|promtool ARG...]" 2 ;;
esac
