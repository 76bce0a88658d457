"""Every render of the chart validated with kubeconform against Kubernetes' own schemas.

`make kubeconform` builds kubeconform from the Go module proxy (deploy/tools/kubeconform.sh) and
generates strict JSON schemas into .tools/k8s-schemas from Go module sources
(deploy/tools/k8s_schemas.py): every kind of Kubernetes' OpenAPI spec at one pinned version, and
the CRDs of KEDA (ScaledObject, TriggerAuthentication) and the Prometheus Operator
(ServiceMonitor, PrometheusRule). kubeconform only ever reads those local files (its default
location is on the network and is never used; a proxy that refuses every connection is set to be
sure), runs with `-strict` (a field the schema does not know is an error) and without
`-ignore-missing-schemas` (a kind without a schema is an error, never a skip). A misspelled field
in any template fails here.

Without kubeconform or the schemas these tests fail, they never skip.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.test_chart import CHART, CI_FILES, MINIMAL, NAMESPACE, RELEASE, ROOT, helm

pytestmark = pytest.mark.chart

# libyaml when PyYAML has it: the renders (the dashboard ConfigMap above all) parse 10x faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

KUBECONFORM = ROOT / ".tools" / "bin" / "kubeconform"
KUBECONFORM_SCRIPT = ROOT / "deploy" / "tools" / "kubeconform.sh"
SCHEMAS_SCRIPT = ROOT / "deploy" / "tools" / "k8s_schemas.py"
MAKE_HINT = "run `make kubeconform` (builds kubeconform and generates the schemas, offline after that)"

# Every optional object the chart can render, switched on at once.
EVERYTHING_ON = (
    "vllm.enabled=true", "model.endpoints=null", "vllm.modelCache.type=pvc",
    "worker.keda.enabled=true", "worker.keda.authenticationRef=kafka-auth",
    "api.autoscaling.enabled=true",
    "worker.pdb.enabled=true", "api.pdb.enabled=true", "vllm.pdb.enabled=true",
    "networkPolicy.enabled=true", "networkPolicy.allowExternal=false",
    "networkPolicy.allowExternalEgress=false",
    "metrics.serviceMonitor.enabled=true",
    "metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.folder=prefstream",
    "secrets.modelApiKey=k", "secrets.cassandraPassword=p", "secrets.apiToken=t",
    "metrics.prometheusRule.enabled=true",
)
EVERYTHING_ON_KINDS = {
    "Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Job", "Pod",
    "PersistentVolumeClaim", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler",
    "ScaledObject", "ServiceMonitor", "PrometheusRule",
}


@functools.cache
def pins():
    """deploy/tools/k8s_schemas.py as a module: its pins, stamp and -schema-location templates."""
    spec = importlib.util.spec_from_file_location("k8s_schemas", SCHEMAS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _require_kubeconform() -> None:
    if not KUBECONFORM.exists():
        pytest.fail(f"{_rel(KUBECONFORM)} is missing: {MAKE_HINT}", pytrace=False)
    p = pins()
    found = p.read_stamp(p.OUT)
    if found is None:
        pytest.fail(f"{_rel(p.OUT)} has no schemas: {MAKE_HINT}", pytrace=False)
    if found != p.stamp():
        pytest.fail(f"{_rel(p.OUT)} was generated for {found}, the pins are {p.stamp()} "
                    f"(or deploy/tools/k8s_schemas.py changed): {MAKE_HINT}", pytrace=False)


def kubeconform(manifests: str) -> tuple[int, dict]:
    """(exit code, JSON report) of `kubeconform -strict` on a multi-document YAML string."""
    _require_kubeconform()
    p = pins()
    args = [str(KUBECONFORM), "-strict", "-summary", "-verbose", "-output", "json",
            "-kubernetes-version", p.KUBERNETES_VERSION.removeprefix("v")]
    for location in p.SCHEMA_LOCATIONS:
        args += ["-schema-location", location]
    # Offline for sure: any HTTP(S) request would go to a port that refuses it.
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "no_proxy": ""}
    proc = subprocess.run([*args, "-"], input=manifests, capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"kubeconform printed no JSON report (exit {proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}", pytrace=False)
    return proc.returncode, report


def load_all(manifests: str) -> list[dict]:
    return [d for d in yaml.load_all(manifests, Loader=_LOADER) if d]


def problems(manifests: str) -> list[str]:
    """Everything kubeconform has against a render; [] means every document was validated."""
    docs = load_all(manifests)
    rc, report = kubeconform(manifests)
    out = []
    for r in report["resources"]:
        if r["status"] != "statusValid":
            errors = "; ".join(f"{e['path']}: {e['msg']}" for e in r.get("validationErrors") or [])
            out.append(f"{r['kind']} {r['name']} ({r['version']}): {r['status']} "
                       f"{errors or r['msg']}")
    summary = report["summary"]
    if summary["skipped"]:
        out.append(f"{summary['skipped']} resource(s) skipped")
    if summary["valid"] != len(docs):
        out.append(f"{summary['valid']} valid of {len(docs)} rendered documents ({summary})")
    validated = sorted((r["kind"], r["name"]) for r in report["resources"]
                       if r["status"] == "statusValid")
    rendered = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    if not out and validated != rendered:
        out.append(f"validated {validated}, rendered {rendered}")
    if not out and rc != 0:
        out.append(f"kubeconform exited {rc}")
    return out


@functools.cache
def render_text(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = (),
                chart: Path = CHART) -> str:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args)
    if proc.returncode != 0:
        pytest.fail(f"helm template failed for {[v.name for v in values]} {list(sets)}:\n"
                    f"{proc.stderr}", pytrace=False)
    return proc.stdout


def check(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = (),
          chart: Path = CHART) -> list[str]:
    """The check every render of the chart must pass: render, then kubeconform it."""
    return problems(render_text(values, sets, chart))


def dump(docs) -> str:
    return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False)


def kinds(manifests: str) -> set[str]:
    return {d["kind"] for d in load_all(manifests)}


# --------------------------------------------------------------------------- tool and schemas


def test_kubeconform_is_the_pinned_version():
    pinned = re.search(r'KUBECONFORM_VERSION="\$\{KUBECONFORM_VERSION:-(v[0-9.]+)\}"',
                       KUBECONFORM_SCRIPT.read_text())
    assert pinned, "deploy/tools/kubeconform.sh must pin KUBECONFORM_VERSION"
    _require_kubeconform()
    proc = subprocess.run([str(KUBECONFORM), "-v"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == pinned.group(1), (
        f".tools/bin/kubeconform is {proc.stdout.strip()}, the pin is {pinned.group(1)}: {MAKE_HINT}")


def test_schemas_are_local_and_cover_the_rendered_crds():
    _require_kubeconform()
    p = pins()
    for location in p.SCHEMA_LOCATIONS:
        assert location.startswith(str(p.OUT)), f"{location} is not under {p.OUT}"
    k8s = p.OUT / f"{p.KUBERNETES_VERSION}-standalone-strict"
    for name in ("deployment-apps-v1", "service-v1", "configmap-v1", "secret-v1", "pod-v1",
                 "job-batch-v1", "horizontalpodautoscaler-autoscaling-v2",
                 "poddisruptionbudget-policy-v1", "networkpolicy-networking-v1"):
        assert (k8s / f"{name}.json").is_file(), f"{name}.json missing: {MAKE_HINT}"
    for name in ("keda.sh/scaledobject_v1alpha1", "keda.sh/triggerauthentication_v1alpha1",
                 "monitoring.coreos.com/servicemonitor_v1",
                 "monitoring.coreos.com/prometheusrule_v1"):
        assert (p.OUT / "crds" / f"{name}.json").is_file(), f"{name}.json missing: {MAKE_HINT}"


def test_every_generated_schema_compiles():
    """kubeconform treats a schema it cannot compile as missing: each one must load (an object
    with only apiVersion/kind/metadata is valid or invalid against it, never an error)."""
    _require_kubeconform()
    docs = []
    for path in sorted(pins().OUT.rglob("*.json")):
        if path.name == pins().STAMP:
            continue
        props = json.loads(path.read_text())["properties"]
        docs.append({"apiVersion": props["apiVersion"]["enum"][0],
                     "kind": props["kind"]["enum"][0], "metadata": {"name": "x"}})
    docs = [d for d in docs if d["kind"] != "List"]  # kubeconform expands a List into its items
    assert len(docs) > 300, f"only {len(docs)} schemas: {MAKE_HINT}"
    _, report = kubeconform(dump(docs))
    errors = [f"{r['kind']} {r['version']}: {r['msg']}" for r in report["resources"]
              if r["status"] == "statusError"]
    assert not errors, "\n".join(errors)
    summary = report["summary"]
    assert summary["valid"] + summary["invalid"] == len(docs), summary


def test_pinned_kubernetes_minor_is_helms_default(tmp_path):
    """The schemas are for the Kubernetes version `helm template` assumes (.Capabilities)."""
    chart = tmp_path / "kubeversion"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kubeversion\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kv}\n"
        "data: {version: {{ .Capabilities.KubeVersion.Version | quote }}}\n")
    proc = helm("template", "kv", str(chart))
    assert proc.returncode == 0, proc.stderr
    helm_version = yaml.safe_load(proc.stdout)["data"]["version"]
    pinned = pins().KUBERNETES_VERSION
    assert helm_version.split(".")[:2] == pinned.split(".")[:2], (
        f"helm renders for Kubernetes {helm_version}, the schemas are for {pinned}: align "
        "KUBERNETES_VERSION in deploy/tools/k8s_schemas.py with helm's client-go minor")


# --------------------------------------------------------------------------- the chart's renders


@pytest.mark.parametrize("values_file", CI_FILES, ids=[f.stem for f in CI_FILES])
def test_ci_values_render_is_valid(values_file):
    found = check((values_file,))
    assert not found, "\n".join(found)


def test_render_with_every_optional_object_is_valid():
    manifests = render_text((MINIMAL,), EVERYTHING_ON)
    missing = EVERYTHING_ON_KINDS - kinds(manifests)
    assert not missing, f"the everything-on render lacks {sorted(missing)}"
    found = problems(manifests)
    assert not found, "\n".join(found)


# The other branches of the templates: alternatives to the defaults and the pass-through values
# (Kubernetes objects the chart copies in), so that those render valid objects too.
ALTERNATIVES = {
    "image": {"registry": "registry.example.com", "digest": "sha256:" + "0" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "commonLabels": {"team": "ml"},
    # annotation values that YAML reads as booleans and numbers: they must render as strings
    "serviceAccount": {"annotations": {"eks.amazonaws.com/sts-regional-endpoints": True}},
    "scratch": {"tmpSizeLimit": "", "dataSizeLimit": ""},
    "worker": {
        "resources": {"requests": {"cpu": 1, "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "staticMembership": False,
        "livenessProbe": {"enabled": False},
        "customReadinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "podAnnotations": {"a": "b"}, "podLabels": {"c": "d"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                              "labelSelector": {"matchLabels": {"a": "b"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"a": "b"}}}],
        "priorityClassName": "high",
        "extraEnv": [{"name": "FOO", "value": "bar"}],
        "extraEnvFrom": [{"secretRef": {"name": "extra"}}],
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
        "pdb": {"minAvailable": 1, "maxUnavailable": ""},
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 75,
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}},
    },
    "api": {
        "service": {"type": "LoadBalancer", "annotations": {
            "service.beta.kubernetes.io/aws-load-balancer-internal": True, "x": 5}},
        "startupProbe": {"enabled": False},
        "pdb": {"minAvailable": "50%", "maxUnavailable": ""},
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 70},
    },
    "vllm": {
        "enabled": True, "model": "some/model", "reasoningParser": "qwen3", "extraArgs": ["--x"],
        "hfToken": {"existingSecret": "hf"}, "extraEnv": [{"name": "A", "value": "b"}],
        "modelCache": {"type": "pvc", "pvc": {"storageClassName": "fast",
                                              "accessModes": ["ReadWriteMany"]}},
        "runtimeClassName": "nvidia", "priorityClassName": "gpu",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "model": {"endpoints": None},
    "networkPolicy": {
        "allowExternal": False, "allowExternalEgress": False,
        "ingressNSMatchLabels": {"kubernetes.io/metadata.name": "monitoring"},
        "ingressNSPodMatchLabels": {"app": "prometheus"},
        "extraIngress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                         "ports": [{"port": 9092, "protocol": "TCP"}]}],
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}, "scrapeTimeout": "10s"},
        "grafanaDashboard": {"enabled": True, "folder": "prefstream"},
        "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
    },
    "secrets": {"modelApiKey": "k", "cassandraPassword": "p", "apiToken": "t"},
}


def test_render_with_the_alternative_branches_is_valid(tmp_path):
    values = tmp_path / "alternatives-values.yaml"
    values.write_text(yaml.safe_dump(ALTERNATIVES))
    found = check((MINIMAL, values))
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- it can fail


def _docs(sets: tuple[str, ...] = EVERYTHING_ON) -> list[dict]:
    return load_all(render_text((MINIMAL,), sets))


def _first(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert found, f"no {kind} in the render"
    return found[0]


def test_the_negative_cases_start_from_a_valid_render():
    assert not problems(dump(_docs())), "the re-serialized render must be valid"


def _spec_containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


# (kind, what, mutation, text the failure must show)
BROKEN = [
    ("Deployment", "misspelled container field",
     lambda d: _spec_containers(d)[0].update(imagePullPolicyy="IfNotPresent"), "imagePullPolicyy"),
    ("Deployment", "misspelled metadata field",
     lambda d: d["metadata"].update(lables={"a": "b"}), "lables"),
    ("Deployment", "misspelled pod spec field",
     lambda d: d["spec"]["template"]["spec"].update(nodeSelectorr={"a": "b"}), "nodeSelectorr"),
    ("Deployment", "string where an integer belongs",
     lambda d: d["spec"].update(replicas="two"), "/spec/replicas"),
    ("Deployment", "null where an object belongs",
     lambda d: _spec_containers(d)[0].update(resources=None), "/resources"),
    ("Service", "misspelled port field",
     lambda d: d["spec"]["ports"][0].update(targetPortt="http"), "targetPortt"),
    ("HorizontalPodAutoscaler", "misspelled spec field",
     lambda d: d["spec"].update(maxReplica=3), "maxReplica"),
    ("ServiceMonitor", "misspelled endpoint field",
     lambda d: d["spec"]["endpoints"][0].update(intervall="30s"), "intervall"),
    ("ServiceMonitor", "misspelled metadata field (ObjectMeta is strict in CRDs too)",
     lambda d: d["metadata"].update(lables={"a": "b"}), "lables"),
    ("ScaledObject", "misspelled spec field",
     lambda d: d["spec"].update(maxReplicasCount=3), "maxReplicasCount"),
    ("ScaledObject", "string where an integer belongs",
     lambda d: d["spec"].update(minReplicaCount="one"), "/spec/minReplicaCount"),
    ("PrometheusRule", "misspelled rule field",
     lambda d: d["spec"]["groups"][0]["rules"][0].update(expresion="up"), "expresion"),
    ("PrometheusRule", "misspelled group field",
     lambda d: d["spec"]["groups"][0].update(intervall="1m"), "intervall"),
]


@pytest.mark.parametrize(("kind", "mutate", "shows"), [(k, m, s) for k, _, m, s in BROKEN],
                         ids=[f"{k}: {w}" for k, w, _, _ in BROKEN])
def test_a_broken_object_is_rejected(kind, mutate, shows):
    docs = _docs()
    target = _first(docs, kind)
    mutate(target)
    found = problems(dump(docs))
    assert found, f"kubeconform accepted a {kind} with a broken field"
    mine = [f for f in found if f.startswith(f"{kind} {target['metadata']['name']} ")]
    assert mine and shows in " ".join(mine), found


def test_a_kind_without_a_schema_is_an_error_not_a_skip():
    docs = [*_docs(), {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}]
    found = problems(dump(docs))
    assert any(f.startswith("Widget w ") and "could not find schema" in f for f in found), found


def test_int_or_string_and_quantities_accept_both_forms():
    docs = _docs()
    dep = _first(docs, "Deployment")
    container = _spec_containers(dep)[0]
    container["resources"] = {"requests": {"cpu": 1, "memory": "512Mi"}, "limits": {"cpu": 0.5}}
    svc = _first(docs, "Service")
    svc["spec"]["ports"][0]["targetPort"] = 8080
    assert not problems(dump(docs))


# (template, the line as it is, the misspelled line, sets that render it)
MISSPELLED_TEMPLATES = [
    ("worker-deployment.yaml", "imagePullPolicy:", "imagePullPolicyy:", ()),
    ("servicemonitor.yaml", "interval:", "intervall:", ("metrics.serviceMonitor.enabled=true",)),
    ("scaledobject.yaml", "pollingInterval:", "pollingIntervall:", ("worker.keda.enabled=true",)),
    ("prometheusrule.yaml", "interval:", "intervall:", ("metrics.prometheusRule.enabled=true",)),
]


@pytest.mark.parametrize(("template", "good", "bad", "sets"), MISSPELLED_TEMPLATES,
                         ids=[t for t, *_ in MISSPELLED_TEMPLATES])
def test_a_misspelled_template_field_fails_the_chart_check(tmp_path, template, good, bad, sets):
    assert not check((MINIMAL,), sets), "the unmodified chart must pass"
    chart = tmp_path / "prefstream"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / template
    text = path.read_text()
    assert good in text, f"{template} no longer has {good!r}: update this test"
    path.write_text(text.replace(good, bad, 1))
    found = check((MINIMAL,), sets, chart=chart)
    assert found and bad.rstrip(":") in " ".join(found), found
