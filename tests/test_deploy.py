"""The deployment: Prometheus alert rules unit-tested by the real promtool (Debian's prometheus
package; `make test` installs it where it can), the Dockerfile linted by hadolint, and the Compose
stack and the Kubernetes manifests (kustomize, kubernetes-validate) checked for what a hospital
relies on."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.kafka.broker import KAFKA_IMAGE, docker_kafka_environment

PROMETHEUS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package 'prometheus'; make test installs it "
    "where apt-get runs as root)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 14 rules found" in checked.stdout  # 12 alerts, 2 for the local hour


@needs_promtool
def test_every_alert_rule_fires_when_it_should_and_only_then() -> None:
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_rule_has_a_runbook_url_to_its_paragraph() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len(alerts) == 12
    runbook = (PROMETHEUS.parent / "README.md").read_text()
    headings = {
        line.lstrip("#").strip().lower().replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("### ")
    }
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        page, anchor = url.split("#")
        assert page == "deploy/README.md", rule["alert"]
        assert anchor in headings, rule["alert"]
        assert "runbook" not in rule["annotations"], rule["alert"]


def test_the_alert_tests_cover_every_alert_rule() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts - fired == set()


@needs_promtool
def test_the_compose_prometheus_config_is_valid_with_its_rules() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


DEPLOY = PROMETHEUS.parent
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (make install adds it)")
def test_the_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    linted = subprocess.run(
        [HADOLINT, "deploy/Dockerfile"], cwd=DEPLOY.parent, capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_dockerfile_runs_as_a_user_with_a_healthcheck() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in dockerfile
    assert "\nHEALTHCHECK " in dockerfile
    assert 'ENTRYPOINT ["plateletwatch"]' in dockerfile


def test_the_compose_stack_is_complete_and_pinned() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {
        "kafka",
        "ingest",
        "classifier",
        "notifier",
        "prometheus",
        "grafana",
        "postgres",
    } <= set(services)
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from `topics`
    images = [s["image"] for s in services.values() if "image" in s]
    assert [i for i in images if i.endswith(":latest") or ":" not in i] == []
    ports = {"ingest": "8410", "classifier": "8411", "notifier": "8412", "demo-pager": "8419"}
    for name, port in ports.items():
        service = services[name]
        assert service["command"] == [name]
        assert service["environment"]["HEALTH_PORT"] == port  # the image's HEALTHCHECK
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name in ("ingest", "classifier", "notifier"):
        started_after = services[name]["depends_on"]["topics"]["condition"]
        assert started_after == "service_completed_successfully"
    scraped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {c["static_configs"][0]["targets"][0] for c in scraped["scrape_configs"]}
    assert targets == {f"{name}:{ports[name]}" for name in ("ingest", "classifier", "notifier")}


def test_compose_the_jars_and_the_docker_test_broker_run_the_same_kafka() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == KAFKA_IMAGE
    pom = (DEPLOY / "kafka-jars" / "pom.xml").read_text()
    (jar_version,) = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert KAFKA_IMAGE.rpartition(":")[2] == jar_version
    # The testcontainers broker is compose's node, but for the addresses Docker maps.
    in_docker = docker_kafka_environment(19092)
    assert in_docker["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:19092"
    addresses = {"KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"}
    for name, value in kafka["environment"].items():
        if name not in addresses:
            assert in_docker[name] == str(value), name


KUBECTL = shutil.which("kubectl")
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "production"
BASE = DEPLOY / "kubernetes" / "base"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    built = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


def test_the_manifests_are_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    custom = {"ServiceMonitor"}  # a Prometheus Operator CRD: no schema in kubernetes-validate
    version = kubernetes_validate.latest_version()
    for manifest in manifests:
        if manifest["kind"] not in custom:
            kubernetes_validate.validate(manifest, version, strict=True)
    assert {m["kind"] for m in manifests} >= {"Deployment", "Job", "Service"}


def test_every_workload_is_probed_sized_unprivileged_and_protected(
    manifests: list[dict[str, Any]],
) -> None:
    workloads = [m for m in manifests if m["kind"] == "Deployment"]
    assert {w["metadata"]["name"] for w in workloads} == {
        "plateletwatch-ingest",
        "plateletwatch-classifier",
        "plateletwatch-notifier",
    }
    budgets = {
        m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for m in manifests
        if m["kind"] == "PodDisruptionBudget"
    }
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]["memory"]
        assert workload["metadata"]["name"] in budgets
        assert workload["spec"]["replicas"] == 3  # the production overlay
    (classifier,) = [w for w in workloads if w["metadata"]["name"] == "plateletwatch-classifier"]
    assert classifier["kind"] == "Deployment"  # its state lives in the changelog topic


@pytest.fixture(scope="module", params=[BASE, OVERLAY], ids=["base", "production"])
def each_build(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["spec"]
        for m in manifests
        if m["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}
    }


def test_every_container_is_locked_down_and_writes_only_to_its_volumes(
    each_build: list[dict[str, Any]],
) -> None:
    pods = pod_specs(each_build)
    assert len(pods) == 4  # three services and the topics Job
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], name  # Python writes there


def test_each_service_admits_only_its_own_callers(each_build: list[dict[str, Any]]) -> None:
    policies = {
        m["metadata"]["name"]: m["spec"] for m in each_build if m["kind"] == "NetworkPolicy"
    }
    default = policies.pop("plateletwatch-default-deny")
    assert default["podSelector"] == {}
    assert set(default["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in default
    assert "egress" not in default

    def admitted(service: str) -> list[dict[str, Any]]:
        spec = policies[f"plateletwatch-{service}"]
        assert spec["podSelector"] == {
            "matchLabels": {"app.kubernetes.io/name": f"plateletwatch-{service}"}
        }
        return list(spec["ingress"])

    ingest = admitted("ingest")
    assert {p["port"] for rule in ingest for p in rule["ports"]} == {"http", "mllp"}
    feeds = [rule for rule in ingest if {p["port"] for p in rule["ports"]} >= {"mllp"}]
    assert feeds
    assert all("from" not in rule for rule in feeds)  # the labs are wherever they are

    (scrape,) = admitted("classifier")
    assert scrape["ports"] == [{"port": "http", "protocol": "TCP"}]
    (prometheus,) = scrape["from"]
    assert prometheus["namespaceSelector"]["matchLabels"]
    assert prometheus["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus"

    notifier = admitted("notifier")
    sources = [peer for rule in notifier for peer in rule["from"]]
    assert all(peer.get("podSelector", {}).get("matchLabels") for peer in sources)
    assert all(peer.get("namespaceSelector", {}).get("matchLabels") for peer in sources)
    assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in sources} == {
        "prometheus",
        "console-proxy",
    }

    egress = policies.pop("plateletwatch-egress")
    assert egress["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "plateletwatch"}}
    ports = {(p.get("protocol"), p["port"]) for rule in egress["egress"] for p in rule["ports"]}
    assert {("TCP", 9092), ("UDP", 53), ("TCP", 53)} <= ports


def test_the_notifier_cannot_start_without_its_shared_secrets(
    each_build: list[dict[str, Any]],
) -> None:
    pod = pod_specs(each_build)["plateletwatch-notifier"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name, key in (
        ("PLATELETWATCH_NOTIFIER_LINK_SECRET", "link-secret"),
        ("PLATELETWATCH_NOTIFIER_SESSION_SECRET", "session-secret"),
        ("PLATELETWATCH_NOTIFIER_DATABASE_URL", "database-url"),
    ):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "plateletwatch-notifier", "key": key}  # never optional


def test_the_topics_job_can_be_applied_again(each_build: list[dict[str, Any]]) -> None:
    (job,) = [m for m in each_build if m["kind"] == "Job"]
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 3600


RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)


def test_every_object_and_pod_carries_the_recommended_labels(
    each_build: list[dict[str, Any]],
) -> None:
    for manifest in each_build:
        labels = manifest["metadata"].get("labels", {})
        missing = [key for key in RECOMMENDED if key not in labels]
        assert missing == [], (manifest["kind"], manifest["metadata"]["name"])
    for name, manifest in (
        (m["metadata"]["name"], m) for m in each_build if "template" in m.get("spec", {})
    ):
        labels = manifest["spec"]["template"]["metadata"]["labels"]
        assert [key for key in RECOMMENDED if key not in labels] == [], name
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            assert container["image"].endswith(":" + labels["app.kubernetes.io/version"]), name


def test_the_dashboard_chooses_its_prometheus_and_instances_and_says_its_units() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "plateletwatch.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert instance["includeAll"] is True
    assert instance["allValue"] == ".*"
    for panel in dashboard["panels"]:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            selectors = re.findall(r"\b(?:plateletwatch_\w+|up)\b(\{[^}]*\})?", target["expr"])
            assert selectors, title
            assert all('instance=~"$instance"' in s for s in selectors), (title, target["expr"])
