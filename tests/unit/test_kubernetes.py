"""deploy/kubernetes/: every manifest passes `kubernetes-validate --strict` for each Kubernetes
version supported, kustomize lists them all, and what one file says of another holds (the
ConfigMap is deploy/pod.py's derivation of envoy.yaml, ports, probes, limits, the stop's
timing, the image's version)."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import ROOT
from deploy.envoy_config import LIVE_PATH, READY_PATH
from deploy.pod import CONFIGMAP, CONFIGMAP_NAME, ENVOY_HEAP_BYTES, configmap, envoy_in_pod
from server.config import Config

MANIFESTS = ROOT / "deploy" / "kubernetes"
# Upstream supports the newest three minor versions; managed offerings keep older ones
# for a year or more. kubernetes-validate ships the schemas of each.
KUBERNETES_VERSIONS = ["1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")


def _files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(name: str) -> Any:
    return yaml.safe_load((MANIFESTS / name).read_text())


def _pod() -> Any:
    return _load("deployment.yaml")["spec"]["template"]["spec"]


def _container(name: str) -> Any:
    return next(c for c in _pod()["containers"] if c["name"] == name)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    done = subprocess.run([VALIDATE, "--strict", "--kubernetes-version", version,
                           *map(str, _files())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(_files()), done.stdout


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    service = _load("service.yaml")
    service["spec"]["targetPorts"] = [8080]  # a typo for a field that exists
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(service))
    done = subprocess.run([VALIDATE, "--strict", "--kubernetes-version",
                           KUBERNETES_VERSIONS[-1], str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "targetPorts" in done.stdout + done.stderr


def test_kustomize_lists_every_manifest() -> None:
    listed = _load("kustomization.yaml")["resources"]
    assert sorted(listed) == [p.name for p in _files()]


def test_the_configmap_is_envoy_yaml_derived_for_the_pod() -> None:
    """`make manifests` after a change to envoy.yaml or deploy/pod.py."""
    committed = yaml.safe_load(CONFIGMAP.read_text())
    assert committed["metadata"]["name"] == CONFIGMAP_NAME
    assert yaml.safe_load(committed["data"]["envoy.yaml"]) == envoy_in_pod(), (
        "deploy/kubernetes/envoy-configmap.yaml is stale: run `make manifests`")
    assert CONFIGMAP.read_text() == configmap()


def test_envoy_in_the_pod_serves_the_pods_address_and_reaches_the_server_on_loopback() -> None:
    config = envoy_in_pod()
    [listener] = config["static_resources"]["listeners"]
    address = listener["address"]["socket_address"]
    [cluster] = config["static_resources"]["clusters"]
    [group] = cluster["load_assignment"]["endpoints"]
    [endpoint] = group["lb_endpoints"]
    upstream = endpoint["endpoint"]["address"]["socket_address"]
    assert address["address"] == "0.0.0.0"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    envs = {e["name"]: e.get("value") for e in _container("server")["env"]}
    assert envs["SARAH_LISTEN"] == f"{upstream['address']}:{upstream['port_value']}"
    assert upstream["address"] == "127.0.0.1"
    ports = _container("envoy")["ports"]
    assert [p["containerPort"] for p in ports] == [address["port_value"]]
    policy = _load("networkpolicy.yaml")["spec"]["ingress"]
    assert [port["port"] for rule in policy for port in rule["ports"]] == [address["port_value"]]
    assert _load("service.yaml")["spec"]["ports"][0]["targetPort"] == ports[0]["name"]


def test_envoys_probes_ask_the_paths_it_answers() -> None:
    envoy = _container("envoy")
    assert envoy["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert envoy["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    mount = next(m for m in envoy["volumeMounts"] if m["name"] == "envoy-config")
    assert envoy["command"][:3] == ["envoy", "-c", f"{mount['mountPath']}/envoy.yaml"]


def _mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity.removesuffix("Mi"))


def test_envoys_heap_ceiling_is_under_its_memory_limit() -> None:
    limit = _mebibytes(_container("envoy")["resources"]["limits"]["memory"])
    assert limit * 2**20 > ENVOY_HEAP_BYTES


def test_a_stop_fits_the_grace_period() -> None:
    """Envoy drains while the server keeps serving, the server then finishes its calls,
    and all of it ends before the kubelet's SIGKILL."""
    envoy_drain = float(_container("envoy")["lifecycle"]["preStop"]["exec"]["command"][-1])
    server_wait = float(_container("server")["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain_time = float(_container("envoy")["command"][
        _container("envoy")["command"].index("--drain-time-s") + 1])
    assert envoy_drain == drain_time < server_wait
    assert server_wait + Config().grace_seconds < _pod()["terminationGracePeriodSeconds"]


def test_migrations_run_in_the_init_container_only() -> None:
    [init] = _pod()["initContainers"]
    assert init["command"] == ["sarah-server", "migrate"]
    envs = {e["name"]: e.get("value") for e in _container("server")["env"]}
    assert envs["SARAH_MIGRATE"] == "false"


def test_every_container_runs_this_versions_image() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    pod = _pod()
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert images == {f"sarah-service:{version}"}


def test_secrets_come_from_the_secret_and_nothing_else_is_secret() -> None:
    refs = {e["valueFrom"]["secretKeyRef"]["key"]
            for c in _pod()["initContainers"] + _pod()["containers"]
            for e in c.get("env", []) if "valueFrom" in e}
    assert refs == {"database-url"}
    [keys] = [v for v in _pod()["volumes"] if "secret" in v]
    assert keys["secret"]["items"] == [{"key": "api-keys.txt", "path": "api-keys.txt"}]
