"""Declarative mappings: records of an existing event format to our interaction events (pure).

A platform team whose topic already carries Segment track calls, Snowplow enriched events or any
JSON of its own describes, in one YAML file, how its records become our events; the worker
applies the mapping to every input record before validation (``STREAMER_MAPPING__FILE``), and
``streamer mapping check MAPPING SAMPLE.jsonl`` shows what each sample becomes.  The file is
parsed by :func:`parse_mapping` from the loaded document (YAML loading is the caller's).

Format (``mapping: 1``)::

    mapping: 1
    name: segment-ecommerce
    rules:                              # the first rule whose `when` holds converts the record
      - name: product clicked
        when: {type: track, event: Product Clicked}
        emit: interaction.click         # our event type
        fields:                         # our event's fields, each a selector
          event_id: messageId
          user_id: {first: [userId, anonymousId]}
          occurred_at: {path: timestamp, as: timestamp}
          domain: {const: products}
          item:                         # a nested object: a dict of selectors
            id: {path: properties.product_id, as: str}
            title: properties.name

Selectors:

* ``a.b[0].c`` (a string): the value at that path (``[n]`` indexes a list); missing: no value;
* ``{const: V}``: the constant ``V``;
* ``{path: P, map: {from: to, ...}, default: D, as: str|int|float|bool|timestamp, required: B}``:
  the value at ``P``, translated by ``map`` (a value not in the map is an error unless a
  ``default`` is given), then cast by ``as`` (``timestamp`` accepts ISO 8601, Snowplow's
  ``YYYY-MM-DD HH:MM:SS.mmm`` in UTC, and epoch seconds or milliseconds);
* ``{first: [S1, S2, ...]}``: the first selector with a value;
* ``{template: "mind-{messageId}"}``: a string with ``{path}`` placeholders;
* ``{each: P, fields: {...}, where: {...}}``: a list, one object per element of the list at
  ``P`` (paths inside ``fields`` and ``where`` are relative to the element);
* any other dict: a nested object of selectors.

A field without a value is left out (the contract's default applies) unless it is required:
``event_id``, ``user_id`` and ``occurred_at`` always are, any other with ``required: true``.

Conditions (``when``, ``where``): each ``path: expected`` must hold; ``expected`` is a scalar
(equality), a list (any of), or ``{startswith: S}``, ``{exists: true|false}``, ``{not: X}``.

Every record the mapping cannot convert raises :class:`~streamer.errors.InvalidEventError` with
a ``mapping_*`` code and the rule's name: the worker dead-letters it with that reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from schemas import Interaction

from ..errors import ConfigurationError, InvalidEventError
from .codec import decode_interaction, parse_document

__all__ = ["Mapping", "MappingRule", "parse_mapping"]

EVENT_TYPES = ("interaction.pairwise", "interaction.impression", "interaction.rating",
               "interaction.feedback", "interaction.click")
ALWAYS_REQUIRED = ("event_id", "user_id", "occurred_at")
CASTS = ("str", "int", "float", "bool", "timestamp")
_SPEC_KEYS = {"const", "path", "first", "template", "each"}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_MISSING = object()


class _Unmapped(Exception):
    """A value the mapping cannot turn into a field (reason code, message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ paths


def _parse_path(path: str, where: str) -> tuple[str | int, ...]:
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"{where}: a path must be a non-empty string, got {path!r}")
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_PART.finditer(path):
        if m.start() != pos and path[pos:m.start()] != ".":
            raise ConfigurationError(f"{where}: cannot parse path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(path) or not parts:
        raise ConfigurationError(f"{where}: cannot parse path {path!r}")
    return tuple(parts)


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
            doc = doc[part]
        else:
            if not isinstance(doc, dict) or part not in doc:
                return _MISSING
            doc = doc[part]
    return _MISSING if doc is None else doc


# ------------------------------------------------------------------------------ conditions


@dataclass(frozen=True, slots=True)
class _Condition:
    path: tuple[str | int, ...]
    text: str
    expected: Any

    def holds(self, doc: Any) -> bool:
        return _matches(_get(doc, self.path), self.expected)


def _matches(value: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        if "exists" in expected:
            return (value is not _MISSING) == bool(expected["exists"])
        if "startswith" in expected:
            return isinstance(value, str) and value.startswith(str(expected["startswith"]))
        if "not" in expected:
            return not _matches(value, expected["not"])
    if isinstance(expected, list):
        return any(_matches(value, e) for e in expected)
    return value is not _MISSING and value == expected


def _conditions(spec: Any, where: str) -> tuple[_Condition, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{where}: expected a mapping of path: expected value")
    out = []
    for path, expected in spec.items():
        if isinstance(expected, dict) and not ({"exists", "startswith", "not"} & set(expected)):
            raise ConfigurationError(f"{where}.{path}: a condition is a value, a list, or one of "
                                     "{startswith: S}, {exists: B}, {not: X}")
        out.append(_Condition(_parse_path(path, where), path, expected))
    return tuple(out)


# ------------------------------------------------------------------------------ selectors


@dataclass(frozen=True, slots=True)
class _Selector:
    where: str  # field name, for messages
    kind: str  # const | path | first | template | each | object
    path: tuple[str | int, ...] = ()
    text: str = ""
    const: Any = None
    table: dict[str, Any] | None = None
    default: Any = _MISSING
    cast: str | None = None
    required: bool = False
    children: tuple[tuple[str, _Selector], ...] = ()
    options: tuple[_Selector, ...] = ()
    where_each: tuple[_Condition, ...] = ()

    def value(self, doc: Any) -> Any:
        if self.kind == "const":
            return self.const
        if self.kind == "first":
            for option in self.options:
                v = option.value(doc)
                if v is not _MISSING:
                    return v
            return _MISSING
        if self.kind == "template":
            return self._template(doc)
        if self.kind == "object":
            return _build(self.children, doc) or _MISSING
        if self.kind == "each":
            items = _get(doc, self.path)
            if items is _MISSING:
                return _MISSING
            if not isinstance(items, list):
                raise _Unmapped("mapping_bad_value", f"{self.where}: {self.text} is not a list")
            return [_build(self.children, e) for e in items
                    if all(c.holds(e) for c in self.where_each)]
        raw = _get(doc, self.path)
        if raw is _MISSING:
            return self.default
        if self.table is not None:
            key = raw if isinstance(raw, str) else json.dumps(raw)
            if key in self.table:
                raw = self.table[key]
            elif self.default is not _MISSING:
                return self.default
            else:
                raise _Unmapped("mapping_unmapped_value",
                                f"{self.where}: {_short(raw)} at {self.text} is not in its map "
                                f"({', '.join(map(repr, list(self.table)[:10]))})")
        return _cast(raw, self.cast, self.where) if self.cast else raw

    def _template(self, doc: Any) -> Any:
        missing = []

        def sub(m: re.Match[str]) -> str:
            v = _get(doc, _parse_path(m.group(1), self.where))
            if v is _MISSING:
                missing.append(m.group(1))
                return ""
            return v if isinstance(v, str) else json.dumps(v)

        out = _PLACEHOLDER.sub(sub, self.text)
        return _MISSING if missing else out


def _build(children: Sequence[tuple[str, _Selector]], doc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, selector in children:
        v = selector.value(doc)
        if v is _MISSING:
            if selector.required:
                raise _Unmapped("mapping_missing_field", f"{selector.where}: no value "
                                f"({_describe(selector)})")
            continue
        out[name] = v
    return out


def _describe(s: _Selector) -> str:
    if s.kind == "first":
        return "none of " + ", ".join(_describe(o) for o in s.options)
    if s.kind in ("path", "each"):
        return f"at {s.text}"
    if s.kind == "template":
        return f"template {s.text!r} has a missing placeholder"
    if s.kind == "object":
        return "none of its fields has one: " + "; ".join(
            f"{name} {_describe(c)}" for name, c in s.children)
    return s.kind


def _cast(value: Any, cast: str, where: str) -> Any:
    try:
        if cast == "str":
            if isinstance(value, dict | list):
                raise ValueError("not a scalar")
            return value if isinstance(value, str) else json.dumps(value)
        if cast == "int":
            return int(value)
        if cast == "float":
            return float(value)
        if cast == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "y")
            return bool(value)
        return _timestamp(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Unmapped("mapping_bad_value",
                        f"{where}: {_short(value)} is not a {cast} ({exc})") from exc


def _timestamp(value: Any) -> str:
    """ISO 8601 (UTC when naive), Snowplow's ``YYYY-MM-DD HH:MM:SS.mmm``, or epoch s/ms."""
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds vs seconds
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    if not isinstance(value, str):
        raise ValueError("not a string or a number")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    at = datetime.fromisoformat(text)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def _selector(spec: Any, where: str) -> _Selector:
    if isinstance(spec, str):
        return _Selector(where, "path", path=_parse_path(spec, where), text=spec)
    if not isinstance(spec, dict):
        if isinstance(spec, int | float | bool) or spec is None:
            raise ConfigurationError(f"{where}: a constant is written {{const: {spec!r}}}")
        raise ConfigurationError(f"{where}: a selector is a path, or a mapping, got {spec!r}")
    required = bool(spec.get("required", False))
    kinds = _SPEC_KEYS & set(spec)
    if not kinds:  # a nested object
        children = tuple((k, _selector(v, f"{where}.{k}")) for k, v in spec.items()
                         if k != "required")
        return _Selector(where, "object", children=children, required=required)
    if len(kinds) > 1:
        raise ConfigurationError(f"{where}: give one of {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    known = {kind, "required", "map", "default", "as", "fields", "where"}
    if unknown := set(spec) - known:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if kind == "const":
        return _Selector(where, "const", const=spec["const"], required=required)
    if kind == "first":
        options = spec["first"]
        if not isinstance(options, list) or not options:
            raise ConfigurationError(f"{where}: first takes a non-empty list of selectors")
        return _Selector(where, "first", required=required, options=tuple(
            _selector(o, f"{where}.first[{i}]") for i, o in enumerate(options)))
    if kind == "template":
        text = spec["template"]
        if not isinstance(text, str) or not _PLACEHOLDER.search(text):
            raise ConfigurationError(f"{where}: a template is a string with {{path}} placeholders")
        for m in _PLACEHOLDER.finditer(text):
            _parse_path(m.group(1), where)
        return _Selector(where, "template", text=text, required=required)
    if kind == "each":
        fields = spec.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise ConfigurationError(f"{where}: each needs fields: {{...}} for every element")
        return _Selector(where, "each", path=_parse_path(spec["each"], where), text=spec["each"],
                         required=required, where_each=_conditions(spec.get("where"), where),
                         children=tuple((k, _selector(v, f"{where}[].{k}"))
                                        for k, v in fields.items()))
    cast = spec.get("as")
    if cast is not None and cast not in CASTS:
        raise ConfigurationError(f"{where}: as must be one of {', '.join(CASTS)}, got {cast!r}")
    table = spec.get("map")
    if table is not None and not isinstance(table, dict):
        raise ConfigurationError(f"{where}: map is a mapping of source value: our value")
    return _Selector(where, "path", path=_parse_path(spec["path"], where), text=spec["path"],
                     table={k if isinstance(k, str) else json.dumps(k): v
                            for k, v in table.items()} if table is not None else None,
                     default=spec.get("default", _MISSING), cast=cast, required=required)


# ------------------------------------------------------------------------------ rules


@dataclass(frozen=True, slots=True)
class MappingRule:
    name: str
    emit: str
    when: tuple[_Condition, ...]
    fields: tuple[tuple[str, _Selector], ...]

    def applies(self, doc: Any) -> bool:
        return all(c.holds(doc) for c in self.when)


@dataclass(frozen=True, slots=True)
class Mapping:
    """A parsed mapping file: its rules, tried in order."""

    name: str
    rules: tuple[MappingRule, ...]

    def rule_for(self, doc: Any) -> MappingRule | None:
        return next((r for r in self.rules if r.applies(doc)), None)

    def convert(self, doc: Any) -> dict[str, Any]:
        """Our event (a JSON-ready dict) from one source record, or InvalidEventError."""
        if not isinstance(doc, dict):
            raise InvalidEventError("not_an_object", f"JSON value is a {type(doc).__name__}")
        rule = self.rule_for(doc)
        if rule is None:
            raise InvalidEventError(
                "mapping_no_rule", f"mapping {self.name!r}: no rule matches this record "
                f"(rules: {', '.join(r.name for r in self.rules)})")
        try:
            out = _build(rule.fields, doc)
        except _Unmapped as exc:
            raise InvalidEventError(exc.code, f"mapping {self.name!r}, rule {rule.name!r}: "
                                    f"{exc}") from exc
        return {"type": rule.emit, "schema_version": 1, **out}

    def apply(self, value: bytes | None, *, max_bytes: int = 1_048_576) -> bytes:
        """Source record bytes -> our event's JSON (the same size, encoding and nesting checks
        as our own events first)."""
        doc = parse_document(value, max_bytes=max_bytes)
        return json.dumps(self.convert(doc), ensure_ascii=False,
                          separators=(",", ":")).encode()

    def decode(self, key: bytes | None, value: bytes | None, *,
               max_bytes: int = 1_048_576, **checks: Any) -> tuple[bytes, Interaction]:
        """The worker's step: :meth:`apply`, then our decoder (``decode_interaction`` with
        ``checks``); returns the converted bytes and the event.  A converted event that our
        contract refuses is ``mapping_invalid_output`` naming the rule (the mapping, not the
        producer, must change); the other codes stay what they are for our own events."""
        converted = self.apply(value, max_bytes=max_bytes)
        try:
            return converted, decode_interaction(key, converted, max_bytes=max_bytes, **checks)
        except InvalidEventError as exc:
            if exc.code not in _CONTRACT_CODES:
                raise
            rule = self.rule_for(parse_document(value, max_bytes=max_bytes))
            raise InvalidEventError(
                "mapping_invalid_output", f"mapping {self.name!r}, rule "
                f"{rule.name if rule else '?'!r}: the converted event is invalid: {exc}"
            ) from exc


# decode_interaction's codes for a document that is not a valid event of our contract
_CONTRACT_CODES = frozenset({"validation_error", "missing_user_id", "unknown_type",
                             "unsupported_schema_version"})


def parse_mapping(doc: Any, *, source: str = "mapping") -> Mapping:
    """A :class:`Mapping` from a loaded mapping document; ConfigurationError says what is wrong
    and where."""
    if not isinstance(doc, MappingABC):
        raise ConfigurationError(f"{source}: a mapping file is a YAML mapping with `mapping: 1`")
    if doc.get("mapping") != 1:
        raise ConfigurationError(f"{source}: `mapping: 1` (the format version) is required")
    if unknown := set(doc) - {"mapping", "name", "description", "rules"}:
        raise ConfigurationError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    rules_doc = doc.get("rules")
    if not isinstance(rules_doc, list) or not rules_doc:
        raise ConfigurationError(f"{source}: rules must be a non-empty list")
    rules = []
    for i, r in enumerate(rules_doc):
        where = f"{source}: rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigurationError(f"{where}: a rule is a mapping")
        if unknown := set(r) - {"name", "when", "emit", "fields"}:
            raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = str(r.get("name") or f"rule {i}")
        where = f"{source}: rule {name!r}"
        if r.get("emit") not in EVENT_TYPES:
            raise ConfigurationError(f"{where}: emit must be one of {', '.join(EVENT_TYPES)}")
        fields = r.get("fields")
        if not isinstance(fields, dict):
            raise ConfigurationError(f"{where}: fields must be a mapping of our field: selector")
        if missing := [f for f in ALWAYS_REQUIRED if f not in fields]:
            raise ConfigurationError(f"{where}: fields must give {', '.join(missing)}")
        selectors = []
        for k, v in fields.items():
            s = _selector(v, k)
            if k in ALWAYS_REQUIRED and not s.required:
                s = _required(s)
            selectors.append((k, s))
        rules.append(MappingRule(name, r["emit"], _conditions(r.get("when"), where),
                                 tuple(selectors)))
    return Mapping(str(doc.get("name") or source), tuple(rules))


def _required(s: _Selector) -> _Selector:
    return replace(s, required=True)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
