"""Generate the JSON schemas that kubeconform checks the chart's renders against, offline.

    python deploy/tools/k8s_schemas.py           # generate unless .tools/k8s-schemas is up to date
    python deploy/tools/k8s_schemas.py --force   # regenerate anyway

Everything comes from Go module sources, downloaded from the Go module proxy with
``go mod download -json MODULE@VERSION`` (which prints the extracted module's ``Dir`` in the Go
module cache); nothing is fetched from any website, and nothing at test time:

* Kubernetes' own OpenAPI spec, ``api/openapi-spec/swagger.json`` of module ``k8s.io/kubernetes``
  at KUBERNETES_VERSION: one schema per kind (every ``x-kubernetes-group-version-kind`` of every
  definition), like yannh/kubernetes-json-schema's ``-standalone-strict`` flavour.
* The CRDs the chart renders objects of: KEDA's ScaledObject (and TriggerAuthentication, which a
  ScaledObject's ``authenticationRef`` names) from ``github.com/kedacore/keda/v2``, and the
  Prometheus Operator's ServiceMonitor and PrometheusRule from
  ``github.com/prometheus-operator/prometheus-operator`` (the root module, whose ``example/``
  tree holds the generated CRDs): one schema per served version, from
  ``spec.versions[].schema.openAPIV3Schema``.

The Kubernetes minor is the one helm's ``helm template`` assumes (deploy/tools/helm.sh compiles in
the minor of helm's k8s.io/client-go: v0.37 -> 1.37); tests/chart/test_kubeconform.py checks the
two agree. Pins are bumped here, and only here.

Conversion (all of it strict, the way ``kubeconform -strict`` expects its schemas to be):

* Every ``$ref`` is inlined, so each file stands alone (a recursive type, only
  JSONSchemaProps inside CustomResourceDefinition, is kept once under the file's own
  ``definitions`` and referenced locally).
* An object schema with ``properties`` and no ``additionalProperties`` gets
  ``additionalProperties: false`` (a misspelled field is an error), unless it is marked
  ``x-kubernetes-preserve-unknown-fields: true``.
* ``format: int-or-string`` (IntOrString) and ``x-kubernetes-int-or-string`` accept an integer or a
  string; ``resource.Quantity`` accepts a string or a number (``cpu: 1``), as the API server does.
* ``null`` is only accepted where the spec says ``nullable: true``. The API server would silently
  drop most nulls, but in a render a null nearly always is a template bug (an empty value).
* ``apiVersion`` and ``kind`` at the top are pinned with ``enum``; a CRD's ``metadata`` (only
  ``type: object`` in CRDs) is Kubernetes' strict ObjectMeta; an
  ``x-kubernetes-embedded-resource`` object gets apiVersion/kind/metadata properties.
* ``description`` and the ``x-kubernetes-*`` annotations are dropped (no validation meaning; they
  are most of the bytes). CEL rules (``x-kubernetes-validations``) are not checked.

Layout, matched by the ``-schema-location`` templates in SCHEMA_LOCATIONS (kubeconform's template
variables: ResourceKind is the lowercased kind, KindSuffix ``-<first label of the group>-<version>``
or ``-<version>`` for the core group, Group the whole group, ResourceAPIVersion the version)::

    .tools/k8s-schemas/stamp.json                                   pins of the last generation
    .tools/k8s-schemas/v1.37.2-standalone-strict/deployment-apps-v1.json
    .tools/k8s-schemas/crds/keda.sh/scaledobject_v1alpha1.json

A stamp file records the pins and a hash of this script; the schemas are regenerated only when
either changed. Measured on the 2-core dev/CI box: about 5 seconds with an empty Go module cache
(downloads included: k8s.io/kubernetes is a 21.7 MB zip, 124 MB extracted; KEDA 3.0 MB / 12 MB;
the Prometheus Operator 4.1 MB / 27 MB), well under a second with the modules cached; the output
is 330 schemas, 2 MB.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

# ----------------------------------------------------------------------------------- pins
# k8s.io/kubernetes: the minor must be helm's default Kubernetes version (see deploy/tools/helm.sh)
KUBERNETES_VERSION = "v1.37.2"
KEDA_VERSION = "v2.21.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_SPEC = "api/openapi-spec/swagger.json"
CRD_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("github.com/kedacore/keda/v2", KEDA_VERSION, (
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    )),
    ("github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION, (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    )),
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".tools" / "k8s-schemas"
STAMP = "stamp.json"
# {{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }} of kubeconform -strict
K8S_DIR = f"{KUBERNETES_VERSION}-standalone-strict"
CRD_DIR = "crds"

# kubeconform -schema-location templates, in lookup order (first hit wins). CRDs first, so that a
# CRD whose group starts like a built-in one (apps.example.com) cannot pick a built-in schema.
SCHEMA_LOCATIONS = (
    str(OUT / CRD_DIR) + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
    str(OUT) + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
               "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
)

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Schema keywords kept from the sources (JSON Schema draft 4, what kubeconform compiles with);
# everything else (description, example, x-kubernetes-*, OpenAPI-only keywords) is dropped.
KEEP = {"type", "format", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
        "uniqueItems", "minProperties", "maxProperties", "required", "default"}


def say(msg: str) -> None:
    print(f"== k8s-schemas: {msg}", file=sys.stderr, flush=True)


def stamp() -> dict[str, str]:
    return {
        "kubernetes": KUBERNETES_VERSION,
        "keda": KEDA_VERSION,
        "prometheus-operator": PROMETHEUS_OPERATOR_VERSION,
        "generator": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
    }


def read_stamp(out: Path = OUT) -> dict[str, str] | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- sources


def module_dir(module: str, version: str) -> Path:
    """The extracted module in the Go module cache (downloaded from the proxy if not there)."""
    say(f"go mod download {module}@{version}")
    started = time.monotonic()
    try:
        proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                              capture_output=True, text=True, cwd=tempfile.gettempdir(),
                              env={**os.environ, "GO111MODULE": "on"}, check=False)
    except FileNotFoundError:
        sys.exit("go is not installed; install Go >= 1.26 (it downloads the module sources)")
    info: dict[str, Any] = {}
    if proc.stdout.strip():
        info = json.loads(proc.stdout)
    if proc.returncode != 0 or info.get("Error") or not info.get("Dir"):
        sys.exit(f"go mod download {module}@{version} failed: "
                 f"{info.get('Error') or proc.stderr.strip()}")
    say(f"  {info['Dir']} ({time.monotonic() - started:.1f}s)")
    return Path(info["Dir"])


# ----------------------------------------------------------------------------------- conversion


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """Finish one converted schema node: int-or-string, nullable, additionalProperties."""
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False) is True
    nullable = node.pop("nullable", False) is True
    if node.pop("x-kubernetes-int-or-string", False) is True and "type" not in node \
            and not any(k in node for k in ("anyOf", "oneOf", "allOf")):
        node["type"] = ["integer", "string"]
    if node.get("format") == "int-or-string":
        node.pop("format")
        node["type"] = ["integer", "string"]
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    if nullable:
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            node["type"] = [*types, "null"] if "null" not in types else types
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        elif any(k in node for k in ("anyOf", "oneOf")):
            key = "anyOf" if "anyOf" in node else "oneOf"
            node[key] = [*node[key], {"type": "null"}]
    return node


class Converter:
    """OpenAPI (swagger 2 definitions or a CRD's openAPIV3Schema) -> standalone draft-4 schema."""

    def __init__(self, definitions: dict[str, Any]):
        self.definitions = definitions
        self.local: dict[str, Any] = {}  # recursive types kept once under "definitions"
        self._pending: list[str] = []

    def definition(self, name: str, stack: tuple[str, ...] = ()) -> dict[str, Any]:
        if name == QUANTITY:
            return {"type": ["string", "number"]}
        return self.convert(self.definitions[name], (*stack, name))

    def convert(self, src: Any, stack: tuple[str, ...] = ()) -> Any:
        if not isinstance(src, dict):
            return src
        if "$ref" in src:  # siblings of $ref (description) carry no validation
            name = src["$ref"].rsplit("/", 1)[-1]
            if name in stack:
                if name not in self.local and name not in self._pending:
                    self._pending.append(name)
                return {"$ref": f"#/definitions/{name}"}
            return self.definition(name, stack)
        out: dict[str, Any] = {}
        for key, value in src.items():
            if key == "properties":
                out[key] = {p: self.convert(s, stack) for p, s in value.items()}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self.convert(value, stack) if isinstance(value, dict) else value
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [self.convert(s, stack) for s in value]
            elif key in KEEP or key in ("x-kubernetes-preserve-unknown-fields", "nullable",
                                        "x-kubernetes-int-or-string"):
                out[key] = copy.deepcopy(value)
            elif key == "x-kubernetes-embedded-resource" and value is True:
                out["_embedded"] = True
        if out.pop("_embedded", False) and "properties" in out:
            props = out["properties"]
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
        return strict(out)

    def finish(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Add the local definitions that recursive $refs point at."""
        while self._pending:
            name = self._pending.pop(0)
            self.local[name] = {}  # placeholder: a self-reference must not re-queue it
            self.local[name] = self.definition(name, (name,))
        if self.local:
            schema["definitions"] = dict(sorted(self.local.items()))
        return schema


def kind_suffix(api_version: str) -> str:
    """kubeconform's KindSuffix (pkg/registry/registry.go schemaPath)."""
    group_parts = api_version.split("/")
    suffix = "-" + group_parts[0].split(".")[0].lower()
    if len(group_parts) > 1:
        suffix += "-" + group_parts[1].lower()
    return suffix


def pin_identity(schema: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    schema.setdefault("additionalProperties", False)
    return schema


def write(path: Path, schema: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"$schema": "http://json-schema.org/draft-04/schema#", **schema}
    path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")


def kubernetes_schemas(spec_path: Path, out: Path) -> dict[str, Any]:
    """One file per GVK of Kubernetes' swagger.json; returns the strict ObjectMeta for the CRDs."""
    definitions = json.loads(spec_path.read_text())["definitions"]
    written: dict[Path, str] = {}
    for name, definition in sorted(definitions.items()):
        for gvk in definition.get("x-kubernetes-group-version-kind") or ():
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            api_version = f"{group}/{version}" if group else version
            path = out / K8S_DIR / f"{kind.lower()}{kind_suffix(api_version)}.json"
            if path in written:
                # e.g. WatchEvent/DeleteOptions in every group: keep the first one, and say so
                if written[path] != name:
                    say(f"  {path.name}: {name} clashes with {written[path]}; kept the latter")
                continue
            conv = Converter(definitions)
            schema = pin_identity(conv.definition(name), api_version, kind)
            write(path, conv.finish(schema))
            written[path] = name
    say(f"  {len(written)} Kubernetes kinds from {len(definitions)} definitions")
    meta = Converter(definitions)
    return meta.finish(meta.definition(OBJECT_META))


def crd_schemas(crd_path: Path, out: Path, object_meta: dict[str, Any]) -> list[str]:
    crd = yaml.safe_load(crd_path.read_text())
    if crd.get("kind") != "CustomResourceDefinition":
        sys.exit(f"{crd_path} is not a CustomResourceDefinition")
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    done = []
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        src = ((version.get("schema") or {}).get("openAPIV3Schema"))
        if not src:
            sys.exit(f"{crd_path}: version {version['name']} has no openAPIV3Schema")
        conv = Converter({})
        schema = conv.convert(src)
        pin_identity(schema, f"{group}/{version['name']}", kind)
        schema["properties"]["metadata"] = copy.deepcopy(object_meta)
        write(out / CRD_DIR / group / f"{kind.lower()}_{version['name']}.json", conv.finish(schema))
        done.append(f"{kind} {group}/{version['name']}")
    return done


def generate(out: Path = OUT, force: bool = False) -> Path:
    want = stamp()
    if not force and read_stamp(out) == want and (out / K8S_DIR).is_dir():
        say(f"{out.relative_to(ROOT)} is already {KUBERNETES_VERSION}, KEDA {KEDA_VERSION}, "
            f"Prometheus Operator {PROMETHEUS_OPERATOR_VERSION}; nothing to do")
        return out
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        k8s = module_dir(KUBERNETES_MODULE, KUBERNETES_VERSION) / KUBERNETES_SPEC
        say(f"converting {KUBERNETES_MODULE}@{KUBERNETES_VERSION}/{KUBERNETES_SPEC}")
        object_meta = kubernetes_schemas(k8s, tmp)
        for module, version, files in CRD_SOURCES:
            root = module_dir(module, version)
            for rel in files:
                for done in crd_schemas(root / rel, tmp, object_meta):
                    say(f"  {done} from {module}@{version}/{rel}")
        (tmp / STAMP).write_text(json.dumps(want, indent=2, sort_keys=True) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*.json"))
    count = sum(1 for _ in out.rglob("*.json"))
    say(f"wrote {count} schemas ({size / 1e6:.1f} MB) into {out.relative_to(ROOT)} in "
        f"{time.monotonic() - started:.1f}s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    generate(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
