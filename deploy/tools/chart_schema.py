"""Generate the chart's ``values.schema.json`` and the values table of its README from the
annotations in ``helm/prefstream/values.yaml``.

    python deploy/tools/chart_schema.py           # rewrite both files (what `make chart-schema` runs)
    python deploy/tools/chart_schema.py --check   # exit 1 if a committed file differs (tests/chart)

values.yaml is the single source: the defaults give the types, the comments give the rest.

Annotations follow the ``# @schema`` block convention of helm-schema
(https://github.com/dadav/helm-schema), made to sit next to helm-docs ``# --`` descriptions: the
JSON Schema keywords of a key are written as YAML between two ``# @schema`` lines in the comment
right above the key, and the helm-docs comment under them is the description::

    # @schema
    # minimum: 1
    # @schema
    # -- Partitions of created topics; the ceiling for useful worker replicas
    partitions: 8

The rules implemented here (a subset of helm-schema's; where they differ, it says so):

* The comment of a key is the run of comment lines directly above it, at its indentation, up to a
  blank or non-comment line. One ``# @schema.root`` block before the first key holds keywords of
  the root schema (``title``, ``definitions``, ``allOf``...).
* The type comes from the default: string, integer, number, boolean, object or array (with typed
  ``items`` when every element is a scalar of one type). A ``null`` default needs an annotated
  ``type``; ``type: [integer, null]`` makes a value nullable (a bare ``null`` in a type list means
  the type ``"null"``). Unlike helm-schema, annotating a key does not drop the inferred type: an
  annotated ``type`` only widens or replaces it.
* A non-empty mapping gets ``properties`` for its keys and ``additionalProperties: false``; an empty
  mapping ``{}`` is an open object. Annotated ``properties`` and ``items`` are merged into the
  inferred ones, so settings without a chart default can be listed next to those with one; any
  other annotated keyword replaces the inferred one.
* ``$ref`` is the whole schema of a key: nothing is inferred from its default (shared
  ``definitions``, and Kubernetes objects that the chart passes through).
* Keys are optional (helm-schema's ``-k required``): ``required: true`` adds the key to its
  parent's ``required``; ``required: [a, b]`` on a mapping is kept as written.
* The description is the helm-docs comment (from its ``# --`` line on), or else the whole comment;
  an annotated ``description`` wins. The README table (between its ``values-table`` markers) has
  a row per value: a mapping with a ``# --`` description is one row, any other mapping is
  expanded; annotated settings without a chart default get a row too.

Annotations are checked: an unknown keyword, an unclosed block, an untyped ``null``, and a default
that the annotated ``type`` or ``enum`` rejects stop the generator with the file and line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "prefstream"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"

DRAFT = "http://json-schema.org/draft-07/schema#"
BLOCK = "@schema"
ROOT_BLOCK = "@schema.root"
TABLE_BEGIN = "<!-- values-table:begin (generated from values.yaml by `make chart-schema`) -->"
TABLE_END = "<!-- values-table:end -->"
GENERATED = ("Generated from values.yaml by deploy/tools/chart_schema.py: edit the annotations "
             "there and run `make chart-schema`.")
GLOBAL = {"description": "Global values shared with subcharts (reserved by Helm).", "type": "object"}
NO_DEFAULT = "(app default)"

Schema = dict[str, Any]

# JSON Schema draft 7 (what Helm validates with), by what a keyword holds.
SUBSCHEMA = {"items", "additionalItems", "contains", "propertyNames", "if", "then", "else", "not"}
SCHEMA_LIST = {"allOf", "anyOf", "oneOf"}
SCHEMA_MAP = {"properties", "patternProperties", "definitions", "dependencies"}
KEYWORDS = SUBSCHEMA | SCHEMA_LIST | SCHEMA_MAP | {
    "$ref", "$comment", "$id", "$schema", "title", "description", "default", "examples",
    "readOnly", "writeOnly", "type", "enum", "const", "format", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems",
    "maxItems", "uniqueItems", "minProperties", "maxProperties", "required",
    "additionalProperties", "contentMediaType", "contentEncoding",
}
YAML_TYPES = {
    "tag:yaml.org,2002:str": "string",
    "tag:yaml.org,2002:int": "integer",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "string",
}


class AnnotationError(ValueError):
    """An annotation in values.yaml that cannot be turned into a schema."""


class Comment(NamedTuple):
    """What the comment above one key says."""

    annotation: Schema
    description: str
    helm_docs: bool  # the description comes from a `# --` comment


class Row(NamedTuple):
    """One row of the README values table."""

    key: str
    default: str
    description: str


class Values:
    """values.yaml: its lines (for the comments) and its node tree (keys, defaults, positions)."""

    def __init__(self, text: str, name: str = "values.yaml") -> None:
        self.name = name
        self.lines = text.splitlines()
        root = yaml.compose(text) or yaml.MappingNode("tag:yaml.org,2002:map", [])
        if not isinstance(root, yaml.MappingNode):
            raise AnnotationError(f"{name}: the top level must be a mapping")
        self.root = root

    def where(self, line: int) -> str:
        return f"{self.name}:{line + 1}"

    def comment(self, key: yaml.Node) -> Comment:
        """The annotation and description written above `key`."""
        col, lines = key.start_mark.column, []
        for i in range(key.start_mark.line - 1, -1, -1):
            line = self.lines[i]
            if line[:col].strip() or line[col:col + 1] != "#" or _marker(line) == ROOT_BLOCK:
                break
            lines.append((i, line))
        inside, start = False, 0
        body: list[str] = []
        text: list[str] = []
        for i, line in reversed(lines):
            if _marker(line) == BLOCK:
                start = start if inside else i  # errors point at the opening line
                inside = not inside
            else:
                (body if inside else text).append(_uncomment(line))
        if inside:
            raise AnnotationError(f"{self.where(start)}: the `# {BLOCK}` block is not closed")
        docs = [i for i, line in enumerate(text) if line == "--" or line.startswith("-- ")]
        if docs:
            text = text[docs[-1]:]
            text[0] = text[0][2:]
        annotation = _load_annotation(body, self.where(start)) if body else {}
        description = annotation.pop("description", None)
        if description is None:
            description = " ".join(" ".join(text).split())
        return Comment(annotation, description, bool(docs))

    def root_annotation(self) -> Schema:
        """The `# @schema.root` block (before the first key), or {}."""
        first = self.root.value[0][0].start_mark.line if self.root.value else len(self.lines)
        marks = [i for i, line in enumerate(self.lines) if _marker(line) == ROOT_BLOCK]
        if not marks:
            return {}
        if len(marks) != 2:
            raise AnnotationError(f"{self.where(marks[-1])}: expected one `# {ROOT_BLOCK}` block")
        if marks[1] > first:
            raise AnnotationError(f"{self.where(marks[0])}: the `# {ROOT_BLOCK}` block must come "
                                  "before the first key")
        body = [_uncomment(line) for line in self.lines[marks[0] + 1:marks[1]]]
        return _load_annotation(body, self.where(marks[0]))


def _marker(line: str) -> str | None:
    """`@schema` or `@schema.root` when the line is a block marker, else None."""
    stripped = line.strip()
    if stripped.startswith("#") and stripped[1:].strip() in (BLOCK, ROOT_BLOCK):
        return stripped[1:].strip()
    return None


def _uncomment(line: str) -> str:
    """The text of a comment line without its `#` and the one space after it."""
    text = line.lstrip()[1:]
    return text[1:] if text.startswith(" ") else text


def _load_annotation(body: list[str], where: str) -> Schema:
    try:
        loaded = yaml.safe_load("\n".join(body))
    except yaml.YAMLError as exc:
        raise AnnotationError(f"{where}: the annotation is not YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise AnnotationError(f"{where}: an annotation is a mapping of JSON Schema keywords")
    _check_keywords(loaded, where)
    return loaded


def _check_keywords(schema: Any, where: str) -> None:
    """Refuse keywords that draft 7 does not know (Helm would ignore a misspelt constraint), and
    read a bare `null` in a type list as the type "null"."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise AnnotationError(f"{where}: expected a schema (a mapping), got {schema!r}")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise AnnotationError(f"{where}: unknown JSON Schema keyword(s) {unknown}")
    if isinstance(schema.get("type"), list):
        schema["type"] = ["null" if t is None else t for t in schema["type"]]
    for key, value in schema.items():
        if key in SUBSCHEMA or key == "additionalProperties":
            _check_keywords(value, where)
        elif key in SCHEMA_LIST:
            for sub in value:
                _check_keywords(sub, where)
        elif key in SCHEMA_MAP:
            for sub in value.values():
                if not isinstance(sub, list):  # `dependencies` may list property names
                    _check_keywords(sub, where)


def _merge(inferred: Schema, annotation: Schema) -> Schema:
    """Annotated keywords over inferred ones; `properties` and `items` are merged key by key."""
    out = dict(inferred)
    for key, value in annotation.items():
        if key == "properties" and isinstance(out.get(key), dict):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = _merge(props[name], sub) if name in props else sub
            out[key] = props
        elif key == "items" and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _ordered(schema: Schema) -> Schema:
    """Keywords in a fixed, readable order: what it is, its constraints, then its members."""
    head = ("$ref", "description", "type")
    tail = ("items", "properties", "additionalProperties", "required")
    middle = [k for k in schema if k not in head and k not in tail]
    return {k: schema[k] for k in (*head, *middle, *tail) if k in schema}


def _admits(types: str | list[str], kind: str) -> bool:
    allowed = types if isinstance(types, list) else [types]
    return kind in allowed or (kind == "integer" and "number" in allowed)


def _scalar_type(node: yaml.ScalarNode, where: str) -> str:
    kind = YAML_TYPES.get(node.tag)
    if kind is None:
        raise AnnotationError(f"{where}: unsupported YAML tag {node.tag}")
    return kind


def _default(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


class SchemaBuilder:
    """values.yaml -> the chart's JSON Schema (draft 7)."""

    def __init__(self, values: Values) -> None:
        self.values = values

    def build(self) -> Schema:
        root = self.values.root_annotation()
        properties, required = self._mapping(self.values.root, "")
        if "global" not in properties:
            properties = {"global": GLOBAL, **properties}
        properties = _merge({"properties": properties}, {"properties": root.pop("properties", {})})
        required += [r for r in root.pop("required", []) if r not in required]
        out: Schema = {"$schema": DRAFT, "$comment": GENERATED}
        out.update({k: root.pop(k) for k in ("title", "description") if k in root})
        out["type"] = "object"
        out.update({k: v for k, v in root.items() if k != "additionalProperties"})
        out["properties"] = properties["properties"]
        out["additionalProperties"] = root.get("additionalProperties", False)
        if required:
            out["required"] = required
        return out

    def _mapping(self, node: yaml.MappingNode, path: str) -> tuple[dict[str, Schema], list[str]]:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for key_node, value_node in node.value:
            comment = self.values.comment(key_node)
            annotation = dict(comment.annotation)
            if annotation.get("required") is True:
                required.append(key_node.value)
            if isinstance(annotation.get("required"), bool):
                del annotation["required"]
            where = self.values.where(key_node.start_mark.line)
            properties[key_node.value] = self._key(f"{path}{key_node.value}", value_node,
                                                   annotation, comment.description, where)
        return properties, required

    def _key(self, path: str, node: yaml.Node, annotation: Schema, description: str,
             where: str) -> Schema:
        described: Schema = {"description": description} if description else {}
        if "$ref" in annotation:
            return _ordered({**described, **annotation})
        kind, inferred = self._infer(path, node, where)
        if "type" in annotation and not _admits(annotation["type"], kind):
            raise AnnotationError(f"{where}: {path}: `type: {annotation['type']}` rejects the "
                                  f"default, a {kind}")
        schema = _merge(inferred, annotation)
        if "type" not in schema:
            raise AnnotationError(f"{where}: {path}: a null default needs an annotated `type`")
        if isinstance(node, yaml.ScalarNode) and "enum" in schema:
            if _default(node) not in schema["enum"]:
                raise AnnotationError(f"{where}: {path}: the default {_default(node)!r} is not in "
                                      "`enum`")
        return _ordered({**described, **schema})

    def _infer(self, path: str, node: yaml.Node, where: str) -> tuple[str, Schema]:
        """(JSON type of the default, the schema inferred from it)."""
        if isinstance(node, yaml.ScalarNode):
            kind = _scalar_type(node, where)
            return kind, {} if kind == "null" else {"type": kind}
        if isinstance(node, yaml.SequenceNode):
            out: Schema = {"type": "array"}
            if node.value and all(isinstance(item, yaml.ScalarNode) for item in node.value):
                kinds = {_scalar_type(item, where) for item in node.value}
                if len(kinds) == 1 and "null" not in kinds:
                    out["items"] = {"type": kinds.pop()}
            return "array", out
        if not isinstance(node, yaml.MappingNode) or not node.value:
            return "object", {"type": "object"}
        properties, required = self._mapping(node, f"{path}.")
        out = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            out["required"] = required
        return "object", out


def table_rows(values: Values, node: yaml.MappingNode | None = None, path: str = "") -> list[Row]:
    """The README rows of `node` (default: the whole file), in file order."""
    rows: list[Row] = []
    for key_node, value_node in (node or values.root).value:
        key = f"{path}{key_node.value}"
        comment = values.comment(key_node)
        if isinstance(value_node, yaml.MappingNode) and value_node.value and not comment.helm_docs:
            rows += table_rows(values, value_node, f"{key}.")
            present = {k.value for k, _ in value_node.value}
            for name, sub in comment.annotation.get("properties", {}).items():
                if name not in present:
                    rows.append(Row(f"{key}.{name}", NO_DEFAULT, sub.get("description", "")))
        else:
            rows.append(Row(key, _default_cell(value_node), comment.description))
    return rows


def _default_cell(node: yaml.Node) -> str:
    text = json.dumps(_default(node), ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def render_schema(values_text: str, name: str = "values.yaml") -> str:
    """values.schema.json for the given values.yaml text."""
    schema = SchemaBuilder(Values(values_text, name)).build()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render_table(values_text: str, name: str = "values.yaml") -> str:
    """The README's values table (markdown) for the given values.yaml text."""
    lines = ["| key | default | description |", "|---|---|---|"]
    for row in table_rows(Values(values_text, name)):
        default = row.default if row.default == NO_DEFAULT else f"`{row.default}`"
        cells = (f"`{row.key}`", default, row.description.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_readme(readme_text: str, table: str) -> str:
    """`readme_text` with what stands between the values-table markers replaced by `table`."""
    begin, end = readme_text.find(TABLE_BEGIN), readme_text.find(TABLE_END)
    if begin < 0 or end < begin:
        raise AnnotationError(f"README.md lacks the lines {TABLE_BEGIN!r} ... {TABLE_END!r}")
    return readme_text[:begin + len(TABLE_BEGIN)] + "\n" + table + readme_text[end:]


def outputs() -> list[tuple[Path, str]]:
    """(file, the text it should have) for every generated file."""
    values_text = VALUES.read_text()
    name = str(VALUES.relative_to(ROOT))
    return [(SCHEMA, render_schema(values_text, name)),
            (README, render_readme(README.read_text(), render_table(values_text, name)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a committed file differs from what values.yaml gives")
    args = parser.parse_args(argv)
    try:
        generated = outputs()
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [(path, text) for path, text in generated
             if not path.exists() or path.read_text() != text]
    for path, text in stale:
        if args.check:
            print(f"{path.relative_to(ROOT)} is out of date: run `make chart-schema` to regenerate",
                  file=sys.stderr)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
