"""The Kubernetes manifests (k8s/, docs/deploy.md) follow the house rules, checked on what
kustomize renders for each overlay — what a platform team would apply.

Unit-level: no cluster and no server. tools/k8s_check.sh installs kustomize, kubeconform and
the Kubernetes JSON schemas under .tutti/ on first use (Go module proxy, PyPI); when it cannot,
these tests FAIL with its message: nothing here is ever skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from gateway.settings import BACKENDS
from runtime.settings import DEFAULT_ADDRESSES, DEFAULT_METRICS_ADDRESSES

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "k8s_check.sh"
# What tools/k8s_check.sh renders: each overlay, and production with each optional component.
RENDERINGS = ("dev", "production", "production+gateway-tls")
# Every server: its module (`python -m ...`) and its gRPC port.
SERVERS = {
    "gateway": ("gateway", 50051),
    "inventory": ("services.inventory", 50052),
    "orchestrator": ("services.orchestrator", 50053),
    "returns": ("services.returns", 50054),
    "tracking": ("services.tracking", 50055),
}
# The backends' plaintext probe ports (health only): internal mTLS on their gRPC port.
PROBE_PORTS = {"inventory": 50062, "orchestrator": 50063, "returns": 50064, "tracking": 50065}
# Made by cert-manager (base/internal-tls.example.yaml) in every namespace, dev included.
INTERNAL_TLS_SECRETS = {f"tutti-{name}-internal-tls" for name in SERVERS}
# The web console: an HTTP server, a client of the gateway.
WEB = {"console": ("console", 8080)}
AUTOSCALED = ("gateway", "inventory")
PREPARE = ("python", "-m", "tools.prepare")
UID = 10001

Doc = dict[str, Any]


def _run_check(*args: str, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    if out is not None:
        env["K8S_CHECK_OUT"] = str(out)
    return subprocess.run(
        [str(CHECK), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rendered")


@pytest.fixture(scope="module")
def check(rendered_dir: Path) -> subprocess.CompletedProcess[str]:
    """One full run: install what is missing, render every overlay, kubeconform them."""
    result = _run_check("check", out=rendered_dir)
    if result.returncode == 3:
        pytest.fail(f"tools/k8s_check.sh could not install its tools:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def rendered(check: subprocess.CompletedProcess[str], rendered_dir: Path) -> dict[str, list[Doc]]:
    out = {}
    for name in RENDERINGS:
        path = rendered_dir / f"{name}.yaml"
        if not path.is_file():
            pytest.fail(f"kustomize did not render {name}:\n{check.stderr}")
        out[name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def _kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def _env(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def _config(docs: list[Doc]) -> dict[str, str]:
    (config,) = [doc for name, doc in _kind(docs, "ConfigMap").items() if name.startswith("tutti-config")]
    return config["data"]


def _metrics_port(name: str) -> int:
    return int(DEFAULT_METRICS_ADDRESSES[name].rpartition(":")[2])


def _server(docs: list[Doc], name: str) -> Doc:
    container: Doc = _kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
    return container


def names_read_by_code() -> set[str]:
    """Every TUTTI_* / OTEL_* variable some shipped code reads (string literals), and the
    address variables runtime.settings builds from DEFAULT_ADDRESSES."""
    names = {f"TUTTI_{name.upper()}_ADDR" for name in DEFAULT_ADDRESSES}
    names |= {f"TUTTI_{name.upper()}_METRICS_ADDR" for name in DEFAULT_METRICS_ADDRESSES}
    names |= {f"TUTTI_{name.upper()}_PROBE_ADDR" for name in DEFAULT_ADDRESSES}
    literal = re.compile(r"""["'](TUTTI_[A-Z0-9_]+|OTEL_[A-Z0-9_]+)["']""")
    for package in ("runtime", "services", "gateway", "console", "tools"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(literal.findall(path.read_text()))
    return names


def _documented_secrets() -> dict[str, set[str]]:
    docs = yaml.safe_load_all((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())
    return {doc["metadata"]["name"]: set(doc["stringData"]) for doc in docs if doc}


# --- schema validation ---------------------------------------------------------------------


def test_every_rendering_is_valid_kubernetes(check: subprocess.CompletedProcess[str]) -> None:
    assert check.returncode == 0, f"tools/k8s_check.sh failed:\n{check.stdout}\n{check.stderr}"
    summaries = re.findall(r"Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)", check.stdout)
    assert summaries, check.stdout
    for valid, invalid, errors, skipped in summaries:
        assert int(valid) > 0 and (invalid, errors, skipped) == ("0", "0", "0"), check.stdout


def test_the_schema_check_rejects_an_unknown_field(
    check: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    # Proves the schemas bite: a misspelt field must fail, not be waved through.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
        "  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n"
        "    spec:\n      containers:\n      - {name: x, image: x, readinessProbes: {grpc: {port: 1}}}\n"
    )
    result = _run_check("validate", str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "additional properties 'readinessProbes' not allowed" in result.stdout


# --- every part, the way the house runs it -----------------------------------------------


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_server_has_a_deployment_a_grpc_service_and_its_own_account(
    rendered: dict[str, list[Doc]], rendering: str
) -> None:
    docs = rendered[rendering]
    deployments, services, accounts = (_kind(docs, k) for k in ("Deployment", "Service", "ServiceAccount"))
    assert set(deployments) == set(SERVERS) | set(WEB)
    for name, (module, port) in SERVERS.items():
        pod = deployments[name]["spec"]["template"]
        assert pod["spec"]["serviceAccountName"] == name and name in accounts
        assert accounts[name]["automountServiceAccountToken"] is False
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "-m", module]
        metrics = _metrics_port(name)
        probe = [{"name": "probe", "containerPort": PROBE_PORTS[name]}] if name in PROBE_PORTS else []
        assert container["ports"] == [
            {"name": "grpc", "containerPort": port},
            {"name": "metrics", "containerPort": metrics},
            *probe,
        ]
        service = services[name]
        assert service["spec"]["ports"] == [
            {"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"},
            {"name": "metrics", "port": metrics, "targetPort": "metrics", "appProtocol": "http"},
        ]
        selector = service["spec"]["selector"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_backends_are_headless_so_callers_balance_over_every_pod(
    rendered: dict[str, list[Doc]], rendering: str
) -> None:
    """The gateway and the orchestrator dial the backends with round_robin over what DNS
    returns: a headless Service returns every ready pod (a virtual IP would be one address, so
    one connection, so one pod). The gateway stays behind a virtual IP: its callers are outside."""
    services = _kind(rendered[rendering], "Service")
    for name in BACKENDS:
        assert services[name]["spec"].get("clusterIP") == "None", f"{rendering}: Service/{name}"
        assert not services[name]["spec"].get("publishNotReadyAddresses"), "only ready pods get calls"
    assert services["gateway"]["spec"].get("clusterIP") != "None"


def test_every_service_port_is_named_by_its_protocol(rendered: dict[str, list[Doc]]) -> None:
    for rendering, docs in rendered.items():
        for name, service in _kind(docs, "Service").items():
            names = [p["name"] for p in service["spec"]["ports"]]
            expected = ["http", "metrics"] if name in WEB else ["grpc", "metrics"]
            assert names == expected, f"{rendering}: Service/{name}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_the_console_serves_http_probed_on_its_own_paths_and_dials_the_gateway(
    rendered: dict[str, list[Doc]], rendering: str
) -> None:
    docs = rendered[rendering]
    ((module, port),) = WEB.values()
    container = _server(docs, "console")
    assert container["command"] == ["python", "-m", module]
    metrics = _metrics_port("console")
    assert container["ports"] == [
        {"name": "http", "containerPort": port},
        {"name": "metrics", "containerPort": metrics},
    ]
    env = _env(container)
    assert env["TUTTI_CONSOLE_METRICS_ADDR"]["value"] == f"0.0.0.0:{metrics}"
    assert env["TUTTI_CONSOLE_ADDR"]["value"] == f"0.0.0.0:{port}"
    assert env["TUTTI_CONSOLE_SECURE_COOKIES"]["value"] == "true"
    assert "TUTTI_GATEWAY_ADDR" not in env  # it dials the gateway's Service, from tutti-config
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert paths == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    service = _kind(docs, "Service")["console"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"},
        {"name": "metrics", "port": metrics, "targetPort": "metrics", "appProtocol": "http"},
    ]
    ingresses = _kind(docs, "Ingress")
    if rendering.startswith("production"):
        rule = ingresses["console"]["spec"]
        assert rule["tls"] and rule["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "console"
        # Sessions are held per pod: the Ingress keeps a browser on one.
        assert (
            ingresses["console"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"]
            == "cookie"
        )
    else:
        assert not ingresses


def test_every_command_runs_a_module_of_the_repository(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        for where, pod in _pod_templates(docs):
            for container in pod["spec"]["containers"]:
                python, flag, module = container["command"]
                assert (python, flag) == ("python", "-m"), where
                path = ROOT.joinpath(*module.split("."))
                assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file(), (
                    f"{where} runs `python -m {module}`, which does not exist in the repository"
                )


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_container_is_locked_down_and_sized(rendered: dict[str, list[Doc]], rendering: str) -> None:
    templates = dict(_pod_templates(rendered[rendering]))
    assert "Job/tutti-prepare" in templates
    for where, pod in templates.items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == UID, where
        assert spec["securityContext"]["runAsGroup"] == UID, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["privileged"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{where}: {bound}"
            # The root filesystem is read-only: /tmp is a (bounded) emptyDir.
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "sizeLimit" in volumes[tmp["name"]]["emptyDir"], where
            assert container["image"].startswith(("tutti:", "registry.")), where


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_server_is_probed_through_grpc_health(rendered: dict[str, list[Doc]], rendering: str) -> None:
    for name, (_, port) in SERVERS.items():
        container = _server(rendered[rendering], name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if rendering == "production+gateway-tls" and name == "gateway":
                # Kubelet's gRPC probes cannot speak TLS: the component switches to TCP.
                assert container[probe] == {**container[probe], "tcpSocket": {"port": "grpc"}}
                assert "grpc" not in container[probe]
            else:
                # Liveness asks the "liveness" health name, which stays SERVING while the process
                # answers: a dependency outage must not restart pods (readiness takes them out).
                # Backends are probed on their plaintext probe port: the kubelet cannot present
                # the client certificate their mTLS port asks for.
                at = PROBE_PORTS.get(name, port)
                expected = {"port": at, "service": "liveness"} if probe == "livenessProbe" else {"port": at}
                assert container[probe]["grpc"] == expected, f"{rendering}: {name} {probe}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_termination_grace_covers_the_drain(rendered: dict[str, list[Doc]], rendering: str) -> None:
    docs = rendered[rendering]
    grace = float(_config(docs)["TUTTI_SHUTDOWN_GRACE_SECONDS"])
    for name, deployment in _kind(docs, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep", name
        # preStop sleep, then SIGTERM: NOT_SERVING, drain for the grace, flush, close.
        assert spec["terminationGracePeriodSeconds"] >= float(sleep[1]) + grace + 10, name


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_each_server_listens_on_all_interfaces_while_the_others_dial_its_service(
    rendered: dict[str, list[Doc]], rendering: str
) -> None:
    docs = rendered[rendering]
    config = _config(docs)
    services = _kind(docs, "Service")
    assert set(SERVERS) == set(DEFAULT_ADDRESSES)
    for name, (_, port) in SERVERS.items():
        variable = f"TUTTI_{name.upper()}_ADDR"
        # Shared: where everybody dials it, i.e. its Service.
        assert config[variable] == f"{name}:{port}"
        assert services[name]["spec"]["ports"][0]["port"] == port
        # Its own Deployment overrides that (env wins over envFrom) to listen on the pod.
        assert _env(_server(docs, name))[variable]["value"] == f"0.0.0.0:{port}"
        for other in set(SERVERS) - {name}:
            assert variable not in _env(_server(docs, other)), f"{other} must dial {name} through its Service"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_each_server_serves_metrics_on_its_pod_and_production_scrapes_them(
    rendered: dict[str, list[Doc]], rendering: str
) -> None:
    docs = rendered[rendering]
    for name in (*SERVERS, *WEB):
        variable = f"TUTTI_{name.upper()}_METRICS_ADDR"
        # Its default is loopback: the pod must listen on every interface for Prometheus.
        assert _env(_server(docs, name))[variable]["value"] == f"0.0.0.0:{_metrics_port(name)}"
        assert variable not in _config(docs), "one port per process: not shared configuration"
    monitors, rules = _kind(docs, "ServiceMonitor"), _kind(docs, "PrometheusRule")
    if rendering == "dev":
        assert not monitors and not rules  # dev clusters rarely run prometheus-operator
        return
    (monitor,) = monitors.values()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = _kind(docs, "Service")
    scraped = {n for n, svc in services.items() if selector.items() <= svc["metadata"]["labels"].items()}
    assert scraped == set(SERVERS) | set(WEB)
    assert monitor["metadata"]["namespace"] == "tutti"
    (rule,) = rules.values()
    assert rule["spec"]["groups"], "alerts"
    dashboards = [doc for n, doc in _kind(docs, "ConfigMap").items() if n.startswith("tutti-dashboards")]
    assert len(dashboards) == 1 and dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_variable_set_is_one_the_code_reads(rendered: dict[str, list[Doc]], rendering: str) -> None:
    known = names_read_by_code()
    docs = rendered[rendering]
    for name, config in _kind(docs, "ConfigMap").items():
        if not name.startswith("tutti-config"):
            continue  # not environment (the dashboards' JSON)
        unknown = set(config["data"]) - known
        assert not unknown, f"ConfigMap/{name} sets variables no code reads: {sorted(unknown)}"
    for where, pod in _pod_templates(docs):
        for container in pod["spec"]["containers"]:
            unknown = set(_env(container)) - known
            assert not unknown, f"{where} sets variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_reference_resolves(rendered: dict[str, list[Doc]], rendering: str) -> None:
    """ConfigMaps are rendered; Secrets are rendered (dev) or documented in secret.example.yaml
    with the key read (production creates them out of band)."""
    docs = rendered[rendering]
    config_maps, secrets, accounts = (_kind(docs, k) for k in ("ConfigMap", "Secret", "ServiceAccount"))
    documented = _documented_secrets()

    def secret_has(name: str, key: str | None) -> bool:
        if name in secrets:
            return key is None or key in secrets[name]["data"]
        if name in INTERNAL_TLS_SECRETS:
            return name in documented and (key is None or key in documented[name])
        return rendering != "dev" and name in documented and (key is None or key in documented[name])

    for where, pod in _pod_templates(docs):
        assert pod["spec"]["serviceAccountName"] in accounts, where
        for volume in pod["spec"]["volumes"]:
            if "secret" in volume:
                assert secret_has(volume["secret"]["secretName"], None), f"{where}: volume {volume['name']}"
        for container in pod["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, where
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert secret_has(ref["name"], ref["key"]), f"{where}: {item['name']} from {ref}"


def test_production_commits_no_secret(rendered: dict[str, list[Doc]]) -> None:
    for rendering in ("production", "production+gateway-tls"):
        assert not _kind(rendered[rendering], "Secret"), rendering
    for name, keys in _documented_secrets().items():
        assert keys, name
    text = (ROOT / "k8s" / "base" / "secret.example.yaml").read_text()
    assert "secret.example.yaml" not in (ROOT / "k8s" / "base" / "kustomization.yaml").read_text()
    assert "PASSWORD" in text and "REPLACE_WITH" in text


# --- availability --------------------------------------------------------------------------


def test_dev_runs_one_of_each(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    assert not _kind(docs, "HorizontalPodAutoscaler")
    for name, deployment in _kind(docs, "Deployment").items():
        assert deployment["spec"].get("replicas", 1) == 1, name


@pytest.mark.parametrize("rendering", ["production", "production+gateway-tls"])
def test_production_survives_a_node_drain(rendered: dict[str, list[Doc]], rendering: str) -> None:
    docs = rendered[rendering]
    deployments = _kind(docs, "Deployment")
    autoscalers = _kind(docs, "HorizontalPodAutoscaler")
    budgets = _kind(docs, "PodDisruptionBudget")
    assert set(autoscalers) == set(AUTOSCALED)
    for name, deployment in deployments.items():
        if name in autoscalers:
            hpa = autoscalers[name]["spec"]
            assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            assert 3 <= hpa["minReplicas"] < hpa["maxReplicas"], name
            # An applied replica count would fight the autoscaler on every apply.
            assert "replicas" not in deployment["spec"], name
            minimum = hpa["minReplicas"]
        else:
            minimum = deployment["spec"]["replicas"]
            assert minimum >= 2, name
        # A budget for every part that lets a drain proceed one pod at a time.
        budget = budgets[name]["spec"]
        assert budget["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert budget.get("maxUnavailable") == 1 or budget["minAvailable"] < minimum, name
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items(), name
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in spec["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"].items() <= labels.items(), name


def test_namespaces_enforce_the_restricted_pod_security_standard(rendered: dict[str, list[Doc]]) -> None:
    for rendering, docs in rendered.items():
        (namespace,) = _kind(docs, "Namespace").values()
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted", (
            rendering
        )
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], rendering


# --- the image -----------------------------------------------------------------------------


def test_the_image_is_built_the_way_the_manifests_expect() -> None:
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim\b", dockerfile, re.M)
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${NODE_IMAGE}", "${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert re.search(rf"^USER {UID}:{UID}$", dockerfile, re.M), "numeric user, so runAsNonRoot can verify it"
    assert "python -m tools.gen_protos" in dockerfile
    assert re.search(r'^ENTRYPOINT \["python", "-m"\]$', dockerfile, re.M)
    # The build context keeps only what the image needs; everything it copies is let in.
    ignore = (ROOT / "k8s" / "Dockerfile.dockerignore").read_text().split()
    let_in = ("pyproject.toml", "requirements.lock", "README.md", "proto")
    let_in += ("runtime", "services", "gateway", "console", "tools")
    for path in let_in:
        assert f"!{path}" in ignore, path


# Imports the image may lack on purpose, and why (none today: the OTLP exporter is locked).
OPTIONAL_IMPORTS: dict[str, str] = {}
# The extras the image keeps: requirements.lock also holds `codegen`, removed after the build.
IMAGE_EXTRAS = ("otlp",)
# What the image runs: the five parts, and the tools the Dockerfile and the Job call.
IMAGE_CODE = ("runtime", "services", "gateway", "console", "tools/prepare.py", "tools/gen_protos.py")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_closure() -> set[str]:
    """Distributions the image keeps: pyproject.toml's dependencies and IMAGE_EXTRAS, and theirs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    seen: set[str] = set()
    lines = project["dependencies"] + [r for e in IMAGE_EXTRAS for r in project["optional-dependencies"][e]]
    todo = [_canonical(Requirement(line).name) for line in lines]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_canonical(requirement.name))
    return seen


def _imported_modules() -> dict[str, str]:
    """Absolute imports of the image's code that are neither local nor standard library."""
    local = {"runtime", "services", "gateway", "console", "tools", "tutti"}
    found: dict[str, str] = {}
    for entry in IMAGE_CODE:
        base = ROOT / entry
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in local and top not in sys.stdlib_module_names:
                        found.setdefault(module, str(path.relative_to(ROOT)))
    return found


def test_the_image_installs_every_library_the_parts_import() -> None:
    """The image keeps the project's declared dependencies and IMAGE_EXTRAS only (from
    requirements.lock): a library that is merely present in a developer's virtualenv makes a
    pod crash at start."""
    declared = _declared_closure()
    modules = _imported_modules()
    # Index the files of just the distributions that provide these top-level names.
    candidates = metadata.packages_distributions()
    owners: dict[str, str] = {}
    for name in {d for module in modules for d in candidates.get(module.split(".")[0], [])}:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            owners[str(dist.locate_file(file))] = _canonical(dist.metadata["Name"])
    missing = []
    for module, where in sorted(modules.items()):
        if module in OPTIONAL_IMPORTS:
            continue
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            missing.append(f"{module} (imported by {where}) is not installed at all")
            continue
        origin = spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or []), None)
        owner = owners.get(str(origin))
        if owner is not None and owner not in declared:
            missing.append(
                f"{module} (imported by {where}) comes from {owner}, not a dependency in pyproject.toml"
            )
    assert not missing, "\n".join(missing)
