"""Offline checks of deploy/: the kustomize base and overlays, and the Dockerfile.

Each kustomization is rendered with the venv's ``kubectl kustomize`` and its objects are
validated with ``kubernetes-validate --strict`` against the OpenAPI schemas it bundles for
its default Kubernetes version: no cluster, no network, no Docker (the Dockerfile is
checked statically). Both tools are dev dependencies (pyproject.toml); the manifest tests
skip only when they are missing from the venv.

On top of the schemas, the checks a reviewer would make: hardened containers with gRPC
probes and resources, one image for every role, consistent labels and selectors, the
process flags accepted by the real argument parsers, the add-shards Job in step with the
shard StatefulSets, and each overlay's own promises (dev sizes, prod HPA/PDB/policies,
TLS: mounts, mutual-TLS flags, probes on the plaintext health port, the Job over TLS;
cert-manager resources).
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lauradb.rpc.channels import TLS_ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"

BASE = "base"
DEV = "overlays/dev"
PROD = "overlays/prod"
TLS = "overlays/tls"
CERT_MANAGER = "overlays/cert-manager"
KUSTOMIZATIONS = (BASE, DEV, PROD, TLS, CERT_MANAGER)
OVERLAYS = (DEV, PROD, TLS, CERT_MANAGER)
PROD_LIKE = (PROD, TLS, CERT_MANAGER)  # tls builds on prod, cert-manager on tls
WITH_TLS = (TLS, CERT_MANAGER)

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
SHARD_ID_LABEL = "lauradb.io/shard-id"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# The gRPC port of each long-running role (README's defaults).
GRPC_PORTS = {"router": 27017, "shard": 27018, "config-server": 27019}
RUN_AS_USER = 10001
TLS_SECRET = "lauradb-tls"
TLS_DIR = "/etc/lauradb/tls"
TLS_FILES = {"cert": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key", "ca": f"{TLS_DIR}/ca.crt"}
# The plaintext health-only port (--health-port) of the TLS overlays' servers.
HEALTH_PORT = 9091
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
CERT_MANAGER_API = "cert-manager.io/v1"
ISSUER_TYPES = ("acme", "ca", "selfSigned", "vault", "venafi")

Obj = dict[str, Any]


# --------------------------------------------------------------------------- rendering


def require_tools() -> None:
    missing = [tool.name for tool in (KUBECTL, KUBERNETES_VALIDATE) if not tool.is_file()]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed next to {sys.executable} "
            "(dev dependencies: pip install -e '.[dev]')"
        )


@functools.cache
def _render(name: str) -> list[Obj]:
    import yaml  # PyYAML: a dependency of kubernetes-validate

    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {name} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render(name: str) -> list[Obj]:
    require_tools()
    return _render(name)  # cached: read, never mutate


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"][COMPONENT_LABEL])


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def all_containers(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for workload in workloads(objs):
        for container in containers(workload):
            yield workload, container


def servers(objs: list[Obj]) -> list[Obj]:
    """The long-running LauraDB processes (not the add-shards Job)."""
    return [w for w in workloads(objs) if w["kind"] != "Job"]


def shard_sets(objs: list[Obj]) -> list[Obj]:
    return [s for s in of_kind(objs, "StatefulSet") if component(s) == "shard"]


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in match_labels.items())


def container_env(objs: list[Obj], container: Obj) -> dict[str, str]:
    """The container's environment as Kubernetes resolves it (literal values and
    configMapKeyRef; every referenced ConfigMap and key must exist in the render)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        field = var["valueFrom"].get("fieldRef")
        if field is not None:  # the downward API: a stand-in for the pod's own value
            assert field["fieldPath"] == "metadata.name", field
            env[var["name"]] = "pod-0"
            continue
        ref = var["valueFrom"]["configMapKeyRef"]
        config_map = one(objs, "ConfigMap", ref["name"])
        assert ref["key"] in config_map["data"], f"{ref['name']} has no key {ref['key']}"
        env[var["name"]] = config_map["data"][ref["key"]]
    return env


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command and args."""
    expanded = [
        re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)
        for arg in argv
    ]
    unresolved = [arg for arg in expanded if "$(" in arg]
    assert not unresolved, f"unresolved variables in {unresolved}"
    return expanded


def common_settings(objs: list[Obj]) -> dict[str, str]:
    found = [
        c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("lauradb-common")
    ]
    assert len(found) == 1
    data: dict[str, str] = found[0]["data"]
    return data


@functools.cache
def project() -> Obj:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


_SUFFIXES = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
_SUFFIXES |= {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|Ki|Mi|Gi|Ti|)", str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match[1]) * _SUFFIXES[match[2]]


# ------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_and_passes_strict_schema_validation(name: str, tmp_path: Path) -> None:
    import yaml

    objs = render(name)
    # kubernetes-validate ships only the core Kubernetes schemas: it cannot validate the
    # cert-manager CRD kinds (it would just warn "Couldn't find schema"). They are left out
    # here and their shape is checked by test_cert_manager_resources instead.
    core = [o for o in objs if o["apiVersion"] != CERT_MANAGER_API]
    if name != CERT_MANAGER:
        assert core == objs, "only the cert-manager overlay has custom resources"
    manifest = tmp_path / "core.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    proc = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # A warning means an object was not validated (e.g. no schema for its kind).
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count(" passed for resource ") == len(core), output


# ---------------------------------------------------------------- containers and pods


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_is_hardened_and_sized(name: str) -> None:
    objs = render(name)
    assert workloads(objs)
    for workload, container in all_containers(objs):
        where = f"{name}: {workload['kind']}/{workload['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        for kind in ("cpu", "memory"):
            request = resources.get("requests", {}).get(kind)
            limit = resources.get("limits", {}).get(kind)
            assert request is not None and limit is not None, f"{where}: {kind} request+limit"
            assert quantity(request) <= quantity(limit), f"{where}: {kind} request > limit"
        security = container.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert not security.get("privileged", False), where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_run_as_the_image_user_without_api_access(name: str) -> None:
    objs = render(name)
    service_accounts = {s["metadata"]["name"] for s in of_kind(objs, "ServiceAccount")}
    for workload in workloads(objs):
        spec = pod_spec(workload)
        security = spec["securityContext"]
        where = f"{name}: {workload['metadata']['name']}"
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] == RUN_AS_USER == dockerfile_uid(), where
        assert security["fsGroup"] == RUN_AS_USER, where  # mounted Secrets, PVCs readable
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["serviceAccountName"] in service_accounts, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_servers_have_grpc_readiness_and_liveness_probes_on_their_port(name: str) -> None:
    """Probes ask the gRPC port, or with TLS the plaintext health port (the kubelet's
    gRPC probes cannot present a client certificate)."""
    objs = render(name)
    for workload in servers(objs):
        role = component(workload)
        assert role in GRPC_PORTS, f"unexpected server component {role}"
        probed = HEALTH_PORT if name in WITH_TLS else GRPC_PORTS[role]
        for container in containers(workload):
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["grpc"] == GRPC_PORTS[role], where
            assert ports.get("health") == (HEALTH_PORT if name in WITH_TLS else None), where
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{where}: no {probe}"
                assert container[probe]["grpc"]["port"] == probed, f"{where}: {probe}"
            assert container["livenessProbe"]["grpc"].get("service") == "liveness", where
            assert not container["readinessProbe"]["grpc"].get("service"), where
            if "startupProbe" in container:
                assert container["startupProbe"]["grpc"]["port"] == probed, where


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_one_image_runs_every_role(name: str) -> None:
    objs = render(name)
    images = {c["image"] for _, c in all_containers(objs)}
    assert len(images) == 1, images
    assert {component(w) for w in workloads(objs)} == {*GRPC_PORTS, "add-shards"}
    image = images.pop()
    if name == DEV:
        assert image == "lauradb:dev"
    elif name in PROD_LIKE:
        assert "/" in image and not image.endswith(":latest"), image  # a registry, a pinned tag


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_commands_are_the_project_entrypoints_and_flags_parse(name: str) -> None:
    """Each server's args, after $(VAR) expansion, go through the process's real argument
    parser: a renamed or missing flag fails here, not in a crash-looping pod."""
    objs = render(name)
    scripts: dict[str, str] = project()["scripts"]
    settings = common_settings(objs)
    for workload in servers(objs):
        (container,) = containers(workload)
        command = container["command"]
        assert len(command) == 1 and command[0] in scripts, command
        module = importlib.import_module(scripts[command[0]].split(":")[0])
        argv = expand(container.get("args", []), container_env(objs, container))
        try:
            args = module.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: {command[0]} rejects {shlex.join(argv)}")
        role = component(workload)
        assert args.host == "0.0.0.0" and args.port == GRPC_PORTS[role], argv
        assert args.log_format in ("text", "json")
        if name in WITH_TLS:  # mutual TLS on every port, probes on the health port
            assert (args.tls_cert, args.tls_key, args.tls_ca) == (
                TLS_FILES["cert"], TLS_FILES["key"], TLS_FILES["ca"]
            ), argv
            assert args.tls_client_auth == "require", argv
            assert args.health_port == HEALTH_PORT != args.port, argv
            for probe in PROBES:
                assert container[probe]["grpc"]["port"] == args.health_port, probe
        else:
            assert args.tls_cert is args.tls_key is args.tls_ca is None, argv
            assert args.tls_client_auth == "none" and args.health_port is None, argv
        if role != "config-server":
            assert args.config == settings["LAURADB_CONFIG_ADDRESS"], argv
        if workload["kind"] == "StatefulSet":
            assert args.data_dir == "/data"
            claims = {t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]}
            data_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
            assert [m["name"] for m in data_mounts] == ["data"] and "data" in claims, argv
        if role == "shard":
            assert args.shard_id == pod_labels(workload)[SHARD_ID_LABEL]
            assert workload["metadata"]["name"] == f"lauradb-{args.shard_id}"


# ------------------------------------------------------------ labels, services, names


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_labels_and_selectors_are_consistent(name: str) -> None:
    objs = render(name)
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        assert labels.get(NAME_LABEL) == "lauradb", where
        assert labels.get(COMPONENT_LABEL), where
    for workload in workloads(objs):
        template = pod_labels(workload)
        for key in (NAME_LABEL, COMPONENT_LABEL):
            assert template[key] == workload["metadata"]["labels"][key]
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"]["matchLabels"], template)
    pods = {w["metadata"]["name"]: pod_labels(w) for w in servers(objs)}
    for service in of_kind(objs, "Service"):
        matched = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert len(matched) == 1, f"{service['metadata']['name']} selects {matched}"
    # Two shards must never share pods (their selectors differ by the shard-id label).
    selectors = [json.dumps(s["spec"]["selector"], sort_keys=True) for s in servers(objs)]
    assert len(selectors) == len(set(selectors))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_stateful_sets_have_headless_services_and_claims(name: str) -> None:
    objs = render(name)
    for stateful in of_kind(objs, "StatefulSet"):
        service = one(objs, "Service", stateful["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert selects(service["spec"]["selector"], pod_labels(stateful))
        (claim,) = stateful["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
        # Deleting or scaling down a StatefulSet must not delete its data.
        policy = stateful["spec"]["persistentVolumeClaimRetentionPolicy"]
        assert policy == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def stable_address(objs: list[Obj], stateful: Obj) -> str:
    """<statefulset>-0.<headless service>:<grpc port>: pod 0's DNS name in the namespace."""
    port = GRPC_PORTS[component(stateful)]
    return f"{stateful['metadata']['name']}-0.{stateful['spec']['serviceName']}:{port}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_config_address_lists_the_config_server_pods(name: str) -> None:
    """One config server (SQLite): pod 0. Several (prod, on etcd): every replica, so
    clients fail over between them."""
    objs = render(name)
    config = one(objs, "StatefulSet", "lauradb-config")
    settings = common_settings(objs)
    pod0 = stable_address(objs, config)
    replicas = config["spec"]["replicas"]
    expected = [pod0.replace("-0.", f"-{i}.", 1) for i in range(replicas)]
    assert settings["LAURADB_CONFIG_ADDRESS"].split(",") == expected
    store = settings["LAURADB_CONFIG_STORE"]
    if replicas > 1:
        assert store.startswith("etcd://"), "several config servers need the etcd store"
    else:
        assert store == "sqlite"


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlays_put_everything_in_one_restricted_namespace(name: str) -> None:
    objs = render(name)
    (namespace,) = of_kind(objs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {namespace["metadata"]["name"]}


# ------------------------------------------------------------------ add-shards Job


def add_shards_job(objs: list[Obj]) -> tuple[Obj, str, dict[str, str]]:
    job = one(objs, "Job", "lauradb-add-shards")
    (container,) = containers(job)
    assert container["command"] == ["python", "-c"]
    (script,) = container["args"]
    return job, script, container_env(objs, container)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_add_shards_job_lists_exactly_the_shard_stateful_sets(name: str) -> None:
    objs = render(name)
    job, _, env = add_shards_job(objs)
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # so a later apply can recreate it
    listed = dict(entry.split("=", 1) for entry in env["LAURADB_SHARDS"].split())
    expected = {
        pod_labels(s)[SHARD_ID_LABEL]: stable_address(objs, s) for s in shard_sets(objs)
    }
    assert listed == expected
    assert env["LAURADB_CONFIG_ADDRESS"] == common_settings(objs)["LAURADB_CONFIG_ADDRESS"]


class _FakeRpcError(Exception):
    def code(self) -> Any:
        import grpc

        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "config server starting"


@pytest.mark.parametrize("name", [BASE, PROD, TLS])
def test_add_shards_script_registers_every_shard_and_retries(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Run the Job's script in-process against a fake ConfigService: one AddShard per
    shard with the shard's DNS name, the node id its membership loop registers, and a
    retry while the config server is not answering yet; over a plaintext channel, or
    with the TLS overlay a TLS channel with the mounted files (the pod's certificate as
    client certificate: the config server requires one)."""
    import grpc

    from lauradb.cluster import routing_pb2, routing_pb2_grpc
    from shard_stub.membership import node_id_for

    objs = render(name)
    _, script, env = add_shards_job(objs)
    ast.parse(script)
    channels: list[tuple[str, str, dict[str, bytes]]] = []
    files: dict[str, bytes] = {}
    for key, var in TLS_ENV.items():  # the mounted Secret's files, here in tmp_path
        if var in env:
            assert env[var] == TLS_FILES[key]
            local = tmp_path / Path(env[var]).name
            files[key] = f"PEM {key}".encode()
            local.write_bytes(files[key])
            env[var] = str(local)

    def credentials(**kw: bytes) -> dict[str, bytes]:
        return kw

    def insecure(target: str, options: object = None) -> str:
        channels.append(("plaintext", target, {}))
        return f"channel to {target}"

    def secure(target: str, creds: dict[str, bytes], options: object = None) -> str:
        channels.append(("tls", target, creds))
        return f"TLS channel to {target}"
    calls: list[routing_pb2.AddShardRequest] = []
    failures = [1]  # the first call fails

    class FakeStub:
        def __init__(self, channel: object) -> None:
            self.channel = channel

        def AddShard(self, request: Any, timeout: float) -> Any:
            assert timeout > 0
            if failures[0]:
                failures[0] -= 1
                raise _FakeRpcError()
            calls.append(request)
            return routing_pb2.AddShardResponse(success=True, message=f"{request.shard_id} added")

    monkeypatch.setattr(grpc, "RpcError", _FakeRpcError)
    monkeypatch.setattr(grpc, "insecure_channel", insecure)
    monkeypatch.setattr(grpc, "secure_channel", secure)
    monkeypatch.setattr(grpc, "ssl_channel_credentials", credentials)
    monkeypatch.setattr(routing_pb2_grpc, "ConfigServiceStub", FakeStub)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    for var in TLS_ENV.values():
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    exec(compile(script, "lauradb-add-shards", "exec"), {"__name__": "__main__"})

    # one channel per config server tried: the failed call moved on to the next one
    configs = env["LAURADB_CONFIG_ADDRESS"].split(",")
    tried = configs[:2] if len(configs) > 1 else configs
    if name in WITH_TLS:
        creds = {
            "root_certificates": files["ca"],
            "private_key": files["key"],
            "certificate_chain": files["cert"],
        }
        assert channels == [("tls", config, creds) for config in tried]
    else:
        assert channels == [("plaintext", config, {}) for config in tried]

    got = [(c.shard_id, c.node_id, f"{c.host}:{c.port}") for c in calls]
    shard_ids = [(pod_labels(s)[SHARD_ID_LABEL], s) for s in shard_sets(objs)]
    expected = [(sid, node_id_for(sid), stable_address(objs, s)) for sid, s in shard_ids]
    assert sorted(got) == sorted(expected)
    out = capsys.readouterr().out
    assert "UNAVAILABLE" in out and "shard0 added" in out


# ---------------------------------------------------------------------- overlays


def test_dev_is_one_config_two_shards_one_router() -> None:
    objs = render(DEV)
    assert one(objs, "StatefulSet", "lauradb-config")["spec"]["replicas"] == 1
    shards = shard_sets(objs)
    assert sorted(s["metadata"]["name"] for s in shards) == ["lauradb-shard0", "lauradb-shard1"]
    assert all(s["spec"]["replicas"] == 1 for s in shards)
    assert one(objs, "Deployment", "lauradb-router")["spec"]["replicas"] == 1
    assert not of_kind(objs, "HorizontalPodAutoscaler")
    for _, container in all_containers(objs):  # small requests on a laptop
        assert quantity(container["resources"]["requests"]["memory"]) <= 128 * 2**20


@pytest.mark.parametrize("name", PROD_LIKE)
def test_prod_has_three_config_replicas_and_three_shards(name: str) -> None:
    objs = render(name)
    assert one(objs, "StatefulSet", "lauradb-config")["spec"]["replicas"] == 3
    assert len(shard_sets(objs)) == 3


@pytest.mark.parametrize("name", PROD_LIKE)
def test_prod_router_has_hpa_and_pdb(name: str) -> None:
    objs = render(name)
    router = one(objs, "Deployment", "lauradb-router")
    assert "replicas" not in router["spec"], "the HPA owns the replica count"
    (hpa,) = of_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "lauradb-router",
    )
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    (pdb,) = of_kind(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    selected = [
        w["metadata"]["name"]
        for w in workloads(objs)
        if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(w))
    ]
    assert selected == ["lauradb-router"]
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def _allows(rule: Obj, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (port, "grpc") for p in ports)


@pytest.mark.parametrize("name", PROD_LIKE)
def test_prod_network_policy_lets_only_routers_and_config_reach_shards(name: str) -> None:
    objs = render(name)
    policies = of_kind(objs, "NetworkPolicy")
    pods = [(component(w), pod_labels(w)) for w in workloads(objs)]
    for shard in shard_sets(objs):
        governing = [
            p
            for p in policies
            if selects(p["spec"]["podSelector"]["matchLabels"], pod_labels(shard))
        ]
        assert governing, f"no NetworkPolicy selects {shard['metadata']['name']}"
        roles: set[str] = set()
        for policy in governing:
            assert "Ingress" in policy["spec"]["policyTypes"]
            for rule in policy["spec"].get("ingress", []):
                if not _allows(rule, GRPC_PORTS["shard"]):
                    continue
                assert rule.get("from"), "the shard port must not be open to everyone"
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, f"unexpected peer {peer}"
                    match = peer["podSelector"]["matchLabels"]
                    roles |= {role for role, labels in pods if selects(match, labels)}
        assert roles == {"router", "config-server"}, f"{shard['metadata']['name']}: {roles}"
    config = one(objs, "StatefulSet", "lauradb-config")
    assert any(
        selects(p["spec"]["podSelector"]["matchLabels"], pod_labels(config)) for p in policies
    ), "the config server port is not guarded"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_tls_secret_mounted_only_by_tls_overlays(name: str) -> None:
    objs = render(name)
    for workload, container in all_containers(objs):
        volumes = {
            v["name"]: v["secret"]["secretName"]
            for v in pod_spec(workload).get("volumes", [])
            if "secret" in v
        }
        mounts = [
            m for m in container["volumeMounts"] if volumes.get(m["name"]) == TLS_SECRET
        ]
        env = container_env(objs, container)
        if name not in WITH_TLS:
            assert not mounts and not any(k.startswith("LAURADB_TLS_") for k in env)
            continue
        assert [(m["mountPath"], m.get("readOnly")) for m in mounts] == [(TLS_DIR, True)]
        # The processes' own variable names: the add-shards Job and `lauradb` in a pod
        # read them too.
        for key, file in TLS_FILES.items():
            assert env[TLS_ENV[key]] == file


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_grpc_services_claim_cleartext_http2_only_without_tls(name: str) -> None:
    for service in of_kind(render(name), "Service"):
        grpc_ports = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert len(grpc_ports) == 1
        expected = None if name in WITH_TLS else "kubernetes.io/h2c"
        assert grpc_ports[0].get("appProtocol") == expected, service["metadata"]["name"]


def test_cert_manager_resources() -> None:
    """kubernetes-validate has no schemas for cert-manager's CRDs, so their shape is
    checked here: cert-manager.io/v1, one issuer type per Issuer, the required
    Certificate fields (secretName, issuerRef, a name), every issuerRef resolving to an
    Issuer of the render, and the Secret the pods mount being the one issued."""
    objs = render(CERT_MANAGER)
    custom = [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    assert {o["apiVersion"] for o in custom} == {CERT_MANAGER_API}
    assert {o["kind"] for o in custom} == {"Issuer", "Certificate"}
    issuers = {i["metadata"]["name"]: i for i in of_kind(custom, "Issuer")}
    for issuer in issuers.values():
        types = [t for t in ISSUER_TYPES if t in issuer["spec"]]
        assert len(types) == 1, issuer
        if types == ["ca"]:
            ca_secret = issuer["spec"]["ca"]["secretName"]
            (ca,) = [
                c for c in of_kind(custom, "Certificate") if c["spec"]["secretName"] == ca_secret
            ]
            assert ca["spec"]["isCA"] is True
    certificates = {c["spec"]["secretName"]: c for c in of_kind(custom, "Certificate")}
    for certificate in certificates.values():
        spec = certificate["spec"]
        assert isinstance(spec["secretName"], str) and spec["secretName"]
        assert spec["issuerRef"]["name"] in issuers
        assert spec["issuerRef"].get("kind", "Issuer") == "Issuer"
        assert spec["issuerRef"].get("group", "cert-manager.io") == "cert-manager.io"
        assert spec.get("commonName") or spec.get("dnsNames")
    serving = certificates[TLS_SECRET]["spec"]
    assert {"server auth", "client auth"} <= set(serving["usages"])
    names = set(serving["dnsNames"])
    assert "lauradb-router" in names
    for stateful in of_kind(objs, "StatefulSet"):  # <pod>.<headless service> for each
        assert f"*.{stateful['spec']['serviceName']}" in names


# ----------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "dangling line continuation"
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        assert stages, "instructions before the first FROM"
        stages[-1].append((keyword, rest))
    return stages


def dockerfile_uid() -> int:
    users = [rest for keyword, rest in dockerfile_stages()[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric for Kubernetes' runAsNonRoot"
    return int(uid)


def test_dockerfile_is_multi_stage_on_python_3_11_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    names = []
    for stage in stages:
        words = stage[0][1].split()
        assert words[0] == "python:3.11-slim", words
        assert len(words) == 3 and words[1].upper() == "AS", "every stage is named"
        names.append(words[2])
    build, final = names[0], stages[-1]
    text = " ".join(rest for _, rest in final)
    assert f"from={build}" in text, "the final stage takes the build stage's wheels"
    # A clean stage: nothing copied from the build context, only wheels installed offline.
    from_context = [r for k, r in final if k in ("COPY", "ADD") and "--from" not in r]
    assert not from_context, from_context
    assert "pip install" in text and "--no-index" in text
    assert "pip wheel" in " ".join(rest for _, rest in stages[0])


def test_dockerfile_runs_as_non_root_with_exec_form_commands() -> None:
    assert dockerfile_uid() != 0
    final = dockerfile_stages()[-1]
    commands = [(k, rest) for k, rest in final if k in ("CMD", "ENTRYPOINT")]
    assert commands, "no CMD/ENTRYPOINT"
    scripts = project()["scripts"]
    for keyword, rest in commands:
        try:
            argv = json.loads(rest)  # exec form is a JSON array; shell form is not JSON
        except json.JSONDecodeError:
            pytest.fail(f"{keyword} {rest} is shell form: use a JSON array (exec form)")
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), keyword
        if keyword == "CMD" and argv:
            assert argv[0] in scripts
    assert "HEALTHCHECK" not in {k for k, _ in final}
    exposed = {int(p.split("/")[0]) for k, rest in final if k == "EXPOSE" for p in rest.split()}
    assert set(GRPC_PORTS.values()) <= exposed
    for role in ("lauradb-router", "lauradb-config", "lauradb-shard"):
        assert role in scripts  # the entrypoints the manifests' `command` use


def test_dockerfile_copies_every_package_and_dockerignore_lets_them_through() -> None:
    build = dockerfile_stages()[0]
    sources = {
        rest.split()[0].rstrip("/")
        for keyword, rest in build
        if keyword == "COPY" and "--from" not in rest
    }
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in sources, f"package {pattern} is not copied"
    for source in sources:
        assert (ROOT / source).exists(), source
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allow-list: everything (.venv, .git, caches, data) is ignored but the sources.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert sources <= allowed, sources - allowed
