"""The Kubernetes manifests of k8s/, checked offline: no cluster, no network.

Each overlay is rendered with ``kubectl kustomize``; every object is validated
strictly (unknown fields are errors) against the Kubernetes schemas shipped by
kubernetes-validate, or, for the custom resources, against the CRD schemas
vendored in k8s/schemas/ (whose pod templates refer to the same Kubernetes
schemas). On top: the containers' flags parse as the real ``edgesplit``
commands, the config they load is valid with their environment, Services,
probes and ServiceMonitors point at ports that exist, and the Grafana
dashboard only queries metrics the code defines.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("local", "gpu", "scale")
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.cloud"
#: The images the manifests run edgesplit in, by repository name, and their Dockerfiles.
IMAGE_DOCKERFILES = {
    "edgesplit-cloud": DOCKERFILE,
    "edgesplit-edge": ROOT / "deploy" / "jetson" / "Dockerfile",
}
DASHBOARD = K8S / "base" / "grafana" / "edgesplit-dashboard.json"
DOCS = ROOT / "docs" / "kubernetes.md"

#: The Kubernetes API version the built-in kinds are validated against.
KUBERNETES_VERSION = "1.31.0"
#: Custom resources: (apiVersion, kind) -> vendored CRD schema (see k8s/schemas/README.md).
CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster-ray.io-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}
#: Secrets the manifests use but do not contain (docs/kubernetes.md says how to create them).
EXTERNAL_SECRETS = {"edgesplit-cloud-curve", "edgesplit-edge-curve"}
#: Metrics the dashboard shows that the code does not define yet; empty when all exist.
PENDING_METRICS: set[str] = set()
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "Pod"}


# --- rendering ----------------------------------------------------------------------------


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found on PATH: tests/k8s renders the overlays with `kubectl kustomize` "
            "(offline, no cluster needed). Install kubectl >= 1.27, e.g. "
            "`apt-get install kubectl` from the Kubernetes apt repository, or download "
            "https://dl.k8s.io/release/v1.32.0/bin/linux/amd64/kubectl into /usr/local/bin "
            "(https://kubernetes.io/docs/tasks/tools/)."
        )
    return path


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize k8s/overlays/{overlay} failed:\n{done.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_render(overlay)))


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, PodTemplateSpec) of a workload or a RayCluster."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "Pod":
        yield f"Pod {name}", {"metadata": obj["metadata"], "spec": obj["spec"]}
    elif kind in WORKLOADS:
        yield f"{kind} {name}", obj["spec"]["template"]
    elif kind == "RayCluster":
        spec = obj["spec"]
        yield f"RayCluster {name} head", spec["headGroupSpec"]["template"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"RayCluster {name} group {group['groupName']}", group["template"]


def _containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict]]:
    """(where, pod template, container) for every container of every workload."""
    for obj in objects:
        for where, template in _pod_templates(obj):
            for container in template["spec"].get("containers", []):
                yield f"{where} container {container['name']}", template, container


# --- validation ---------------------------------------------------------------------------


class ManifestValidator:
    """Strict offline validation: Kubernetes' schemas for built-in kinds, CRDs' for the rest."""

    def __init__(self, kubernetes_version: str = KUBERNETES_VERSION) -> None:
        package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
        self.version = kubernetes_version
        self.strict_dir = package / f"v{kubernetes_version}-local-strict"
        assert self.strict_dir.is_dir(), f"kubernetes-validate lacks {self.strict_dir.name}"
        definitions = json.loads((self.strict_dir / "_definitions.json").read_text())
        self.registry: Registry = Resource.from_contents(definitions) @ Registry()
        self.crds = {
            key: json.loads((K8S / "schemas" / name).read_text())
            for key, name in CRD_SCHEMAS.items()
        }

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """What is wrong with ``obj``; empty when it is valid."""
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in self.crds:
            validator = jsonschema.Draft202012Validator(self.crds[key], registry=self.registry)
            return [_describe(e) for e in validator.iter_errors(obj)]
        try:
            kubernetes_validate.validate(obj, self.version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # a jsonschema.ValidationError
            return [_describe(exc)]
        except kubernetes_validate.SchemaNotFoundError:
            return [f"no schema for {key[0]} {key[1]}: neither built in nor a vendored CRD"]
        return []

    def pod_template_errors(self, template: dict[str, Any]) -> list[str]:
        schema = json.loads((self.strict_dir / "podtemplatespec-v1.json").read_text())
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        return [_describe(e) for e in validator.iter_errors(template)]


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message[:300]}"


@pytest.fixture(scope="module")
def validator() -> ManifestValidator:
    return ManifestValidator()


def test_each_overlay_renders(objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in objects}
    assert {"RayCluster", "Deployment", "DaemonSet", "Service", "ConfigMap"} <= kinds
    assert "ServiceMonitor" in kinds
    for obj in objects:
        assert obj["metadata"].get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "edgesplit", obj["metadata"]


def test_every_object_validates_strictly(
    objects: list[dict[str, Any]], validator: ManifestValidator
) -> None:
    problems = {
        f"{o['kind']} {o['metadata']['name']}": errs
        for o in objects
        if (errs := validator.errors(o))
    }
    assert not problems, json.dumps(problems, indent=2)


def test_tools_manifests_validate(validator: ManifestValidator) -> None:
    for path in sorted((K8S / "tools").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            assert validator.errors(obj) == [], path


def test_raycluster_pod_templates_are_pod_template_specs(
    objects: list[dict[str, Any]], validator: ManifestValidator
) -> None:
    ray = _named(objects, "RayCluster", "edgesplit-ray")
    templates = list(_pod_templates(ray))
    assert len(templates) == 2
    for where, template in templates:
        assert validator.pod_template_errors(template) == [], where


#: Kubernetes' resource.Quantity syntax (the CRDs' pattern; Kubernetes' own JSON schema
#: types quantities as plain strings).
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
    r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def test_resource_quantities_parse(objects: list[dict[str, Any]]) -> None:
    for where, _, container in _containers(objects):
        for kind, amounts in container.get("resources", {}).items():
            for resource, amount in amounts.items():
                assert QUANTITY.match(str(amount)), f"{where} {kind}.{resource}: {amount!r}"
    assert not QUANTITY.match("lots")


def test_vendored_schemas_are_json_schemas() -> None:
    for name in CRD_SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(
            json.loads((K8S / "schemas" / name).read_text())
        )


# --- the validator can fail ---------------------------------------------------------------


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _worker(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["workerGroupSpecs"][0]


BREAKAGES: dict[str, tuple[str, str, Callable[[dict[str, Any]], None]]] = {
    "deployment unknown container field": (
        "Deployment",
        "edgesplit-cloud",
        lambda o: _container(o).update(imagePullPolicyy="Always"),
    ),
    "service port as a word": (
        "Service",
        "edgesplit-cloud",
        lambda o: o["spec"]["ports"][0].update(port="five"),
    ),
    "daemonset hostPath without path": (
        "DaemonSet",
        "edgesplit-edge",
        lambda o: o["spec"]["template"]["spec"]["volumes"][2]["hostPath"].pop("path"),
    ),
    "raycluster replicas as a string": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: _worker(o).update(replicas="two"),
    ),
    "raycluster unknown worker group field": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: _worker(o).update(minReplica=1),
    ),
    "raycluster worker group without groupName": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: _worker(o).pop("groupName"),
    ),
    "raycluster head without rayStartParams": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: o["spec"]["headGroupSpec"].pop("rayStartParams"),
    ),
    "raycluster unknown field inside a pod template": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: _worker(o)["template"]["spec"]["containers"][0].update(gpus=1),
    ),
    "raycluster volume mount without mountPath in a pod template": (
        "RayCluster",
        "edgesplit-ray",
        lambda o: _worker(o)["template"]["spec"]["containers"][0]["volumeMounts"][0].pop(
            "mountPath"
        ),
    ),
    "servicemonitor without endpoints": (
        "ServiceMonitor",
        "edgesplit-cloud",
        lambda o: o["spec"].pop("endpoints"),
    ),
    "servicemonitor bad interval": (
        "ServiceMonitor",
        "edgesplit-cloud",
        lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds"),
    ),
    "unknown kind": (
        "ConfigMap",
        "edgesplit-grafana-dashboard",
        lambda o: o.update(apiVersion="example.com/v1", kind="Gadget"),
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_manifest_is_rejected(breakage: str, validator: ManifestValidator) -> None:
    kind, name, breaks = BREAKAGES[breakage]
    obj = copy.deepcopy(_named(list(_render("local")), kind, name))
    assert validator.errors(obj) == []
    breaks(obj)
    assert validator.errors(obj), f"{breakage}: accepted"


# --- the containers run real commands -----------------------------------------------------


def _entrypoint(dockerfile: Path) -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile.read_text(), re.MULTILINE)
    assert match, f"{dockerfile}: no exec-form ENTRYPOINT"
    return list(json.loads(match.group(1)))


def _edgesplit_argv(container: dict[str, Any]) -> list[str] | None:
    """The full command line of a container running edgesplit; None for other images."""
    repository = container["image"].rsplit("/", 1)[-1].split(":")[0]
    if repository not in IMAGE_DOCKERFILES:
        assert "edgesplit" not in repository, f"{container['image']}: which Dockerfile?"
        return None
    command = container.get("command") or _entrypoint(IMAGE_DOCKERFILES[repository])
    argv = list(command) + list(container.get("args", []))
    return [Path(argv[0]).name, *argv[1:]]


def _parse(argv: list[str]) -> Any:
    """The click context of ``edgesplit CMD ARGS...``: fails on an unknown flag or bad value."""
    import typer
    import typer.main

    from edgesplit.app.cli import app

    assert argv[0] == "edgesplit", argv
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    name, args = argv[1], argv[2:]
    assert name in commands, f"no command `edgesplit {name}`"
    try:
        return commands[name].make_context(name, list(args))
    except typer.TyperException as exc:  # typer's click's UsageError and BadParameter
        pytest.fail(f"`{' '.join(argv)}`: {exc}")


def _edgesplit_containers(
    objects: list[dict[str, Any]],
) -> Iterator[tuple[str, dict, dict, list[str]]]:
    """Containers that run an edgesplit command (the Ray pods run KubeRay's `ray start`)."""
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for where, template, container in _containers(workloads):
        if (argv := _edgesplit_argv(container)) is not None:
            yield where, template, container, argv


def test_container_commands_use_real_flags(objects: list[dict[str, Any]]) -> None:
    seen = set()
    for where, _, container, argv in _edgesplit_containers(objects):
        ctx = _parse(argv)
        seen.add(argv[1])
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for name, value in ctx.params.items():
            if isinstance(value, Path) and value.is_absolute():
                assert any(value.is_relative_to(m) for m in mounts), (
                    f"{where}: --{name.replace('_', '-')} {value} is on no volume"
                )
    assert seen == {"cloud", "edge"}


def test_flag_parser_rejects_a_typo() -> None:
    with pytest.raises(pytest.fail.Exception, match="--bundel"):
        _parse(["edgesplit", "cloud", "--bundel", "/bundle"])


def _config_text(objects: list[dict[str, Any]], template: dict, config_flag: Path) -> str:
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    container = template["spec"]["containers"][0]
    for mount in container.get("volumeMounts", []):
        if config_flag.is_relative_to(mount["mountPath"]):
            name = volumes[mount["name"]]["configMap"]["name"]
            data = _named(objects, "ConfigMap", name)["data"]
            return str(data[str(config_flag.relative_to(mount["mountPath"]))])
    raise AssertionError(f"--config {config_flag} is not on a ConfigMap")


def test_config_is_valid_with_each_containers_environment(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    from edgesplit.config_load import load_config

    backends = set()
    for where, template, container, argv in _edgesplit_containers(objects):
        ctx = _parse(argv)
        path = tmp_path / "edgesplit.toml"
        path.write_text(_config_text(objects, template, ctx.params["config"]))
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        cfg = load_config(path, env=env)
        assert cfg.metrics.address == "0.0.0.0", f"{where}: Prometheus could not scrape it"
        if argv[1] == "cloud":
            backends.add(cfg.cloud.backend)
    assert len(backends) == 1, backends


def test_ingress_joins_the_rayclusters_client_port(objects: list[dict[str, Any]]) -> None:
    ray = _named(objects, "RayCluster", "edgesplit-ray")
    head = ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    client_port = {p["name"]: p["containerPort"] for p in head["ports"]}["client"]
    deployment = _named(objects, "Deployment", "edgesplit-cloud")
    ctx = _parse(_edgesplit_argv(_container(deployment)) or [])
    # KubeRay names the head's Service <cluster>-head-svc.
    assert ctx.params["ray"] == f"ray://{ray['metadata']['name']}-head-svc:{client_port}"


def test_rayversion_matches_the_image() -> None:
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"{DOCKERFILE}: no ARG RAY_VERSION"
    for overlay in OVERLAYS:
        ray = _named(list(_render(overlay)), "RayCluster", "edgesplit-ray")
        assert ray["spec"]["rayVersion"] == match.group(1), overlay


# --- wiring: selectors, ports, references -------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container_ports(template: dict[str, Any]) -> set[int | str]:
    ports: set[int | str] = set()
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            ports.add(port["containerPort"])
            if "name" in port:
                ports.add(port["name"])
    return ports


def test_services_select_pods_with_their_target_ports(objects: list[dict[str, Any]]) -> None:
    templates = [t for o in objects for _, t in _pod_templates(o)]
    for svc in (o for o in objects if o["kind"] == "Service"):
        name, selector = svc["metadata"]["name"], svc["spec"].get("selector")
        assert selector, f"Service {name} selects nothing"
        pods = [t for t in templates if _matches(selector, t["metadata"].get("labels", {}))]
        assert pods, f"Service {name}: no pod template has labels {selector}"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                assert target in _container_ports(pod), f"Service {name}: no port {target}"


def test_workload_selectors_match_their_templates(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] in {"Deployment", "DaemonSet", "StatefulSet"}:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert _matches(obj["spec"]["selector"]["matchLabels"], labels), obj["metadata"]


def test_probes_use_container_ports(objects: list[dict[str, Any]]) -> None:
    for where, _, container in _containers(objects):
        ports = {p["containerPort"] for p in container.get("ports", [])}
        ports |= {p["name"] for p in container.get("ports", []) if "name" in p}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = container.get(probe, {})
            for handler in ("tcpSocket", "httpGet", "grpc"):
                if handler in spec:
                    assert spec[handler]["port"] in ports, f"{where} {probe}"


def test_servicemonitors_scrape_existing_service_ports(objects: list[dict[str, Any]]) -> None:
    services = [o for o in objects if o["kind"] == "Service"]
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        name, selector = monitor["metadata"]["name"], monitor["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services if _matches(selector, s["metadata"].get("labels", {}))]
        assert chosen, f"ServiceMonitor {name} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            for svc in chosen:
                names = {p.get("name") for p in svc["spec"]["ports"]}
                assert endpoint["port"] in names, f"ServiceMonitor {name}: {svc['metadata']}"


def test_volumes_refer_to_objects_that_exist(objects: list[dict[str, Any]]) -> None:
    have = {(o["kind"], o["metadata"]["name"]) for o in objects}
    secrets = set()
    for obj in objects:
        for where, template in _pod_templates(obj):
            for volume in template["spec"].get("volumes", []):
                if "configMap" in volume:
                    assert ("ConfigMap", volume["configMap"]["name"]) in have, where
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in have, where
                if "secret" in volume:
                    secrets.add(volume["secret"]["secretName"])
    assert secrets == EXTERNAL_SECRETS
    docs = DOCS.read_text()
    for secret in EXTERNAL_SECRETS:
        assert f"kubectl -n edgesplit create secret generic {secret}" in docs, secret


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and In/NotIn/Exists expressions) against labels."""
    if not _matches(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_ray_pods_admit_the_ingress_only(objects: list[dict[str, Any]]) -> None:
    policy = _named(objects, "NetworkPolicy", "edgesplit-ray")["spec"]
    ray = _named(objects, "RayCluster", "edgesplit-ray")
    for where, template in _pod_templates(ray):
        labels = template["metadata"]["labels"]
        assert _selects(policy["podSelector"], labels), where
        assert any(
            _selects(peer["podSelector"], labels)
            for rule in policy["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
        ), f"{where}: Ray pods must reach each other"
    ingress = _named(objects, "Deployment", "edgesplit-cloud")["spec"]["template"]
    peers = [p for rule in policy["ingress"] for p in rule["from"] if "podSelector" in p]
    assert any(_selects(p["podSelector"], ingress["metadata"]["labels"]) for p in peers)
    triton = [o for o in objects if o["metadata"]["name"] == "edgesplit-triton"]
    for obj in triton:
        if obj["kind"] == "Deployment":
            assert not _selects(
                policy["podSelector"], obj["spec"]["template"]["metadata"]["labels"]
            )


def test_ray_auth_mode_is_the_same_everywhere(objects: list[dict[str, Any]]) -> None:
    modes = {}
    ray = [o for o in objects if o["kind"] == "RayCluster"]
    ingress = [_named(objects, "Deployment", "edgesplit-cloud")]
    for where, _, container in _containers(ray + ingress):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        modes[where] = env.get("RAY_AUTH_MODE")
    assert set(modes.values()) == {"disabled"}, modes


# --- what each overlay is for -------------------------------------------------------------


def _gpu_limit(container: dict[str, Any]) -> str | None:
    limits = container.get("resources", {}).get("limits", {})
    return limits.get("nvidia.com/gpu")


def test_gpu_overlay_asks_for_gpus_and_uses_triton() -> None:
    objects = list(_render("gpu"))
    ray = _named(objects, "RayCluster", "edgesplit-ray")
    for group in ray["spec"]["workerGroupSpecs"]:
        assert _gpu_limit(group["template"]["spec"]["containers"][0]) == "1"
        assert group["maxReplicas"] > group["minReplicas"]
    assert ray["spec"]["enableInTreeAutoscaling"] is True
    triton = _named(objects, "Deployment", "edgesplit-triton")
    assert _gpu_limit(_container(triton)) == "1"
    assert triton["spec"]["replicas"] > 1
    env = {
        e["name"]: e["value"]
        for e in _container(_named(objects, "Deployment", "edgesplit-cloud"))["env"]
    }
    assert env["EDGESPLIT_CLOUD_BACKEND"] == "triton"
    host, port = env["EDGESPLIT_CLOUD_TRITON_URL"].split(":")
    triton_svc = _named(objects, "Service", host)
    assert int(port) in {p["port"] for p in triton_svc["spec"]["ports"] if p["name"] == "grpc"}
    assert _named(objects, "Service", "edgesplit-cloud")["spec"]["type"] == "LoadBalancer"


def test_local_overlay_needs_no_gpu() -> None:
    objects = list(_render("local"))
    assert "nvidia.com/gpu" not in json.dumps([o for o in objects if o["kind"] != "DaemonSet"]), (
        "the local overlay must schedule on a machine without GPUs"
    )
    assert not [o for o in objects if "triton" in o["metadata"]["name"]]
    ray = _named(objects, "RayCluster", "edgesplit-ray")
    (group,) = ray["spec"]["workerGroupSpecs"]
    assert group["replicas"] == group["maxReplicas"] == 1
    svc = _named(objects, "Service", "edgesplit-cloud")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0]["nodePort"] == 30555
    pvc = _named(objects, "PersistentVolumeClaim", "edgesplit-bundle")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_scale_overlay_runs_several_ingresses_behind_one_service(tmp_path: Path) -> None:
    from edgesplit.config_load import load_config

    objects = list(_render("scale"))
    ingress = _named(objects, "Deployment", "edgesplit-cloud")
    replicas = ingress["spec"]["replicas"]
    assert replicas >= 2
    labels = ingress["spec"]["template"]["metadata"]["labels"]
    # Every Service that selects the ingress pods: one for the edges (the ZeroMQ port),
    # the rest for Prometheus only.
    services = [
        o for o in objects if o["kind"] == "Service" and _matches(o["spec"]["selector"], labels)
    ]
    zmq = [s for s in services if any(p.get("targetPort") == "zmq" for p in s["spec"]["ports"])]
    assert [s["metadata"]["name"] for s in zmq] == ["edgesplit-cloud"]
    assert zmq[0]["spec"]["sessionAffinity"] == "None"  # per connection: one pod an edge
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    for svc in services:
        if svc is zmq[0]:
            continue
        assert any(
            _matches(m["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
            for m in monitors
        ), f"Service {svc['metadata']['name']}: no ServiceMonitor scrapes its pods"
    # Voluntary disruptions leave some ingresses up.
    (pdb,) = [
        o
        for o in objects
        if o["kind"] == "PodDisruptionBudget" and _selects(o["spec"]["selector"], labels)
    ]
    if "maxUnavailable" in pdb["spec"]:
        assert 1 <= pdb["spec"]["maxUnavailable"] < replicas
    else:
        assert 1 <= pdb["spec"]["minAvailable"] < replicas
    # Spread over the nodes.
    spread = ingress["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert any(
        c["topologyKey"] == "kubernetes.io/hostname"
        and c["whenUnsatisfiable"] == "DoNotSchedule"
        and _selects(c["labelSelector"], labels)
        for c in spread
    )
    # One Ray Serve app for all: the same --ray address and the same [ray] app name.
    joins = set()
    for where, template, container, argv in _edgesplit_containers(objects):
        if argv[1] != "cloud":
            continue
        assert _matches(
            ingress["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]
        ), f"{where}: an `edgesplit cloud` outside the ingress Deployment"
        ctx = _parse(argv)
        path = tmp_path / "edgesplit.toml"
        path.write_text(_config_text(objects, template, ctx.params["config"]))
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        joins.add((ctx.params["ray"], load_config(path, env=env).ray.app))
    assert len(joins) == 1, joins
    # The autoscaler sizes that Deployment, from its replica count up, on CPU.
    hpa = _named(objects, "HorizontalPodAutoscaler", "edgesplit-cloud")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "edgesplit-cloud",
    }
    assert hpa["minReplicas"] == replicas < hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]


def test_edge_daemonset_runs_on_jetsons_with_read_only_sysfs(
    objects: list[dict[str, Any]],
) -> None:
    ds = _named(objects, "DaemonSet", "edgesplit-edge")
    spec = ds["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["edgesplit.io/device"] == "jetson"
    assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert {t["key"] for t in spec["tolerations"]} >= {"edgesplit.io/edge", "nvidia.com/gpu"}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    sysfs = {name: path for name, path in host_paths.items() if path.startswith("/sys/")}
    assert set(sysfs.values()) == {"/sys/bus/i2c/devices", "/sys/class/power_supply"}
    for name, path in sysfs.items():
        assert mounts[name]["readOnly"] is True, path
        assert mounts[name]["mountPath"] == path
    ctx = _parse(_edgesplit_argv(spec["containers"][0]) or [])
    assert ctx.params["power"] == "jetson"
    assert ctx.params["connect"] == "tcp://edgesplit-cloud:5555"


# --- the Grafana dashboard ----------------------------------------------------------------


def _defined_series() -> set[str]:
    """Every series name the edge and cloud registries can expose."""
    from cloud_node.metrics import CloudMetrics
    from edge_node.metrics import EdgeMetrics

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
    }
    names = set()
    for registry in (EdgeMetrics().registry, CloudMetrics().registry):
        for family in registry.collect():
            names |= {family.name + s for s in suffixes[family.type]}
            names |= {sample.name for sample in family.samples}
    return names


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for panel in dashboard["panels"]:
        queries += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def test_dashboard_metrics_exist_in_the_code() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {m for q in _dashboard_queries(dashboard) for m in re.findall(r"\bedgesplit_\w+", q)}
    defined = _defined_series()
    unknown = used - defined - PENDING_METRICS
    assert not unknown, f"the dashboard queries metrics the code does not define: {unknown}"
    assert PENDING_METRICS <= used, "a pending metric is no longer on the dashboard"
    for fleet_metric in (
        "edgesplit_edge_bundle_info",
        "edgesplit_edge_updates_total",
        "edgesplit_cloud_fleet_edges",
        "edgesplit_cloud_rollout_fraction",
    ):
        assert fleet_metric in used, fleet_metric
    assert len(used & defined) >= 20


def test_dashboard_panels_cover_the_fleet() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = "\n".join(_dashboard_queries(dashboard))
    for needed in (
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "edgesplit_edge_fallbacks_total",
        "edgesplit_edge_bandwidth_bps",
        "edgesplit_edge_battery_level",
        "edgesplit_edge_power_watts",
        "edgesplit_cloud_queue_depth",
        "edgesplit_cloud_replicas",
        "edgesplit_edge_sent_bytes_total",
    ):
        assert needed in queries, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_ships_as_a_labelled_configmap(objects: list[dict[str, Any]]) -> None:
    cm = _named(objects, "ConfigMap", "edgesplit-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())
