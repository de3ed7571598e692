"""Tests of the runwarden Helm chart.

The chart is rendered by helm/tests/render (Go text/template + sprig + the parts of Helm's
engine the chart uses, since Helm itself cannot be installed here), then:

* every rendered manifest of every documented mode is validated against the Kubernetes
  OpenAPI schemas shipped by the `kubernetes-validate` package, in strict mode (unknown fields
  are errors), for the oldest Kubernetes the chart supports, the version it targets and the
  newest the package ships. The ServiceMonitor is a CRD with no schema there: it gets
  structural checks only (see check_service_monitor);
* behaviours the schemas cannot see are asserted (replica rules, probes, Service, config file,
  secrets, hooks, labels, grace period...).

Run through helm/tests/run.sh, which builds the renderer and installs what is needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
HELM = HERE.parent
REPO = HELM.parent
CHART = HELM / "runwarden"
EXAMPLES = HELM / "examples"

# The oldest Kubernetes Chart.yaml allows (gRPC probes GA), the version the chart targets, and
# the newest kubernetes-validate ships.
KUBE_MIN, KUBE_TARGET = "1.27.0", "1.30.0"
KUBE_VERSIONS = [KUBE_MIN, KUBE_TARGET, kubernetes_validate.latest_version()]

# The documented modes: name -> renderer arguments. docs/deploy.md shows the same files.
MODES = {
    "default": [],
    "sqlite": ["-f", str(EXAMPLES / "sqlite.yaml")],
    "postgres-ha": ["-f", str(EXAMPLES / "postgres-ha.yaml")],
    "postgres-existing-secret": ["-f", str(EXAMPLES / "postgres-existing-secret.yaml")],
}

POSTGRES = ["-set", "database.mode=postgres", "-set-string", "database.url=postgres://u:p@db:5432/rw"]

# What the summary at the end of the run prints: (mode, kube version) -> Counter of kinds.
VALIDATED: dict[tuple[str, str], Counter] = {}
STRUCTURAL_ONLY: dict[tuple[str, str], Counter] = {}


# --- rendering ------------------------------------------------------------------------------


def renderer() -> str:
    path = os.environ.get("RUNWARDEN_HELM_RENDER")
    if not path:
        pytest.fail("RUNWARDEN_HELM_RENDER is not set: run the tests through helm/tests/run.sh")
    return path


def run_render(*args: str, kube: str = KUBE_TARGET) -> subprocess.CompletedProcess:
    cmd = [renderer(), "-chart", str(CHART), "-name", "rw", "-namespace", "prod", "-kube-version", kube, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def render(*args: str, kube: str = KUBE_TARGET) -> list[dict]:
    result = run_render(*args, kube=kube)
    assert result.returncode == 0, f"render failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_error(*args: str, kube: str = KUBE_TARGET) -> str:
    result = run_render(*args, kube=kube)
    assert result.returncode != 0, f"render should have failed, printed:\n{result.stdout}"
    return result.stderr


def one(docs: list[dict], kind: str, name_suffix: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def env(doc: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(doc)["env"]}


def config_toml(docs: list[dict]) -> dict:
    return tomllib.loads(one(docs, "ConfigMap")["data"]["runwarden.toml"])


# --- schema validation of every mode --------------------------------------------------------


def check_service_monitor(monitor: dict, docs: list[dict]) -> None:
    """What can be checked of a ServiceMonitor without its CRD's schema."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "the ServiceMonitor must select the Service"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["prod"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    duration = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                                 "relabelings", "metricRelabelings", "authorization"}
        if "authorization" in endpoint:
            auth = endpoint["authorization"]
            assert auth["type"] == "Bearer" and set(auth["credentials"]) == {"name", "key"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "http"
        assert duration.match(endpoint["interval"]) and duration.match(endpoint["scrapeTimeout"])
        assert isinstance(endpoint["honorLabels"], bool)


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_every_manifest_validates_against_the_kubernetes_schemas(mode: str, kube: str) -> None:
    docs = render(*MODES[mode], kube=kube)
    assert docs, "nothing rendered"
    validated, structural = Counter(), Counter()
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, kube, strict=True)
            check_service_monitor(doc, docs)
            structural[doc["kind"]] += 1
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} does not validate against {kube}: {path}: {e.message}")
        validated[doc["kind"]] += 1
    VALIDATED[(mode, kube)] = validated
    STRUCTURAL_ONLY[(mode, kube)] = structural


def test_the_validation_rejects_what_the_api_server_would() -> None:
    """A control: the strict schemas do catch a named gRPC probe port and an unknown field."""
    deployment = one(render(), "Deployment")
    kubernetes_validate.validate(deployment, KUBE_TARGET, strict=True)
    named_port = yaml.safe_load(yaml.safe_dump(deployment))
    container(named_port)["livenessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError, match="'grpc' is not of type 'integer'"):
        kubernetes_validate.validate(named_port, KUBE_TARGET, strict=True)
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 20
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod' was unexpected"):
        kubernetes_validate.validate(typo, KUBE_TARGET, strict=True)


def test_each_mode_renders_what_it_documents() -> None:
    assert kinds(render()) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    assert kinds(render(*MODES["sqlite"])) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    assert kinds(render(*MODES["postgres-ha"])) == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget",
        "Secret", "Secret", "Service", "ServiceMonitor"]
    assert kinds(render(*MODES["postgres-existing-secret"])) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]


# --- SQLite mode ----------------------------------------------------------------------------


def test_sqlite_mode_runs_one_pod_with_recreate_on_a_claim() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = one(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert env(deployment)["RUNWARDEN_DATABASE_URL"]["value"] == "sqlite:///data/runwarden.db?mode=rwc"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]


@pytest.mark.parametrize("replicas", ["2", "3", "10"])
def test_sqlite_mode_with_more_than_one_replica_fails_to_render(replicas: str) -> None:
    err = render_error("-set", f"replicaCount={replicas}")
    assert f"database.mode=sqlite runs exactly one replica (one process owns the SQLite file), but replicaCount is {replicas}" in err
    # The same from a values file (float64 numbers, as Helm reads YAML).
    assert "exactly one replica" in render_error("-f", str(EXAMPLES / "sqlite.yaml"), "-set", f"replicaCount={replicas}")


def test_sqlite_mode_can_scale_to_zero_for_maintenance() -> None:
    assert one(render("-set", "replicaCount=0"), "Deployment")["spec"]["replicas"] == 0


@pytest.mark.parametrize("args, message", [
    (["-set", "autoscaling.enabled=true"], "autoscaling.enabled needs database.mode=postgres"),
    (["-set", "migrations.job.enabled=true"], "migrations.job.enabled needs database.mode=postgres"),
    (["-set-string", "database.url=postgres://u:p@db/rw"], "database.url and database.existingSecret are for database.mode=postgres"),
    (["-set", "database.existingSecret=db"], "database.url and database.existingSecret are for database.mode=postgres"),
])
def test_sqlite_mode_refuses_what_needs_postgres(args: list[str], message: str) -> None:
    assert message in render_error(*args)


def test_sqlite_persistence_options() -> None:
    docs = render("-set", "database.sqlite.persistence.storageClass=-", "-set", "database.sqlite.persistence.keep=false")
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == ""
    assert "annotations" not in claim["metadata"]
    docs = render("-set", "database.sqlite.persistence.existingClaim=my-claim")
    assert "PersistentVolumeClaim" not in kinds(docs)
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "my-claim"
    docs = render("-set", "database.sqlite.persistence.enabled=false")
    assert "PersistentVolumeClaim" not in kinds(docs)
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    notes = run_render("-notes", "-set", "database.sqlite.persistence.enabled=false").stdout
    assert "every\nreport is lost" in notes


# --- PostgreSQL mode ------------------------------------------------------------------------


def test_postgres_url_comes_from_the_chart_secret() -> None:
    docs = render(*POSTGRES, "-set", "replicaCount=3")
    deployment = one(docs, "Deployment")
    ref = env(deployment)["RUNWARDEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret")
    assert ref == {"name": secret["metadata"]["name"], "key": "database-url"}
    assert base64.b64decode(secret["data"]["database-url"]).decode() == "postgres://u:p@db:5432/rw"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert "data" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_postgres_url_from_an_existing_secret() -> None:
    docs = render(*MODES["postgres-existing-secret"])
    assert "Secret" not in kinds(docs)
    deployment = one(docs, "Deployment")
    assert env(deployment)["RUNWARDEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "runwarden-db", "key": "url"}
    assert "checksum/database-secret" not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_postgres_needs_a_url_or_an_existing_secret() -> None:
    err = render_error("-set", "database.mode=postgres")
    assert "database.mode=postgres needs database.url (postgres://USER:PASSWORD@HOST:5432/DB) or database.existingSecret" in err
    assert "must start with postgres://" in render_error("-set", "database.mode=postgres", "-set-string", "database.url=mysql://x@db/rw")
    assert "not both" in render_error(*POSTGRES, "-set", "database.existingSecret=db")
    assert "applies to database.mode=sqlite only" in render_error(*POSTGRES, "-set", "config.sqlite_synchronous=normal")


def test_pdb_only_with_two_or_more_pods() -> None:
    assert "PodDisruptionBudget" not in kinds(render(*POSTGRES))
    pdb = one(render(*POSTGRES, "-set", "replicaCount=2"), "PodDisruptionBudget")
    deployment = one(render(*POSTGRES, "-set", "replicaCount=2"), "Deployment")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert "PodDisruptionBudget" not in kinds(render(*POSTGRES, "-set", "replicaCount=2", "-set", "podDisruptionBudget.enabled=false"))
    pdb = one(render(*POSTGRES, "-set", "replicaCount=3", "-set", "podDisruptionBudget.maxUnavailable=null",
                     "-set", "podDisruptionBudget.minAvailable=2"), "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": pdb["spec"]["selector"]}


def test_hpa_owns_the_replica_count() -> None:
    docs = render(*MODES["postgres-ha"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert one(docs, "PodDisruptionBudget")  # minReplicas 3 > 1
    assert "needs resources.requests.cpu" in render_error(*POSTGRES, "-set", "autoscaling.enabled=true", "-set", "resources=null")
    assert "must not exceed" in render_error(*POSTGRES, "-set", "autoscaling.enabled=true", "-set", "autoscaling.minReplicas=5",
                                             "-set", "autoscaling.maxReplicas=2")


def test_migration_job_is_a_pre_install_pre_upgrade_hook() -> None:
    docs = render(*MODES["postgres-ha"])
    job = one(docs, "Job")
    hook_secret = one(docs, "Secret", "-migrate")
    for hook in (job, hook_secret):
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    # The Secret the Job reads is created before it.
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert "helm.sh/hook" not in one(docs, "Secret", "-database")["metadata"].get("annotations", {})
    assert hook_secret["data"] == one(docs, "Secret", "-database")["data"]
    migrate = container(job)
    assert migrate["args"] == ["migrate"]
    assert env(job)["RUNWARDEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == hook_secret["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The Job's pod must not become an endpoint of the Service (it does not listen).
    service_selector = one(docs, "Service")["spec"]["selector"]
    assert not service_selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    # With the Job as the only migrator, the server refuses an unmigrated schema.
    assert config_toml(docs)["no_migrate"] is True


def test_migration_job_reads_an_existing_secret_directly() -> None:
    docs = render(*MODES["postgres-existing-secret"], "-set", "migrations.job.enabled=true")
    assert "Secret" not in kinds(docs)
    assert env(one(docs, "Job"))["RUNWARDEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "runwarden-db", "key": "url"}


# --- the pod: probes, port, security, grace -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_probes_are_native_grpc_on_the_numeric_port(mode: str) -> None:
    docs = render(*MODES[mode])
    server = container(one(docs, "Deployment"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(server[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"} == {"grpc"}, probe
        assert server[probe]["grpc"] == {"port": 50051, "service": ""}
        assert isinstance(server[probe]["grpc"]["port"], int)
    assert server["ports"] == [{"name": "grpc", "containerPort": 50051, "protocol": "TCP"}]


def test_container_port_moves_listen_and_probes_together() -> None:
    docs = render("-set", "containerPort=8080", "-set", "probes.service=runwarden.v1.ReportService")
    server = container(one(docs, "Deployment"))
    assert env(one(docs, "Deployment"))["RUNWARDEN_LISTEN"]["value"] == "0.0.0.0:8080"
    assert server["readinessProbe"]["grpc"] == {"port": 8080, "service": "runwarden.v1.ReportService"}
    assert server["ports"][0]["containerPort"] == 8080


@pytest.mark.parametrize("mode", MODES)
def test_service_speaks_h2c_on_a_port_named_grpc(mode: str) -> None:
    docs = render(*MODES[mode])
    service, deployment = one(docs, "Service"), one(docs, "Deployment")
    assert service["spec"]["ports"][0] | {"port": 0} == {
        "name": "grpc", "port": 0, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


@pytest.mark.parametrize("mode", MODES)
def test_pods_are_locked_down(mode: str) -> None:
    docs = render(*MODES[mode], "-set", "migrations.job.enabled=true") if mode.startswith("postgres") else render(*MODES[mode])
    for workload in [d for d in docs if d["kind"] in ("Deployment", "Job")]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        security = container(workload)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_termination_grace_exceeds_the_shutdown_timeout() -> None:
    def grace(*args: str) -> int:
        return one(render(*args), "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert grace() == 20  # shutdown_timeout 10 + 10
    assert grace("-set", "config.shutdown_timeout=45") == 55
    assert grace("-set", "config.shutdown_timeout=null") == 20  # the binary's default, 10
    assert grace("-set", "terminationGracePeriodSeconds=11") == 11
    err = render_error("-set", "terminationGracePeriodSeconds=10")
    assert "terminationGracePeriodSeconds must exceed preStopSleepSeconds + config.shutdown_timeout (10 s)" in err


def test_prestop_sleep_needs_kubernetes_1_30() -> None:
    docs = render("-set", "preStopSleepSeconds=5", kube="1.30.0")
    deployment = one(docs, "Deployment")
    assert container(deployment)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 25
    kubernetes_validate.validate(deployment, "1.30.0", strict=True)
    assert "needs Kubernetes 1.30" in render_error("-set", "preStopSleepSeconds=5", kube="1.29.0")
    assert "lifecycle" not in container(one(render(), "Deployment"))


def test_chart_refuses_kubernetes_older_than_its_floor() -> None:
    assert "incompatible with Kubernetes v1.26.0" in render_error(kube="1.26.0")


def test_topology_spread_gets_the_server_selector() -> None:
    deployment = one(render(*MODES["postgres-ha"]), "Deployment")
    (constraint,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"


def test_extra_env_is_added_but_cannot_replace_the_charts() -> None:
    deployment = one(render("-f", str(HERE / "values" / "extra-env.yaml")), "Deployment")
    assert env(deployment)["RUNWARDEN_MAX_BATCH"] == {"name": "RUNWARDEN_MAX_BATCH", "value": "500"}
    assert "extraEnv: RUST_LOG is set by the chart" in render_error("-f", str(HERE / "values" / "extra-env-clash.yaml"))


def test_user_null_removes_a_default() -> None:
    resources = container(one(render("-set", "resources.limits=null"), "Deployment"))["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "128Mi"}}


# --- the config file ------------------------------------------------------------------------


def struct_fields(source: str, name: str) -> set[str]:
    match = re.search(r"pub struct " + name + r" \{(.*?)\n\}", source, re.S)
    assert match, f"src/config.rs has no `pub struct {name}`: update helm/tests/test_chart.py and the chart"
    return set(re.findall(r"^\s*pub (\w+):", match.group(1), re.M))


def test_config_file_uses_only_keys_the_binary_knows() -> None:
    """The binary refuses unknown keys (deny_unknown_fields): check against src/config.rs."""
    source = (REPO / "src" / "config.rs").read_text()
    file_keys = struct_fields(source, "FileConfig")
    scoring_keys = struct_fields(source, "ScoringFile")
    weight_keys = struct_fields(source, "WeightsFile")
    for mode in MODES:
        docs = render(*MODES[mode])
        config = config_toml(docs)
        assert set(config) <= file_keys, set(config) - file_keys
        assert set(config.get("scoring", {})) <= scoring_keys
        assert set(config.get("scoring", {}).get("weights", {})) == (weight_keys if "weights" in config.get("scoring", {}) else set())
        assert "listen" not in config and "database" not in config  # both come from the environment
        deployment = one(docs, "Deployment")
        assert env(deployment)["RUNWARDEN_CONFIG"]["value"] == "/etc/runwarden/runwarden.toml"
        mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "config")
        assert mount == {"name": "config", "mountPath": "/etc/runwarden", "readOnly": True}
        assert env(deployment)["RUNWARDEN_LISTEN"]["value"] == "0.0.0.0:50051"


def test_config_values_keep_their_toml_types() -> None:
    config = config_toml(render(*MODES["sqlite"]))
    assert config["shutdown_timeout"] == 15 and config["no_migrate"] is False
    assert config["sqlite_synchronous"] == "full"
    scoring = config["scoring"]
    assert scoring["memory_limit_mb"] == 1024.0 and isinstance(scoring["memory_limit_mb"], float)
    assert scoring["partial_credit"] == 60.0 and isinstance(scoring["partial_credit"], float)
    assert scoring["weights"] == {"reliability": 0.4, "performance": 0.2, "data_quality": 0.3, "resource_efficiency": 0.1}
    # Integers given with -set (int64, as Helm's --set makes them) too.
    config = config_toml(render("-set", "config.queue_capacity=1000000", "-set", "config.scoring.db_query_limit=250",
                                "-set", "config.scoring.cpu_limit_percent=90"))
    assert config["queue_capacity"] == 1000000
    assert config["scoring"] == {"db_query_limit": 250, "cpu_limit_percent": 90.0}


def test_bad_scoring_weights_fail_early() -> None:
    err = render_error("-f", str(EXAMPLES / "sqlite.yaml"), "-set-string", "config.scoring.weights.reliability=0.9")
    assert "Invalid type" in err  # a string where the schema wants a number
    err = render_error("-f", str(EXAMPLES / "sqlite.yaml"), "-set", "config.scoring.weights.reliability=1")
    assert "config.scoring.weights must sum to 1" in err


@pytest.mark.parametrize("args, message", [
    (["-set", "config.listen=0.0.0.0:1"], "Additional property listen is not allowed"),
    (["-set", "config.database=sqlite://x"], "Additional property database is not allowed"),
    (["-set", "config.lisen=1"], "Additional property lisen is not allowed"),
    (["-set", "database.mode=mysql"], "database.mode must be one of"),
    (["-set-string", "replicaCount=three"], "replicaCount: Invalid type"),
    (["-set", "config.sqlite_synchronous=fast"], "config.sqlite_synchronous must be one of"),
    (["-set", "log.format=text"], "log.format must be one of"),
])
def test_schema_refuses_unknown_keys_and_bad_types(args: list[str], message: str) -> None:
    assert message in render_error(*args)


def test_pods_roll_when_the_config_or_the_url_changes() -> None:
    def annotations(*args: str) -> dict:
        return one(render(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    base = annotations(*POSTGRES)
    assert base["checksum/config"] != annotations(*POSTGRES, "-set", "config.max_batch=10")["checksum/config"]
    other_url = annotations("-set", "database.mode=postgres", "-set-string", "database.url=postgres://u:p@other:5432/rw")
    assert base["checksum/database-secret"] != other_url["checksum/database-secret"]
    assert base["checksum/config"] == other_url["checksum/config"]
    configmap = one(render(*POSTGRES), "ConfigMap")
    assert configmap["data"]["runwarden.toml"]  # the checksum is over this file
    assert len(base["checksum/config"]) == len(hashlib.sha256().hexdigest())


# --- names, labels, notes -------------------------------------------------------------------


def test_standard_labels_and_name_lengths() -> None:
    long_release = "a" * 70
    result = subprocess.run(
        [renderer(), "-chart", str(CHART), "-name", long_release, *MODES["postgres-ha"]],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for doc in [d for d in yaml.safe_load_all(result.stdout) if d]:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, (doc["kind"], key)
    docs = render("-set", "fullnameOverride=warden")
    assert {d["metadata"]["name"] for d in docs} == {"warden", "warden-data"}
    assert one(render(), "Deployment")["metadata"]["name"] == "rw-runwarden"


@pytest.mark.parametrize("mode", MODES)
def test_notes_render(mode: str) -> None:
    result = run_render("-notes", *MODES[mode])
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    assert "port-forward svc/rw-runwarden 50051:50051" in notes
    assert ("Mode: SQLite" if mode in ("default", "sqlite") else "Mode: PostgreSQL") in notes


# --- the chart against the rest of the repository -------------------------------------------


def test_chart_app_version_is_the_crate_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    assert chart["appVersion"] == cargo["package"]["version"]


def test_dockerfile_matches_the_chart() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    port = values["containerPort"]
    assert f"EXPOSE {port}" in dockerfile
    assert f"RUNWARDEN_LISTEN=0.0.0.0:{port}" in dockerfile
    assert re.search(r'^HEALTHCHECK .*CMD \["runwarden", "health", "--addr", "127\.0\.0\.1:' + str(port) + r'"\]', dockerfile, re.M)
    assert 'ENTRYPOINT ["runwarden"]' in dockerfile and 'CMD ["serve"]' in dockerfile
    # The image's user is the one the chart's securityContext expects.
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)
    assert values["podSecurityContext"]["runAsUser"] == 65532


# Objects whose fields are Kubernetes API fields, documented as a whole by the comment above them.
K8S_OBJECTS = {"probes.startup", "probes.readiness", "probes.liveness", "rollingUpdate"}


def test_every_values_key_is_documented() -> None:
    """Each key the chart defines (values.schema.json's properties) has a comment right above it."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())

    def defined(path: list[str]) -> bool:
        node = schema
        for key in path:
            props = node.get("properties")
            if props is None or key not in props:
                return False
            node = props[key]
        return True

    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if not defined(path) or ".".join(path[:-1]) in K8S_OBJECTS:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            missing.append(".".join(path))
    assert not missing, f"values.yaml keys without a comment: {missing}"
    # ... and every key the schema defines at the top level appears in values.yaml.
    top = {m.group(1) for m in (re.match(r"^([A-Za-z_]\w*):", line) for line in lines) if m}
    assert set(schema["properties"]) - {"global"} == top


def test_auth_is_required_by_default_because_pods_listen_beyond_loopback() -> None:
    deployment = one(render(), "Deployment")
    variables = env(deployment)
    assert variables["RUNWARDEN_REQUIRE_AUTH"]["value"] == "true"
    assert "RUNWARDEN_INSECURE" not in variables
    insecure = env(one(render("-set", "auth.require=false", "-set", "auth.insecure=true"), "Deployment"))
    assert "RUNWARDEN_REQUIRE_AUTH" not in insecure and insecure["RUNWARDEN_INSECURE"]["value"] == "true"


def test_metrics_token_and_open_metrics() -> None:
    docs = render("-set", "metrics.serviceMonitor.enabled=true", "-set-string",
                  "metrics.serviceMonitor.bearerTokenSecret.name=prom-token")
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}}
    docs = render("-set", "metrics.serviceMonitor.enabled=true")
    assert "authorization" not in one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    config = tomllib.loads(one(render("-set", "auth.metricsOpen=true"), "ConfigMap")["data"]["runwarden.toml"])
    assert config["auth"] == {"metrics_open": True}
    assert "auth" not in tomllib.loads(one(render(), "ConfigMap")["data"]["runwarden.toml"])
