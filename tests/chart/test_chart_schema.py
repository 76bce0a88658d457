"""The chart's values.schema.json and README values table are generated from values.yaml
(deploy/tools/chart_schema.py, `make chart-schema`): the committed files must be what the generator
writes, and the generator must follow the rules its docstring states.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.chart.test_chart import CHART, ROOT, helm

GENERATOR = ROOT / "deploy" / "tools" / "chart_schema.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_schema", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def schema_of(values: str) -> dict:
    return json.loads(gen.render_schema(textwrap.dedent(values)))


def rows_of(values: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in gen.table_rows(gen.Values(textwrap.dedent(values)))]


def rejects(values: str, message: str) -> None:
    with pytest.raises(gen.AnnotationError, match=message):
        gen.render_schema(textwrap.dedent(values))


# --------------------------------------------------------------------------- the committed files


@pytest.mark.parametrize("path,expected", gen.outputs(), ids=lambda p: getattr(p, "name", ""))
def test_committed_file_is_generated(path: Path, expected: str):
    actual = path.read_text()
    diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                        "committed", "generated", n=1))
    assert actual == expected, (f"{path.relative_to(ROOT)} differs from what values.yaml gives: "
                                f"run `make chart-schema` to regenerate\n{diff[:4000]}")


def test_check_mode_passes_on_the_committed_files():
    proc = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_helm_package_leaves_the_ci_values_out(tmp_path):
    proc = helm("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("prefstream-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "prefstream/values.schema.json" in names
    assert not [n for n in names if n.startswith("prefstream/ci/")], names


# --------------------------------------------------------------------------- generator rules


def test_types_come_from_the_defaults():
    schema = schema_of("""
        name: x
        count: 1
        ratio: 0.5
        enabled: true
        labels: {}
        hosts: [a, b]
        mixed: [a, 1]
        nested:
          port: 80
    """)
    props = schema["properties"]
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    assert props["global"]["type"] == "object"
    assert [props[k]["type"] for k in ("name", "count", "ratio", "enabled", "labels")] == \
        ["string", "integer", "number", "boolean", "object"]
    assert "additionalProperties" not in props["labels"]
    assert props["hosts"] == {"type": "array", "items": {"type": "string"}}
    assert props["mixed"] == {"type": "array"}
    assert props["nested"] == {"type": "object", "properties": {"port": {"type": "integer"}},
                               "additionalProperties": False}


def test_annotations_add_to_and_replace_what_is_inferred():
    schema = schema_of("""
        # @schema
        # type: number
        # exclusiveMinimum: 0
        # @schema
        # -- Seconds to wait
        timeoutS: 30
        # @schema
        # required: true
        # properties:
        #   extra: {type: integer, minimum: 1, description: A setting without a chart default}
        #   port: {maximum: 65535}
        # @schema
        section:
          # @schema
          # minimum: 1
          # @schema
          port: 80
        # @schema
        # items: {enum: [a, b]}
        # @schema
        modes: [a]
        # @schema
        # type: [integer, null]
        # @schema
        target: null
    """)
    props = schema["properties"]
    assert props["timeoutS"] == {"description": "Seconds to wait", "type": "number",
                                 "exclusiveMinimum": 0}
    assert props["section"]["properties"] == {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "extra": {"type": "integer", "minimum": 1, "description": "A setting without a chart default"},
    }
    assert props["section"]["additionalProperties"] is False
    assert schema["required"] == ["section"]
    assert props["modes"]["items"] == {"type": "string", "enum": ["a", "b"]}
    assert props["target"]["type"] == ["integer", "null"]


def test_a_ref_is_the_whole_schema_and_the_root_block_holds_definitions():
    schema = schema_of("""
        # @schema.root
        # title: demo
        # definitions:
        #   probe: {type: object}
        # allOf: [{required: [probe]}]
        # @schema.root

        # @schema
        # $ref: "#/definitions/probe"
        # @schema
        # -- Probe timing
        probe:
          periodSeconds: 10
    """)
    assert schema["title"] == "demo"
    assert schema["definitions"] == {"probe": {"type": "object"}}
    assert schema["allOf"] == [{"required": ["probe"]}]
    assert schema["properties"]["probe"] == {"$ref": "#/definitions/probe",
                                             "description": "Probe timing"}


def test_descriptions_follow_helm_docs():
    schema = schema_of("""
        # Not part of any description (a blank line follows).

        # A note for maintainers.
        # -- The description,
        # continued
        documented: 1
        # A plain comment is the description without a helm-docs one.
        plain: 2
        # @schema
        # description: The annotation wins
        # @schema
        # -- Not this
        annotated: 3
    """)
    props = schema["properties"]
    assert props["documented"]["description"] == "The description, continued"
    assert props["plain"]["description"] == "A plain comment is the description without a helm-docs one."
    assert props["annotated"]["description"] == "The annotation wins"


def test_table_rows_expand_undocumented_mappings_only():
    rows = rows_of("""
        # -- Whole object
        documented:
          a: 1
        # A section
        # @schema
        # properties:
        #   unset: {type: integer, description: App default only}
        # @schema
        section:
          # -- First
          first: "x"
    """)
    assert rows == [("documented", '{"a": 1}', "Whole object"),
                    ("section.first", '"x"', "First"),
                    ("section.unset", "(app default)", "App default only")]


@pytest.mark.parametrize("values,message", [
    ("# @schema\n# minimum: 1\nkey: 1\n", "not closed"),
    ("# @schema\n# minimun: 1\n# @schema\nkey: 1\n", "unknown JSON Schema keyword"),
    ("# @schema\n# properties: {a: {maxLenght: 3}}\n# @schema\nkey: {}\n", "unknown JSON Schema keyword"),
    ("key: null\n", "null default needs an annotated `type`"),
    ("# @schema\n# type: integer\n# @schema\nkey: abc\n", "rejects the default"),
    ("# @schema\n# enum: [a, b]\n# @schema\nkey: c\n", "not in `enum`"),
    ("first: 1\n# @schema.root\n# title: late\n# @schema.root\nsecond: 2\n", "before the first key"),
    ("# @schema\n# - not a mapping\n# @schema\nkey: 1\n", "mapping of JSON Schema keywords"),
])
def test_bad_annotations_stop_the_generator(values, message):
    rejects(values, message)


def test_errors_name_the_line():
    with pytest.raises(gen.AnnotationError, match=r"values\.yaml:3:"):
        gen.render_schema("a: 1\nb:\n  # @schema\n  # minimun: 1\n  # @schema\n  c: 2\n")
