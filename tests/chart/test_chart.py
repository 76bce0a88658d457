"""The Helm chart (helm/prefstream), checked with the real `helm` binary: lint, render, and the
rendered manifests parsed and inspected.

`helm` is built from the Go module proxy into .tools/bin/helm by `make helm`
(deploy/tools/helm.sh); without it these tests fail, they never skip.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from streamer.settings import Settings

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the `_yaml` guard below
    yaml = None  # type: ignore[assignment]

pytestmark = pytest.mark.chart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "prefstream"
CI_DIR = CHART / "ci"  # chart-testing (ct) location; .helmignore keeps it out of packages
HELM = ROOT / ".tools" / "bin" / "helm"
HELM_SCRIPT = ROOT / "deploy" / "tools" / "helm.sh"
RELEASE = "ps"
NAMESPACE = "prefstream-test"
CI_FILES = sorted(CI_DIR.glob("*-values.yaml"))
REQUIRED_CI = {"default", "vllm-gpu", "keda", "hpa", "existing-secret", "strimzi-k8ssandra"}
MINIMAL = CI_DIR / "default-values.yaml"

# Liveness must answer "is the process alive", never "are Kafka/Cassandra up" (an outage would
# become a restart storm). These are the endpoints that satisfy that, per container.
LIVENESS_PATHS = {"worker": "/livez", "api": "/livez", "vllm": "/health"}
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
# Settings the chart deliberately does not expose in `config`, and why.
NOT_IN_CONFIG = {
    "STREAMER_STORE": "Cassandra only in Kubernetes; SQLite is the embedded demo",
    "STREAMER_SQLITE_PATH": "SQLite is the embedded demo",
    "STREAMER_MODEL__BASE_URLS": "rendered from model.endpoints or the vLLM pool",
    "STREAMER_KAFKA__GROUP_INSTANCE_ID": "per pod: the pod name (worker.staticMembership)",
    "STREAMER_MAPPING__FILE": "a mounted file: from mapping.inline or mapping.existingConfigMap",
    **{f"STREAMER_{system}__SSL_{kind}FILE": f"a mounted file: from tls.{system.lower()}"
       for system in ("KAFKA", "CASSANDRA") for kind in ("CA", "CERT", "KEY")},
}
SECRET_ENV = {"STREAMER_MODEL__API_KEY", "STREAMER_CASSANDRA__PASSWORD", "STREAMER_API__TOKEN",
              "STREAMER_API__READ_TOKENS", "STREAMER_KAFKA__SASL_PASSWORD",
              "STREAMER_KAFKA__SSL_KEY_PASSWORD", "STREAMER_CASSANDRA__SSL_KEY_PASSWORD"}

_HELM_HOME = tempfile.mkdtemp(prefix="prefstream-helm-home-")
atexit.register(shutil.rmtree, _HELM_HOME, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _require_tools() -> None:
    if not HELM.exists():
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run `make helm` (builds helm from the "
                    "Go module proxy)", pytrace=False)
    if yaml is None:
        pytest.fail("PyYAML is not installed: add `pyyaml` to the dev extra of pyproject.toml",
                    pytrace=False)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    _require_tools()
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{_HELM_HOME}/cache",
        "HELM_CONFIG_HOME": f"{_HELM_HOME}/config",
        "HELM_DATA_HOME": f"{_HELM_HOME}/data",
        "KUBECONFIG": os.devnull,
    }
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)


def _template_args(values: tuple[Path, ...], sets: tuple[str, ...], chart: Path = CHART,
                   release: str = RELEASE, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["template", release, str(chart), "--namespace", NAMESPACE]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


@functools.cache
def render(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = (),
           release: str = RELEASE) -> tuple[dict, ...]:
    proc = helm(*_template_args(values, sets, release=release))
    if proc.returncode != 0:
        pytest.fail(f"helm template failed for {[v.name for v in values]} {list(sets)}:\n"
                    f"{proc.stderr}", pytrace=False)
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render_fails(values: tuple[Path, ...] = (MINIMAL,), sets: tuple[str, ...] = (),
                 extra: tuple[str, ...] = ()) -> str:
    proc = helm(*_template_args(values, sets, extra=extra))
    assert proc.returncode != 0, f"helm template should have failed for {list(sets)}"
    return proc.stderr


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@functools.cache
def chart_values() -> dict:
    _require_tools()
    return yaml.safe_load((CHART / "values.yaml").read_text())


def effective_values(values_file: Path) -> dict:
    return deep_merge(chart_values(), yaml.safe_load(values_file.read_text()) or {})


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def workload(docs, comp: str) -> dict:
    found = [d for d in of_kind(docs, "Deployment") if component(d) == comp]
    assert len(found) == 1, f"expected one {comp} Deployment, found {len(found)}"
    return found[0]


def pod_specs(docs):
    """(object, pod template metadata, pod spec) of every Deployment, Job and bare Pod."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["metadata"], d["spec"]


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def selector_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _is_secret(annotation: typing.Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


@functools.cache
def settings_env() -> dict[str, bool]:
    """Every STREAMER_* name that streamer.settings.Settings reads -> whether it is a secret."""
    names: dict[str, bool] = {}
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, subfield in ann.model_fields.items():
                names[f"STREAMER_{name.upper()}__{sub.upper()}"] = _is_secret(subfield.annotation)
        else:
            names[f"STREAMER_{name.upper()}"] = _is_secret(ann)
    return names


def camel_to_snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def config_map_data(docs) -> dict[str, str]:
    return named(docs, "ConfigMap", f"{RELEASE}-prefstream")["data"]


ci_params = pytest.mark.parametrize("values_file", CI_FILES, ids=[f.stem for f in CI_FILES])


# --------------------------------------------------------------------------- tool and files


def test_helm_binary_is_the_pinned_version():
    pinned = re.search(r'HELM_VERSION="\$\{HELM_VERSION:-(v[0-9.]+)\}"', HELM_SCRIPT.read_text())
    assert pinned, "deploy/tools/helm.sh must pin HELM_VERSION"
    proc = helm("version", "--template", "{{.Version}}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == pinned.group(1), (
        f".tools/bin/helm is {proc.stdout.strip()}, the pin is {pinned.group(1)}: run `make helm` "
        "(builds helm from the Go module proxy)")


def test_every_required_ci_values_file_exists():
    present = {f.name.removesuffix("-values.yaml") for f in CI_FILES}
    assert REQUIRED_CI <= present, f"missing helm/prefstream/ci files: {sorted(REQUIRED_CI - present)}"


def test_chart_metadata():
    _require_tools()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "prefstream"
    assert str(chart["appVersion"]) == "0.1.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["version"]))


# --------------------------------------------------------------------------- lint and render


@ci_params
def test_helm_lint_strict(values_file):
    proc = helm("lint", "--strict", str(CHART), "-f", str(values_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@ci_params
def test_renders_well_formed_objects(values_file):
    docs = render((values_file,))
    assert docs
    seen = set()
    for d in docs:
        assert d.get("apiVersion") and d.get("kind"), d
        name = d["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert d["metadata"].get("namespace") == NAMESPACE, name
        key = (d["kind"], name)
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


def test_names_stay_dns_labels_with_a_long_release_name():
    release = "a-really-long-release-name-for-testing-truncation-x"
    docs = render((MINIMAL,), ("vllm.enabled=true", "model.endpoints=null"), release=release)
    for d in docs:
        name = d["metadata"]["name"]
        assert len(name) <= 63 and not name.endswith("-"), name
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(kinds) == len(set(kinds))


@ci_params
def test_standard_labels_on_every_object_and_pod(values_file):
    docs = render((values_file,))
    for d in docs:
        labels = d["metadata"].get("labels") or {}
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{d['kind']} {d['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
    for obj, meta, _ in pod_specs(docs):
        missing = [k for k in STANDARD_LABELS if k not in (meta.get("labels") or {})]
        assert not missing, f"pods of {obj['metadata']['name']} lack {missing}"


@ci_params
def test_selectors_match_pod_labels(values_file):
    docs = render((values_file,))
    deployments = of_kind(docs, "Deployment")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for d in deployments:
        sel = d["spec"]["selector"]["matchLabels"]
        assert selector_matches(sel, pods[d["metadata"]["name"]])
        # selectors are immutable: nothing that changes between chart versions
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(sel), sel
        assert "app.kubernetes.io/component" in sel
        others = [n for n, labels in pods.items()
                  if n != d["metadata"]["name"] and selector_matches(sel, labels)]
        assert not others, f"{d['metadata']['name']} selector also matches {others}"

    def matching(sel: dict) -> list[str]:
        return [n for n, labels in pods.items() if selector_matches(sel, labels)]

    for svc in of_kind(docs, "Service"):
        assert len(matching(svc["spec"]["selector"])) == 1, svc["metadata"]["name"]
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        assert len(matching(pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]["name"]
    for np_ in of_kind(docs, "NetworkPolicy"):
        assert len(matching(np_["spec"]["podSelector"]["matchLabels"])) == 1
    services = {s["metadata"]["name"]: s["metadata"]["labels"] for s in of_kind(docs, "Service")}
    for sm in of_kind(docs, "ServiceMonitor"):
        hits = [n for n, labels in services.items()
                if selector_matches(sm["spec"]["selector"]["matchLabels"], labels)]
        assert len(hits) == 1, sm["metadata"]["name"]
        assert sm["spec"]["endpoints"][0]["port"] == "http"
    for scaler in of_kind(docs, "HorizontalPodAutoscaler") + of_kind(docs, "ScaledObject"):
        assert scaler["spec"]["scaleTargetRef"]["name"] in pods


@ci_params
def test_service_ports_target_named_container_ports(values_file):
    docs = render((values_file,))
    for svc in of_kind(docs, "Service"):
        dep = next(d for d in of_kind(docs, "Deployment")
                   if selector_matches(svc["spec"]["selector"],
                                       d["spec"]["template"]["metadata"]["labels"]))
        names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)


# --------------------------------------------------------------------------- probes and security


@ci_params
def test_probes_present_and_liveness_is_local(values_file):
    docs = render((values_file,))
    for d in of_kind(docs, "Deployment"):
        comp = component(d)
        for c in d["spec"]["template"]["spec"]["containers"]:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in c, f"{comp}/{c['name']} has no {probe}"
            live = c["livenessProbe"]
            assert "exec" not in live and "tcpSocket" not in live, live
            assert live["httpGet"]["path"] == LIVENESS_PATHS[comp], (comp, live)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            port = live["httpGet"]["port"]
            assert port in ports, f"liveness port {port!r} is not a port of {comp}"
            assert ports[port] not in (9092, 9093, 9042), "liveness must not hit Kafka/Cassandra"
            assert "host" not in live["httpGet"], "liveness must probe the container itself"
    values = effective_values(values_file)
    worker = workload(docs, "worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["ports"][0]["containerPort"] == values["config"]["webPort"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    if values["api"]["enabled"]:
        api = workload(docs, "api")["spec"]["template"]["spec"]["containers"][0]
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert api["ports"][0]["containerPort"] == values["config"]["api"]["port"]


@ci_params
def test_pods_are_locked_down(values_file):
    docs = render((values_file,))
    specs = list(pod_specs(docs))
    assert specs
    for obj, _, spec in specs:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, where
        assert psc.get("runAsUser", 10001) != 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            assert not sc.get("capabilities", {}).get("add"), f"{where}/{c['name']}"
            assert sc.get("privileged") in (None, False)
            tmp = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
            assert tmp, f"{where}/{c['name']} has no writable /tmp"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be an emptyDir"


def test_streamer_pods_run_as_the_image_uid_with_a_writable_working_dir():
    docs = render()
    checked = 0
    for _obj, _, spec in pod_specs(docs):
        for c in spec["containers"]:
            if not c["image"].startswith("prefstream:"):
                continue
            checked += 1
            assert spec["securityContext"]["runAsUser"] == 10001, "the image's USER"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            if "workingDir" in c:
                assert c["workingDir"] in mounts, "faust writes <group>-data into the cwd"
    assert checked >= 4  # worker, API, two hook Jobs


# --------------------------------------------------------------------------- vLLM and GPUs


def _gpu_requests(docs) -> dict[str, tuple]:
    found = {}
    for obj, _, spec in pod_specs(docs):
        for c in containers(spec):
            res = c.get("resources") or {}
            req = (res.get("requests") or {}).get("nvidia.com/gpu")
            lim = (res.get("limits") or {}).get("nvidia.com/gpu")
            if req or lim:
                found[f"{obj['metadata']['name']}/{c['name']}"] = (req, lim)
    return found


@ci_params
def test_gpu_requests_only_with_the_vllm_pool(values_file):
    docs = render((values_file,))
    gpus = _gpu_requests(docs)
    if effective_values(values_file)["vllm"]["enabled"]:
        assert list(gpus) == [f"{RELEASE}-prefstream-vllm/vllm"], gpus
        req, lim = gpus[f"{RELEASE}-prefstream-vllm/vllm"]
        assert req == lim and int(req) >= 1
    else:
        assert not gpus, gpus
        assert not [d for d in of_kind(docs, "Deployment") if component(d) == "vllm"]


@pytest.mark.parametrize("cache", ["pvc", "emptyDir"])
def test_vllm_pool_serves_the_model_behind_a_headless_service(cache):
    docs = render((MINIMAL,), ("vllm.enabled=true", "model.endpoints=null",
                               f"vllm.modelCache.type={cache}"))
    dep = workload(docs, "vllm")
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    cmd = c["command"] + c["args"]
    assert cmd[:3] == ["vllm", "serve", "VanillaH1/AlignXplore-Plus"]
    assert cmd[cmd.index("--max-model-len") + 1] == "16384"
    assert "--enable-prefix-caching" in cmd
    assert cmd[cmd.index("--port") + 1] == "8000"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    cache_vol = volumes["model-cache"]
    pvcs = of_kind(docs, "PersistentVolumeClaim")
    if cache == "pvc":
        assert cache_vol["persistentVolumeClaim"]["claimName"] == pvcs[0]["metadata"]["name"]
    else:
        assert "emptyDir" in cache_vol and not pvcs
    env = env_of(c)
    assert env["HF_HOME"]["value"].startswith("/models")
    svc = named(docs, "Service", f"{RELEASE}-prefstream-vllm")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 8000
    urls = json.loads(config_map_data(docs)["STREAMER_MODEL__BASE_URLS"])
    assert urls == [f"dns+http://{RELEASE}-prefstream-vllm.{NAMESPACE}.svc:8000/v1"]
    assert config_map_data(docs)["STREAMER_MODEL__CONTEXT_TOKENS"] == "16384"


def _vllm_args(sets: tuple[str, ...] = ()) -> list[str]:
    docs = render((MINIMAL,), ("vllm.enabled=true", "model.endpoints=null", *sets))
    return workload(docs, "vllm")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_vllm_pool_has_no_reasoning_parser_by_default():
    """The thinking stays inline (<think>...</think> in content); the worker reads that shape."""
    assert effective_values(MINIMAL)["vllm"]["reasoningParser"] == ""
    args = _vllm_args()
    assert not [a for a in args if a.startswith("--reasoning-parser")], args


def test_vllm_pool_reasoning_parser_splits_the_thinking_out():
    args = _vllm_args(("vllm.reasoningParser=qwen3",))
    assert args.count("--reasoning-parser") == 1
    assert args[args.index("--reasoning-parser") + 1] == "qwen3"
    assert args[0] == "VanillaH1/AlignXplore-Plus"
    proc = helm("lint", "--strict", str(CHART), "-f", str(CI_DIR / "vllm-gpu-values.yaml"),
                "--set", "vllm.reasoningParser=qwen3")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("extra", ["{--reasoning-parser,deepseek_r1}",
                                   "{--reasoning-parser=deepseek_r1}"])
def test_vllm_reasoning_parser_is_not_given_twice(extra):
    err = render_fails(sets=("vllm.enabled=true", "model.endpoints=null",
                             "vllm.reasoningParser=qwen3", f"vllm.extraArgs={extra}"))
    assert "vllm.reasoningParser is set and vllm.extraArgs has --reasoning-parser" in err, err
    # the parser in extraArgs alone is still passed through as it is
    args = _vllm_args((f"vllm.extraArgs={extra}",))
    assert args[-len(extra.strip("{}").split(",")):] == extra.strip("{}").split(",")


def test_external_model_endpoints_when_the_pool_is_off():
    docs = render()
    expected = effective_values(MINIMAL)["model"]["endpoints"]
    assert json.loads(config_map_data(docs)["STREAMER_MODEL__BASE_URLS"]) == expected
    assert not of_kind(docs, "PersistentVolumeClaim")


def test_vllm_context_must_match_the_worker_budget():
    err = render_fails(sets=("vllm.enabled=true", "model.endpoints=null", "vllm.maxModelLen=8192"))
    assert "vllm.maxModelLen" in err and "contextTokens" in err


# --------------------------------------------------------------------------- autoscaling


def _worker_scalers(docs):
    hpas = [h for h in of_kind(docs, "HorizontalPodAutoscaler") if component(h) == "worker"]
    return hpas, of_kind(docs, "ScaledObject")


@ci_params
def test_at_most_one_worker_autoscaler(values_file):
    docs = render((values_file,))
    hpas, scaled = _worker_scalers(docs)
    assert len(hpas) + len(scaled) <= 1
    values = effective_values(values_file)["worker"]
    assert bool(hpas) == values["autoscaling"]["enabled"]
    assert bool(scaled) == values["keda"]["enabled"]
    replicas = workload(docs, "worker")["spec"].get("replicas")
    if hpas or scaled:
        assert replicas is None, "an autoscaled Deployment must not pin replicas"
    else:
        assert replicas == values["replicaCount"]


def test_keda_scales_the_worker_on_consumer_lag():
    docs = render((CI_DIR / "keda-values.yaml",))
    (so,) = of_kind(docs, "ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    cfg = config_map_data(docs)
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == cfg["STREAMER_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == cfg["STREAMER_KAFKA__CONSUMER_GROUP"]
    assert meta["topic"] == cfg["STREAMER_KAFKA__INPUT_TOPIC"]
    assert int(meta["lagThreshold"]) > 0
    assert so["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-prefstream-worker"


def test_hpa_scales_on_cpu():
    docs = render((CI_DIR / "hpa-values.yaml",))
    hpas = {component(h): h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"worker", "api"}
    metric = hpas["worker"]["spec"]["metrics"][0]
    assert metric["resource"]["name"] == "cpu"
    assert hpas["worker"]["apiVersion"] == "autoscaling/v2"


def test_both_worker_autoscalers_fail_rendering():
    both = ("worker.autoscaling.enabled=true", "worker.keda.enabled=true")
    err = render_fails(sets=both)
    assert "keda" in err and "enabled" in err, err
    # without the schema, the template's own check says it in words
    err = render_fails(sets=both, extra=("--skip-schema-validation",))
    assert "enable one autoscaler only" in err, err


# --------------------------------------------------------------------------- schema


SCHEMA_REJECTIONS = [
    ("worker.replicaCount=-1", "/worker/replicaCount"),
    ("worker.replicaCount=two", "/worker/replicaCount"),
    ("api.replicaCount=-3", "/api/replicaCount"),
    ("vllm.replicaCount=-1", "/vllm/replicaCount"),
    ("replicaCount=1", "replicaCount"),
    ("config.logLevel=TRACE", "/config/logLevel"),
    ("config.webPort=70000", "/config/webPort"),
    ("config.kafka.partitions=0", "/config/kafka/partitions"),
    ("config.kafka.bootstrapServers=", "/config/kafka/bootstrapServers"),
    ("config.kafka.bootstrapServers=no-port-here", "/config/kafka/bootstrapServers"),
    ("config.kafka.inputTopic=bad topic", "/config/kafka/inputTopic"),
    ("config.cassandra.hosts=null", "/config/cassandra"),
    ("config.model.engine=gpt", "/config/model/engine"),
    ("config.model.apiKey=sk-123", "apiKey"),
    ("config.cassandra.password=hunter2", "password"),
    ("config.model.baseUrls={http://x:8000/v1}", "baseUrls"),
    ("config.window.ratingThreshold=1.5", "/config/window/ratingThreshold"),
    ("config.model.reasoning=sometimes", "/config/model/reasoning"),
    ("config.model.minP=2", "/config/model/minP"),
    ("config.model.minP=low", "/config/model/minP"),
    ("config.model.repetitionPenalty=0", "/config/model/repetitionPenalty"),
    ("config.model.dialect=tgi", "/config/model/dialect"),
    ("config.model.selfCheck=maybe", "/config/model/selfCheck"),
    ("config.model.routing=random", "/config/model/routing"),
    ("config.model.loadIntervalS=0", "/config/model/loadIntervalS"),
    ("config.model.affinity=session", "/config/model/affinity"),
    ("config.model.extraBody=seed", "/config/model/extraBody"),
    ("vllm.reasoningParser=Qwen 3", "/vllm/reasoningParser"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("model.endpoints={ftp://x/v1}", "/model/endpoints"),
    ("vllm.gpu.count=0", "/vllm/gpu/count"),
    ("vllm.modelCache.type=hostPath", "/vllm/modelCache/type"),
    ("worker.keda.lagThreshold=lots", "/worker/keda/lagThreshold"),
    ("worker.livenessProbe.periodSeconds=0", "/worker/livenessProbe/periodSeconds"),
    ("worker.autoscaling.enabled=yes", "/worker/autoscaling/enabled"),
    ("worker.autoscaling.enabled=true,worker.keda.enabled=true", "/worker/keda/enabled"),
    ("existingSecret=Not_A_Name", "/existingSecret"),
]


@pytest.mark.parametrize("assignment,where", SCHEMA_REJECTIONS, ids=[a for a, _ in SCHEMA_REJECTIONS])
def test_schema_rejects_invalid_values(assignment, where):
    err = render_fails(sets=(assignment,))
    assert "schema" in err, err
    assert where in err, err


def test_string_numbers_are_rejected():
    proc = helm(*_template_args((MINIMAL,), ()), "--set-string", "config.kafka.partitions=8")
    assert proc.returncode != 0 and "/config/kafka/partitions" in proc.stderr


def test_missing_kafka_bootstrap_fails_with_a_clear_message():
    proc = helm("template", RELEASE, str(CHART))
    assert proc.returncode != 0
    assert "/config/kafka/bootstrapServers" in proc.stderr
    assert "/config/cassandra/hosts" in proc.stderr
    proc = helm("template", RELEASE, str(CHART), "--skip-schema-validation")
    assert proc.returncode != 0
    assert "config.kafka.bootstrapServers is required" in proc.stderr


def test_model_endpoints_required_without_the_pool():
    err = render_fails(sets=("model.endpoints=null",))
    assert "model.endpoints is empty and vllm.enabled is false" in err
    render((MINIMAL,), ("model.endpoints=null", "config.model.engine=baseline"))


def test_schema_is_valid_draft7_and_accepts_the_defaults():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for f in CI_FILES:
        errors = [e.message for e in validator.iter_errors(effective_values(f))]
        assert not errors, (f.name, errors)


def test_schema_lists_every_values_key():
    """values.yaml and values.schema.json describe the same keys (the schema forbids extras)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict, node: dict, path: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties")
        if props is None:
            return
        for key, value in values.items():
            assert key in props, f"values.yaml key {path}{key} is not in values.schema.json"
            if isinstance(value, dict):
                walk(value, props[key], f"{path}{key}.")

    walk(chart_values(), schema, "")


# --------------------------------------------------------------------------- configuration


@ci_params
def test_config_map_holds_only_real_settings(values_file):
    docs = render((values_file,))
    data = config_map_data(docs)
    known = settings_env()
    unknown = sorted(set(data) - set(known))
    assert not unknown, f"ConfigMap keys that streamer.settings.Settings does not read: {unknown}"
    leaked = sorted(k for k in data if known[k])
    assert not leaked, f"secrets rendered into the ConfigMap: {leaked}"
    assert all(isinstance(v, str) for v in data.values())


@ci_params
def test_config_map_parses_as_settings(values_file, monkeypatch):
    """The worker's rendered environment is what pydantic-settings accepts (JSON lists, integer
    formats, complete connection security): the ConfigMap, plus the pod's own env (mounted file
    paths; a placeholder for each Secret reference)."""
    docs = render((values_file,))
    data = config_map_data(docs)
    for name, entry in env_of(_container(docs, "worker")).items():
        if "value" in entry:
            data[name] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            data[name] = f"from-secret-{ref['name']}-{ref['key']}"
    for key in list(os.environ):
        if key.startswith("STREAMER_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    values = effective_values(values_file)["config"]
    assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrapServers"]
    assert settings.cassandra.hosts == values["cassandra"]["hosts"]
    assert settings.kafka.max_message_bytes == values["kafka"]["maxMessageBytes"]
    assert settings.model.context_tokens == values["model"]["contextTokens"]
    assert settings.model.base_urls == json.loads(data["STREAMER_MODEL__BASE_URLS"])


def _settings_from(data: dict[str, str], monkeypatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("STREAMER_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    return Settings()


# Model settings without a chart default: `config.model.<key>` -> (env name, a value, how the
# ConfigMap renders it, what the worker reads). The chart leaves them out unless set, so the app
# default applies. (Given in a values file: `--set` keeps 0.05 a string, the schema wants a number.)
MODEL_SETTINGS = {
    "reasoning": ("STREAMER_MODEL__REASONING", "optional", "optional", "optional"),
    "minP": ("STREAMER_MODEL__MIN_P", 0.05, "0.05", 0.05),
    "repetitionPenalty": ("STREAMER_MODEL__REPETITION_PENALTY", 1.1, "1.1", 1.1),
    "dialect": ("STREAMER_MODEL__DIALECT", "llamacpp", "llamacpp", "llamacpp"),
    "selfCheck": ("STREAMER_MODEL__SELF_CHECK", False, "false", False),
    "routing": ("STREAMER_MODEL__ROUTING", "outstanding", "outstanding", "outstanding"),
    "loadIntervalS": ("STREAMER_MODEL__LOAD_INTERVAL_S", 0.5, "0.5", 0.5),
    "affinity": ("STREAMER_MODEL__AFFINITY", "user", "user", "user"),
    "extraBody": ("STREAMER_MODEL__EXTRA_BODY", {"seed": 7, "grammar": "root ::= [a-z]+"},
                  '{"grammar":"root ::= [a-z]+","seed":7}', {"seed": 7, "grammar": "root ::= [a-z]+"}),
}


def _with_model(tmp_path: Path, **model) -> tuple[dict, ...]:
    values = tmp_path / "model-values.yaml"
    values.write_text(yaml.safe_dump({"config": {"model": model}}))
    return render((MINIMAL, values))


def test_model_settings_default_to_the_app_defaults(monkeypatch):
    data = config_map_data(render())
    assert not {env for env, *_ in MODEL_SETTINGS.values()} & set(data)
    model = _settings_from(data, monkeypatch).model
    assert (model.reasoning, model.min_p, model.repetition_penalty, model.dialect,
            model.self_check, model.routing, model.load_interval_s, model.affinity,
            model.extra_body) == ("required", 0.0, 1.0, "auto", True, "load", 1.0, "none", {})


@pytest.mark.parametrize("key", list(MODEL_SETTINGS))
def test_model_settings_render_into_the_worker_config(key, tmp_path, monkeypatch):
    env, value, rendered, expected = MODEL_SETTINGS[key]
    docs = _with_model(tmp_path, **{key: value})
    data = config_map_data(docs)
    assert data[env] == rendered
    assert named(docs, "ConfigMap", f"{RELEASE}-prefstream-hooks")["data"][env] == rendered
    worker = _container(docs, "worker")
    assert {"configMapRef": {"name": f"{RELEASE}-prefstream"}} in worker["envFrom"]
    model = _settings_from(data, monkeypatch).model
    assert getattr(model, camel_to_snake(key)) == expected


@pytest.mark.parametrize("key,value,limit", [
    ("minP", 1.5, "maximum: got 1.5, want 1"), ("minP", -0.1, "minimum: got -0.1, want 0"),
    ("repetitionPenalty", 0.0, "exclusiveMinimum: got 0, want 0"),
    ("repetitionPenalty", -1.2, "exclusiveMinimum: got -1.2, want 0"),
    ("loadIntervalS", 0.0, "exclusiveMinimum: got 0, want 0"),
    ("loadIntervalS", -0.5, "exclusiveMinimum: got -0.5, want 0"),
], ids=lambda v: str(v))
def test_schema_rejects_model_numbers_beyond_their_limits(key, value, limit, tmp_path):
    """Floats given as numbers (a values file), so it is the limit that rejects them, not the type."""
    values = tmp_path / "model-values.yaml"
    values.write_text(yaml.safe_dump({"config": {"model": {key: value}}}))
    err = render_fails(values=(MINIMAL, values))
    assert "schema" in err, err
    assert f"at '/config/model/{key}': {limit}" in err, err


@pytest.mark.parametrize("key,value", [
    ("minP", 0), ("minP", 1), ("minP", 0.0), ("repetitionPenalty", 0.01),
    ("loadIntervalS", 0.001), ("selfCheck", True), ("dialect", "auto"), ("dialect", "vllm"),
    ("dialect", "sglang"), ("dialect", "openai"), ("routing", "load"), ("affinity", "none"),
    ("reasoning", "required"),
], ids=lambda v: str(v))
def test_model_settings_accepted_at_their_limits_and_every_choice(key, value, tmp_path,
                                                                 monkeypatch):
    data = config_map_data(_with_model(tmp_path, **{key: value}))
    model = _settings_from(data, monkeypatch).model  # the worker takes what the schema lets by
    assert getattr(model, camel_to_snake(key)) == value


@ci_params
def test_every_streamer_env_name_in_the_manifests_is_a_setting(values_file):
    docs = render((values_file,))
    known = settings_env()
    for obj, _, spec in pod_specs(docs):
        for c in containers(spec):
            for name in env_of(c):
                if name.startswith("STREAMER_"):
                    assert name in known, f"{obj['metadata']['name']}/{c['name']}: {name}"
    for secret in of_kind(docs, "Secret"):
        for key in {**secret.get("data", {}), **secret.get("stringData", {})}:
            assert key in known and known[key], f"Secret key {key} is not a secret setting"


def test_chart_config_covers_every_setting():
    """Each Settings field is settable through `config` (or deliberately elsewhere), and every
    `config` key of the schema is a real field: a new setting shows up here until the chart
    exposes it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]["config"]["properties"]
    exposed = set()
    for key, node in props.items():
        if node.get("type") == "object" and "properties" in node:
            exposed |= {f"STREAMER_{camel_to_snake(key).upper()}__{camel_to_snake(k).upper()}"
                        for k in node["properties"]}
        else:
            exposed.add(f"STREAMER_{camel_to_snake(key).upper()}")
    known = settings_env()
    assert not exposed - set(known), f"schema config keys that are no setting: {exposed - set(known)}"
    secrets = {k for k, secret in known.items() if secret}
    assert secrets == SECRET_ENV, "a new secret setting needs Secret wiring in the chart"
    missing = set(known) - exposed - secrets - set(NOT_IN_CONFIG)
    assert not missing, f"settings the chart cannot set (add them to values.schema.json): {missing}"


# --------------------------------------------------------------------------- secrets


def _secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    return {name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for name, e in env_of(container).items() if "secretKeyRef" in e.get("valueFrom", {})}


def _container(docs, comp: str) -> dict:
    return workload(docs, comp)["spec"]["template"]["spec"]["containers"][0]


def _job_container(docs, comp: str) -> dict:
    (job,) = [j for j in of_kind(docs, "Job") if component(j) == comp]
    return job["spec"]["template"]["spec"]["containers"][0]


def test_existing_secret_is_wired_and_no_secret_is_rendered():
    docs = render((CI_DIR / "existing-secret-values.yaml",))
    assert not of_kind(docs, "Secret")
    name = "prefstream-credentials"
    assert _secret_refs(_container(docs, "worker")) == {
        "STREAMER_MODEL__API_KEY": (name, "STREAMER_MODEL__API_KEY"),
        "STREAMER_CASSANDRA__PASSWORD": (name, "STREAMER_CASSANDRA__PASSWORD"),
    }
    assert _secret_refs(_container(docs, "api")) == {
        "STREAMER_CASSANDRA__PASSWORD": (name, "STREAMER_CASSANDRA__PASSWORD"),
        "STREAMER_API__TOKEN": (name, "STREAMER_API__TOKEN"),
        "STREAMER_API__READ_TOKENS": (name, "STREAMER_API__READ_TOKENS"),
    }
    assert _secret_refs(_job_container(docs, "migrate")) == {
        "STREAMER_CASSANDRA__PASSWORD": (name, "STREAMER_CASSANDRA__PASSWORD"),
    }
    assert _secret_refs(_job_container(docs, "topics")) == {}
    assert config_map_data(docs)["STREAMER_CASSANDRA__USERNAME"] == "prefstream"


def test_existing_secret_custom_keys_and_skipped_keys():
    docs = render((CI_DIR / "existing-secret-values.yaml",),
                  ("existingSecretKeys.modelApiKey=", "existingSecretKeys.apiToken=api-token"))
    assert "STREAMER_MODEL__API_KEY" not in _secret_refs(_container(docs, "worker"))
    assert _secret_refs(_container(docs, "api"))["STREAMER_API__TOKEN"] == (
        "prefstream-credentials", "api-token")


def test_chart_managed_secret_when_values_are_given():
    docs = render((MINIMAL,), ("secrets.modelApiKey=mk", "secrets.cassandraPassword=cp",
                               "secrets.apiToken=at", "secrets.apiReadTokens=r1\\,r2"))
    secret = named(docs, "Secret", f"{RELEASE}-prefstream")
    assert secret["stringData"] == {"STREAMER_MODEL__API_KEY": "mk",
                                    "STREAMER_CASSANDRA__PASSWORD": "cp",
                                    "STREAMER_API__TOKEN": "at",
                                    "STREAMER_API__READ_TOKENS": "r1,r2"}
    assert _secret_refs(_container(docs, "api"))["STREAMER_API__READ_TOKENS"] == (
        f"{RELEASE}-prefstream", "STREAMER_API__READ_TOKENS")
    assert "STREAMER_API__READ_TOKENS" not in _secret_refs(_container(docs, "worker"))
    refs = _secret_refs(_container(docs, "worker"))
    assert refs["STREAMER_MODEL__API_KEY"] == (f"{RELEASE}-prefstream", "STREAMER_MODEL__API_KEY")
    pod = workload(docs, "worker")["spec"]["template"]["metadata"]
    assert "checksum/secret" in pod["annotations"] and "checksum/config" in pod["annotations"]
    # the migrate hook runs before the release's Secret exists: it reads a hook-scoped copy
    hook_secret = named(docs, "Secret", f"{RELEASE}-prefstream-hooks")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert _secret_refs(_job_container(docs, "migrate"))["STREAMER_CASSANDRA__PASSWORD"][0] == \
        f"{RELEASE}-prefstream-hooks"


def test_no_secret_without_values():
    docs = render()
    assert not of_kind(docs, "Secret")
    for comp in ("worker", "api"):
        assert _secret_refs(_container(docs, comp)) == {}


def test_existing_secret_and_inline_secrets_conflict():
    err = render_fails(sets=("existingSecret=creds", "secrets.apiToken=x"))
    assert "use one or the other" in err


def test_k8ssandra_superuser_secret_supplies_cassandra_credentials():
    docs = render((CI_DIR / "strimzi-k8ssandra-values.yaml",))
    for container in (_container(docs, "worker"), _container(docs, "api"),
                      _job_container(docs, "migrate")):
        refs = _secret_refs(container)
        assert refs["STREAMER_CASSANDRA__USERNAME"] == ("demo-superuser", "username")
        assert refs["STREAMER_CASSANDRA__PASSWORD"] == ("demo-superuser", "password")
    data = config_map_data(docs)
    assert data["STREAMER_KAFKA__BOOTSTRAP_SERVERS"] == "events-kafka-bootstrap.kafka.svc:9092"
    assert data["STREAMER_CASSANDRA__LOCAL_DC"] == "dc1"


# --------------------------------------------------------------------------- hooks


HOOK_ARGS = {"migrate": ["migrate"], "topics": ["topics", "ensure"]}


@ci_params
def test_hook_jobs_run_migrate_and_topics_before_install_and_upgrade(values_file):
    docs = render((values_file,))
    jobs = {component(j): j for j in of_kind(docs, "Job")}
    assert set(jobs) == set(HOOK_ARGS)
    hook_objects = {(d["kind"], d["metadata"]["name"]): d for d in docs
                    if "helm.sh/hook" in (d["metadata"].get("annotations") or {})}
    for comp, job in jobs.items():
        ann = job["metadata"]["annotations"]
        assert set(ann["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        c = spec["containers"][0]
        assert c["args"] == HOOK_ARGS[comp]
        assert c["image"] == _container(docs, "worker")["image"]
        # everything a pre-install Job references must exist before the release's objects do
        assert "serviceAccountName" not in spec or spec["serviceAccountName"] != \
            f"{RELEASE}-prefstream", "the chart's ServiceAccount does not exist at pre-install"
        for src in c.get("envFrom", []):
            ref = ("ConfigMap", src["configMapRef"]["name"])
            assert ref in hook_objects, f"{comp} Job reads {ref}, which is not a hook"
            weight = int(hook_objects[ref]["metadata"]["annotations"]["helm.sh/hook-weight"])
            assert weight < int(ann.get("helm.sh/hook-weight", "0"))
        rendered_secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
        for name, (secret, _) in _secret_refs(c).items():
            if secret in rendered_secrets:  # a Secret of this chart, not an existing one
                assert ("Secret", secret) in hook_objects, f"{comp}: {name} from a non-hook Secret"


def test_hooks_can_be_switched_off():
    docs = render((MINIMAL,), ("hooks.migrate.enabled=false", "hooks.topics.enabled=false"))
    assert not of_kind(docs, "Job")
    assert not [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})
                and d["kind"] != "Pod"]


def test_hook_config_matches_the_release_config():
    docs = render()
    hook = named(docs, "ConfigMap", f"{RELEASE}-prefstream-hooks")
    assert hook["data"] == config_map_data(docs)


# --------------------------------------------------------------------------- the rest


@ci_params
def test_pod_disruption_budgets(values_file):
    docs = render((values_file,))
    pdbs = {component(p): p for p in of_kind(docs, "PodDisruptionBudget")}
    expected = {"worker"} | ({"api"} if effective_values(values_file)["api"]["enabled"] else set())
    expected |= {"vllm"} if effective_values(values_file)["vllm"]["enabled"] else set()
    assert set(pdbs) == expected
    for pdb in pdbs.values():
        assert ("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"])


def test_pdb_min_available_replaces_max_unavailable():
    docs = render((MINIMAL,), ("worker.pdb.minAvailable=1",))
    pdb = [p for p in of_kind(docs, "PodDisruptionBudget") if component(p) == "worker"][0]
    assert pdb["spec"] == {**pdb["spec"], "minAvailable": 1} and "maxUnavailable" not in pdb["spec"]


def test_service_monitors():
    docs = render((CI_DIR / "vllm-gpu-values.yaml",))
    monitors = {component(m): m for m in of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"api", "worker", "vllm"}
    for m in monitors.values():
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert m["spec"]["endpoints"][0]["path"] == "/metrics"
    assert not of_kind(render(), "ServiceMonitor")
    docs = render((MINIMAL,), ("metrics.serviceMonitor.enabled=true",))
    assert {component(m) for m in of_kind(docs, "ServiceMonitor")} == {"api", "worker"}
    worker_svc = named(docs, "Service", f"{RELEASE}-prefstream-worker")
    assert worker_svc["spec"]["clusterIP"] == "None"
    docs = render((MINIMAL,), ("metrics.serviceMonitor.enabled=true",
                               "metrics.serviceMonitor.worker.enabled=false"))
    assert {component(m) for m in of_kind(docs, "ServiceMonitor")} == {"api"}


def test_network_policies_default_and_restricted():
    docs = render()
    policies = {component(p): p for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"worker", "api"}
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies.values())
    # external ingress is denied by default except to the API
    assert "from" not in policies["api"]["spec"]["ingress"][0]
    assert policies["worker"]["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {f"{RELEASE}-prefstream-client": "true"}}}]
    docs = render((MINIMAL,), ("networkPolicy.ingressNSMatchLabels.name=monitoring",))
    worker = next(p for p in of_kind(docs, "NetworkPolicy") if component(p) == "worker")
    assert {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}} in \
        worker["spec"]["ingress"][0]["from"]

    docs = render((CI_DIR / "existing-secret-values.yaml",))
    for p in of_kind(docs, "NetworkPolicy"):
        assert "Egress" in p["spec"]["policyTypes"]
        ports = [port["port"] for rule in p["spec"]["egress"] for port in rule.get("ports", [])]
        assert 53 in ports and 9092 in ports and 9042 in ports
        if component(p) == "api":
            sources = p["spec"]["ingress"][0]["from"]
            assert {"podSelector": {"matchLabels": {f"{RELEASE}-prefstream-client": "true"}}} \
                in sources

    docs = render((MINIMAL,), ("vllm.enabled=true", "model.endpoints=null"))
    vllm = [p for p in of_kind(docs, "NetworkPolicy") if component(p) == "vllm"][0]
    (src,) = vllm["spec"]["ingress"][0]["from"]
    assert src["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"


def test_api_can_be_disabled():
    docs = render((MINIMAL,), ("api.enabled=false",))
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component")
                in ("api", "test")]


def test_api_runs_the_api_command():
    c = _container(render(), "api")
    assert c["args"] == ["api"]
    assert _container(render(), "worker")["args"] == ["worker"]


def test_image_tag_defaults_to_app_version_and_digest_wins():
    assert _container(render(), "worker")["image"] == "prefstream:0.1.0"
    digest = "sha256:" + "a" * 64
    docs = render((MINIMAL,), ("image.registry=ghcr.io/acme", f"image.digest={digest}"))
    assert _container(docs, "worker")["image"] == f"ghcr.io/acme/prefstream@{digest}"


@ci_params
def test_notes_render(values_file, tmp_path):
    """NOTES.txt is not part of `helm template` output: render it through a copy of the chart."""
    chart = tmp_path / "prefstream"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n')
    proc = helm(*_template_args((values_file,), (), chart=chart),
                "--show-only", "templates/zz-notes.yaml")
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["notes"]
    values = effective_values(values_file)
    assert values["config"]["kafka"]["inputTopic"] in notes
    if values["api"]["enabled"]:
        assert "/readyz" in notes


def test_worker_static_membership_uses_the_pod_name():
    env = env_of(_container(render(), "worker"))
    ref = env["STREAMER_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert ref == "metadata.name"
    off = env_of(_container(render(sets=("worker.staticMembership=false",)), "worker"))
    assert "STREAMER_KAFKA__GROUP_INSTANCE_ID" not in off


# --------------------------------------------------------------------------- quality score


def test_quality_score_is_on_by_default_and_its_knobs_render():
    data = config_map_data(render())
    assert data["STREAMER_QUALITY__SAMPLE_RATE"] == "1"
    data = config_map_data(render(sets=(
        "config.quality.sampleRate=0", "config.quality.judgeModel=baseline",
        "config.quality.maxPairs=4", "config.quality.keepTriples=false")))
    assert (data["STREAMER_QUALITY__SAMPLE_RATE"], data["STREAMER_QUALITY__JUDGE_MODEL"],
            data["STREAMER_QUALITY__MAX_PAIRS"], data["STREAMER_QUALITY__KEEP_TRIPLES"]) == (
        "0", "baseline", "4", "false")


@pytest.mark.parametrize("bad", ["config.quality.sampleRate=2", "config.quality.maxPairs=0",
                                 "config.quality.judgeUrls={ftp://x}"])
def test_quality_score_limits_are_in_the_schema(bad):
    assert "/config/quality/" in render_fails(sets=(bad,))


# --------------------------------------------------------------------------- ways in


def test_a_mapping_file_is_mounted_into_the_worker_from_inline_text_or_a_configmap(tmp_path):
    text = (ROOT / "deploy" / "mappings" / "segment-ecommerce.yaml").read_text()
    values = tmp_path / "mapping-values.yaml"
    values.write_text(yaml.safe_dump({"mapping": {"inline": text}}))
    docs = render((MINIMAL, values))
    cm = named(docs, "ConfigMap", f"{RELEASE}-prefstream-mapping")
    assert yaml.safe_load(cm["data"]["mapping.yaml"]) == yaml.safe_load(text)
    worker = workload(docs, "worker")
    pod = worker["spec"]["template"]
    container = _container(docs, "worker")
    path = env_of(container)["STREAMER_MAPPING__FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "mapping")
    assert path == f"{mount['mountPath']}/mapping.yaml" and mount["readOnly"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "mapping")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert "checksum/mapping" in pod["metadata"]["annotations"]  # a changed mapping rolls pods
    assert "STREAMER_MAPPING__FILE" not in env_of(_container(render(), "api"))

    own = render(sets=("mapping.existingConfigMap=our-mappings", "mapping.key=segment.yaml"))
    assert not [d for d in of_kind(own, "ConfigMap") if d["metadata"]["name"].endswith("mapping")]
    pod = workload(own, "worker")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "mapping")
    assert volume["configMap"] == {"name": "our-mappings",
                                   "items": [{"key": "segment.yaml", "path": "segment.yaml"}]}
    assert env_of(_container(own, "worker"))["STREAMER_MAPPING__FILE"]["value"].endswith(
        "/segment.yaml")
    plain = _container(render(), "worker")
    assert "STREAMER_MAPPING__FILE" not in env_of(plain)
    assert all(m["name"] != "mapping" for m in plain.get("volumeMounts", []))


def test_the_catalog_settings_render():
    data = config_map_data(render(sets=("config.catalog.enabled=true", "config.catalog.graceS=60")))
    assert (data["STREAMER_CATALOG__ENABLED"], data["STREAMER_CATALOG__TOPIC"],
            data["STREAMER_CATALOG__GRACE_S"]) == ("true", "profiles.items.v1", "60")


@ci_params
def test_every_inline_mapping_of_the_ci_values_is_a_valid_mapping(values_file):
    from streamer.domain.mapping import parse_mapping

    inline = effective_values(values_file)["mapping"]["inline"]
    if inline:
        assert parse_mapping(yaml.safe_load(inline), source=values_file.name).rules


# --------------------------------------------------------------------------- connection security


def _volumes(docs, comp: str, job: bool = False) -> dict[str, dict]:
    kinds = of_kind(docs, "Job") if job else of_kind(docs, "Deployment")
    (obj,) = [d for d in kinds if component(d) == comp]
    return {v["name"]: v for v in obj["spec"]["template"]["spec"].get("volumes", [])}


def _plain_env(container: dict) -> dict[str, str]:
    return {n: e["value"] for n, e in env_of(container).items() if "value" in e}


def test_tls_and_sasl_from_secrets_reach_every_component_that_connects():
    docs = render((CI_DIR / "secure-connections-values.yaml",))
    data = config_map_data(docs)
    assert data["STREAMER_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["STREAMER_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["STREAMER_KAFKA__SASL_USERNAME"] == "prefstream"
    assert data["STREAMER_CASSANDRA__SSL_ENABLED"] == "true"
    assert not of_kind(docs, "Secret")  # everything comes from Secrets made elsewhere
    kafka_env = {"STREAMER_KAFKA__SSL_CAFILE": "/etc/prefstream/tls/kafka/ca.crt"}
    cassandra_env = {"STREAMER_CASSANDRA__SSL_CAFILE": "/etc/prefstream/tls/cassandra/ca.crt",
                     "STREAMER_CASSANDRA__SSL_CERTFILE": "/etc/prefstream/tls/cassandra/tls.crt",
                     "STREAMER_CASSANDRA__SSL_KEYFILE": "/etc/prefstream/tls/cassandra/tls.key"}
    containers_of = {"worker": _container(docs, "worker"), "api": _container(docs, "api"),
                     "migrate": _job_container(docs, "migrate"),
                     "topics": _job_container(docs, "topics")}
    for comp, container in containers_of.items():
        refs = _secret_refs(container)
        uses_kafka, uses_cassandra = comp != "migrate", comp != "topics"
        assert (refs.get("STREAMER_KAFKA__SASL_PASSWORD") == ("prefstream", "password")) \
            is uses_kafka, comp
        assert "STREAMER_KAFKA__SASL_USERNAME" not in refs  # from config.kafka.saslUsername
        assert (refs.get("STREAMER_CASSANDRA__PASSWORD") == ("demo-superuser", "password")) \
            is uses_cassandra, comp
        env = _plain_env(container)
        assert {**kafka_env, **cassandra_env}.items() <= env.items(), comp
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls-kafka"]["mountPath"] == "/etc/prefstream/tls/kafka"
        assert mounts["tls-cassandra"]["readOnly"] is True
        volumes = _volumes(docs, comp, job=comp in ("migrate", "topics"))
        assert volumes["tls-kafka"]["secret"]["secretName"] == "events-cluster-ca-cert"
        assert volumes["tls-cassandra"]["secret"] == {"secretName": "demo-client-tls",
                                                      "defaultMode": 0o440}


def test_chart_managed_connection_secrets_and_hook_copy():
    docs = render((MINIMAL,), ("config.kafka.securityProtocol=SASL_SSL",
                               "config.kafka.saslUsername=svc", "secrets.kafkaSaslPassword=kp",
                               "secrets.cassandraPassword=cp",
                               "secrets.cassandraSslKeyPassword=ckp",
                               "config.cassandra.sslEnabled=true"))
    secret = named(docs, "Secret", f"{RELEASE}-prefstream")["stringData"]
    assert secret == {"STREAMER_KAFKA__SASL_PASSWORD": "kp", "STREAMER_CASSANDRA__PASSWORD": "cp",
                      "STREAMER_CASSANDRA__SSL_KEY_PASSWORD": "ckp"}
    hook = named(docs, "Secret", f"{RELEASE}-prefstream-hooks")["stringData"]
    assert hook == secret  # topics needs the Kafka password, migrate the Cassandra ones
    hooks = f"{RELEASE}-prefstream-hooks"
    assert _secret_refs(_job_container(docs, "topics")) == {
        "STREAMER_KAFKA__SASL_PASSWORD": (hooks, "STREAMER_KAFKA__SASL_PASSWORD")}
    assert set(_secret_refs(_job_container(docs, "migrate"))) == {
        "STREAMER_CASSANDRA__PASSWORD", "STREAMER_CASSANDRA__SSL_KEY_PASSWORD"}
    worker = _secret_refs(_container(docs, "worker"))
    assert worker["STREAMER_KAFKA__SASL_PASSWORD"] == (f"{RELEASE}-prefstream",
                                                       "STREAMER_KAFKA__SASL_PASSWORD")
    # no TLS Secret given: nothing mounted, the system trust store is used
    assert "tls-kafka" not in _volumes(docs, "worker")


def test_existing_secret_keys_for_connections_are_opt_in():
    base = render((CI_DIR / "existing-secret-values.yaml",))
    assert "STREAMER_KAFKA__SASL_PASSWORD" not in _secret_refs(_container(base, "worker"))
    docs = render((CI_DIR / "existing-secret-values.yaml",),
                  ("config.kafka.securityProtocol=SASL_SSL", "config.kafka.saslUsername=svc",
                   "existingSecretKeys.kafkaSaslPassword=kafka-password"))
    for comp in ("worker", "api"):
        assert _secret_refs(_container(docs, comp))["STREAMER_KAFKA__SASL_PASSWORD"] == (
            "prefstream-credentials", "kafka-password")
    assert _secret_refs(_job_container(docs, "topics")) == {
        "STREAMER_KAFKA__SASL_PASSWORD": ("prefstream-credentials", "kafka-password")}


@pytest.mark.parametrize(("sets", "message"), [
    (("config.kafka.securityProtocol=SASL_SSL", "secrets.kafkaSaslPassword=x"),
     "set config.kafka.saslUsername"),
    (("config.kafka.securityProtocol=SASL_PLAINTEXT", "config.kafka.saslUsername=svc"),
     "give the SASL password"),
    (("tls.kafka.secretName=ca",), "use SSL or SASL_SSL"),
    (("tls.cassandra.secretName=ca",), "config.cassandra.sslEnabled is not true"),
    (("config.cassandra.sslEnabled=true", "tls.cassandra.secretName=ca",
      "tls.cassandra.certKey=tls.crt"), "needs both certKey and keyKey"),
    (("config.kafka.securityProtocol=TLS",), "securityProtocol"),
])
def test_incomplete_connection_security_is_refused(sets, message):
    assert message in render_fails(sets=sets)
