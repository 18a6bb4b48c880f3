"""The NetworkPolicies (k8s/base/network-policy.yaml) let through exactly the edges Tutti's
architecture needs, and the backend-to-backend ones are those internal mTLS authorises
(runtime/peers.py). The rendered manifests are evaluated here as Kubernetes would: a pod selected
by a policy of a direction accepts only what some rule of those policies allows (kubeconform
checks their schema in test_manifests.py)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.peers import EDGES, OPERATOR

ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]

GRPC = {"gateway": 50051, "inventory": 50052, "orchestrator": 50053, "returns": 50054, "tracking": 50055}
BACKENDS = ("inventory", "orchestrator", "returns", "tracking")
PACKAGE_OF = {"tutti.inventory.v1": "inventory", "tutti.orchestrator.v1": "orchestrator",
              "tutti.returns.v1": "returns", "tutti.tracking.v1": "tracking"}


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str]
    namespace: str
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def render(overlay: str) -> list[Doc]:
    result = subprocess.run(
        [str(ROOT / "tools" / "k8s_check.sh"), "render", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kustomize could not render {overlay}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Cluster:
    def __init__(self, docs: list[Doc]) -> None:
        self.policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        self.pods: dict[str, Pod] = {}
        for doc in docs:
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            template = doc["spec"]["template"]
            namespace = doc["metadata"]["namespace"]
            containers = template["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
            self.pods[doc["metadata"]["name"]] = Pod(
                doc["metadata"]["name"], template["metadata"]["labels"], namespace,
                {"kubernetes.io/metadata.name": namespace}, ports,
            )
        (self.namespace,) = {pod.namespace for pod in self.pods.values()}

    def outsider(self, namespace: str, **labels: str) -> Pod:
        return Pod(f"{namespace}/{labels}", labels, namespace, {"kubernetes.io/metadata.name": namespace})

    @staticmethod
    def _selects(selector: Doc, labels: dict[str, str]) -> bool:
        if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
            return False
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In", expression
            if labels.get(expression["key"]) not in expression["values"]:
                return False
        return True

    def _peer_matches(self, peer: Doc, pod: Pod | None) -> bool:
        if pod is None:  # outside the cluster: only an ipBlock (or no `from`/`to`) matches
            return "ipBlock" in peer
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            if not self._selects(peer["namespaceSelector"], pod.namespace_labels):
                return False
        elif pod.namespace != self.namespace:
            return False
        return "podSelector" not in peer or self._selects(peer["podSelector"], pod.labels)

    @staticmethod
    def _port_matches(rule_ports: list[Doc] | None, port: int, target: Pod | None) -> bool:
        if not rule_ports:
            return True
        for p in rule_ports:
            wanted = p["port"]
            if isinstance(wanted, str):
                if target is None or target.ports.get(wanted) != port:
                    continue
            elif wanted != port:
                continue
            return True
        return False

    def _allowed(
        self, direction: str, subject: Pod, other: Pod | None, port: int, target: Pod | None
    ) -> bool:
        key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        selecting = [
            p for p in self.policies
            if direction in p["spec"]["policyTypes"]
            and self._selects(p["spec"]["podSelector"], subject.labels)
        ]
        if not selecting:
            return True
        return any(
            (not rule.get(peers) or any(self._peer_matches(peer, other) for peer in rule[peers]))
            and self._port_matches(rule.get("ports"), port, target)
            for policy in selecting
            for rule in policy["spec"].get(key, [])
        )

    def connects(self, source: Pod | None, target: Pod | None, port: int) -> bool:
        """Whether ``source`` may open a TCP connection to ``target``:``port`` (None: outside the
        cluster)."""
        out = source is None or source.namespace != self.namespace or self._allowed(
            "Egress", source, target, port, target
        )
        into = target is None or target.namespace != self.namespace or self._allowed(
            "Ingress", target, source, port, target
        )
        return out and into


@pytest.fixture(scope="module", params=["dev", "production"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return Cluster(render(request.param))


def test_everything_not_listed_is_denied_by_default(cluster: Cluster) -> None:
    (deny,) = [p for p in cluster.policies if p["metadata"]["name"] == "default-deny"]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for pod in cluster.pods.values():
        assert cluster._selects(deny["spec"]["podSelector"], pod.labels), pod.name


def test_grpc_edges_between_tutti_pods_are_exactly_those_the_architecture_needs(cluster: Cluster) -> None:
    pods = cluster.pods
    allowed = {
        (source, target)
        for source in pods
        for target, port in [*GRPC.items(), ("console", 8080)]
        if source != target and cluster.connects(pods[source], pods[target], port)
    }
    assert allowed == {
        ("console", "gateway"),
        ("gateway", "inventory"),
        ("gateway", "orchestrator"),
        ("gateway", "returns"),
        ("gateway", "tracking"),
        ("orchestrator", "inventory"),
        ("returns", "inventory"), ("returns", "orchestrator"),
    }


def test_backend_edges_are_the_ones_internal_mtls_authorises(cluster: Cluster) -> None:
    """Who may connect (NetworkPolicy) and who may call (runtime.peers) agree."""
    by_certificate = {
        (identity, PACKAGE_OF[".".join(method.split(".")[:3])])
        for identity, methods in EDGES.items()
        if identity in BACKENDS
        for method in methods
    }
    by_network = {
        (source, target)
        for source in BACKENDS
        for target in BACKENDS
        if source != target and cluster.connects(cluster.pods[source], cluster.pods[target], GRPC[target])
    }
    assert by_network == by_certificate
    assert EDGES["gateway"] == frozenset({"*"}) and OPERATOR not in cluster.pods


def test_only_the_public_doors_are_reachable_from_outside(cluster: Cluster) -> None:
    pods = cluster.pods
    ingress = cluster.outsider("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
    stranger = cluster.outsider("somewhere-else", app="curious")
    assert cluster.connects(None, pods["gateway"], 50051)  # the public API, behind any load balancer
    assert cluster.connects(stranger, pods["gateway"], 50051)
    assert cluster.connects(ingress, pods["console"], 8080)
    assert not cluster.connects(stranger, pods["console"], 8080)
    assert not cluster.connects(None, pods["console"], 8080)
    for backend in BACKENDS:
        for source in (None, stranger, ingress):
            assert not cluster.connects(source, pods[backend], GRPC[backend]), (source, backend)


def test_prometheus_scrapes_every_metrics_port_and_nothing_else(cluster: Cluster) -> None:
    prometheus = cluster.outsider("monitoring", **{"app.kubernetes.io/name": "prometheus"})
    other = cluster.outsider("monitoring", **{"app.kubernetes.io/name": "grafana"})
    for name, pod in cluster.pods.items():
        if "metrics" not in pod.ports:
            continue
        assert cluster.connects(prometheus, pod, pod.ports["metrics"]), name
        assert not cluster.connects(other, pod, pod.ports["metrics"]), name
        if name in BACKENDS:
            assert not cluster.connects(prometheus, pod, GRPC[name]), name


def test_each_pod_reaches_dns_and_only_the_infrastructure_it_uses(cluster: Cluster) -> None:
    dns = cluster.outsider("kube-system", **{"k8s-app": "kube-dns"})
    uses = {
        "gateway": set(),
        "console": set(),
        "inventory": {6379, 9092},
        "orchestrator": {5432, 9092},
        "returns": {5432, 9092},
        "tracking": {5432, 9092},
        "tutti-prepare": {5432, 9092},
    }
    assert set(cluster.pods) == set(uses)
    for name, pod in cluster.pods.items():
        assert cluster.connects(pod, dns, 53), name
        for port in (5432, 6379, 9092):
            assert cluster.connects(pod, None, port) == (port in uses[name]), (name, port)
        assert not cluster.connects(pod, None, 443), name  # nothing else leaves the namespace
