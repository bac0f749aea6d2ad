"""deploy/kubernetes/'s Pod, for real: `podman kube play` of the Deployment and its Envoy
ConfigMap, with the image just built, and the README's grpcurl and curl lines and
docs/kapso.md's curl lines through its Envoy.

The Deployment is played as shipped except for what one Pod on one machine needs instead of
a cluster: one replica, SQLite in an emptyDir (the shipped Pods use PostgreSQL from the
Secret), no API keys (the documented lines send none), a host port for Envoy's port, and
the restart policy podman 4.3 needs (below).
"""

import time
from pathlib import Path
from typing import Any

import yaml

from deploy import ROOT
from harness.http_calls import request
from harness.ports import free_port
from harness.waiting import wait_until
from tests.deploy.conftest import MEASURED, readme_grpcurl_lines
from tests.support.docs import curl_example, docs_blocks, shell_lines
from tests.support.podman import Podman

_MANIFESTS = ROOT / "deploy" / "kubernetes"
_SQLITE = "sqlite:////data/sarah.db"
_NOT_HERE = ("SARAH_DATABASE_URL", "SARAH_API_KEYS_FILE")


def _rendered(podman: Podman, image: str, port: int) -> str:
    configmap = yaml.safe_load((_MANIFESTS / "envoy-configmap.yaml").read_text())
    deployment = yaml.safe_load((_MANIFESTS / "deployment.yaml").read_text())
    configmap["metadata"]["name"] = podman.name("envoy-config")
    deployment["metadata"]["name"] = podman.name("kube")
    deployment["spec"]["replicas"] = 1
    pod: Any = deployment["spec"]["template"]["spec"]
    # podman runs an init container once and then removes it (podman-kube-play(1)), but
    # 4.3 also applies the Pod's restart policy to it: under Always (a Deployment's only
    # one) the finished migrate is started again at once, and kube play fails removing it
    # ("cannot remove container ... as it is running").
    pod["restartPolicy"] = "OnFailure"
    for container in pod["initContainers"] + pod["containers"]:
        container["image"] = image
        if container["name"] in ("migrate", "server"):
            container["env"] = [e for e in container["env"] if e["name"] not in _NOT_HERE]
            container["env"].append({"name": "SARAH_DATABASE_URL", "value": _SQLITE})
            container["volumeMounts"] = [
                *(m for m in container.get("volumeMounts", []) if m["name"] != "api-keys"),
                {"name": "data", "mountPath": "/data"}]
        if container["name"] == "envoy":
            container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "api-keys"]
    pod["volumes"].append({"name": "data", "emptyDir": {}})
    for volume in pod["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = configmap["metadata"]["name"]
    return yaml.safe_dump_all([configmap, deployment], sort_keys=False)


def _curl_lines(port: int) -> int:
    """The README tour's curl lines, then docs/kapso.md's, against Envoy's port."""
    _grpcurl, readme, _cli = docs_blocks("README.md", "A five-minute tour", "sh")
    kapso = docs_blocks("docs/kapso.md", "Calling from Kapso (HTTP/JSON through Envoy)", "sh")
    lines = [line for block in [readme, *kapso] for line in shell_lines(block)]
    assert all(line.startswith("curl ") for line in lines), lines
    for line in lines:
        curl_example(line, port)
    return len(lines)


def test_the_deployments_pod_serves_the_documented_calls(podman: Podman, image: str,
                                                         tmp_path: Path) -> None:
    port = free_port()
    played = tmp_path / "kube.yaml"
    played.write_text(_rendered(podman, image, port))
    started = time.monotonic()
    podman("kube", "play", str(played), timeout=300)
    pod = podman("pod", "ps", "-q", "--filter", f"name={podman.name('kube')}").stdout.split()
    assert len(pod) == 1, pod
    try:
        try:
            wait_until(lambda: request("127.0.0.1", port, "GET", "/healthz/ready")[0] == 200,
                       90, "the Pod's Envoy to report ready", interval=0.2,
                       ignoring=(OSError,))
        except TimeoutError:
            logs = podman("pod", "logs", pod[0], check=False, timeout=60)
            raise AssertionError(logs.stdout + logs.stderr) from None
        MEASURED["kube play to ready Pod"] = f"{time.monotonic() - started:.1f} s"
        assert request("127.0.0.1", port, "GET", "/healthz/live")[0] == 200
        # The dashboard page, which the image carries for Envoy's `/` route.
        status, headers, page = request("127.0.0.1", port, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html"), headers
        assert "<title>" in str(page)
        # Through Envoy's port: it serves native gRPC, reflection included, beside
        # HTTP/JSON; the server itself is on the Pod's loopback.
        readme_grpcurl_lines(tmp_path, port)
        MEASURED["documented curl lines through the Pod"] = str(_curl_lines(port))
        # The init container ran first and is gone (podman removes a finished one): the
        # server, which refuses a schema older than its code (SARAH_MIGRATE=false), serves
        # the emptyDir's SQLite file that migrate made.
        names = podman("ps", "-a", "--filter", f"pod={pod[0]}", "--format",
                       "{{.Names}}").stdout.split()
        assert sorted(n.rpartition("-")[2] for n in names if "infra" not in n) == [
            "envoy", "server"], names
    finally:
        podman.remove_pod(pod[0])
