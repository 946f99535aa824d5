"""Structural-schema pruning and validation of custom resources, as kube-apiserver does it.

A CRD's ``openAPIV3Schema`` is a *structural* OpenAPI schema, not plain JSON
Schema. This module translates the bits ``jsonschema`` does not know:

- ``nullable: true`` → the type also admits ``null``;
- ``x-kubernetes-int-or-string: true`` → integer or string;
- ``x-kubernetes-preserve-unknown-fields`` → no pruning below that node;
- ``x-kubernetes-list-type: set`` → unique items; ``map`` → unique map keys;
- ``x-kubernetes-validations`` (CEL): the rule shapes the vendored CRDs use
  (format validators, ``matches``, image-digest splits, field comparisons,
  ``self == oldSelf`` transition rules, create-only rules) are evaluated by
  :data:`CEL_RULES`; any other rule is skipped (lenient), as is a rule on a
  field that is absent (no defaulting here);
- ``format`` is not checked (lenient, as with ``date-time`` on most servers).

Unknown fields are pruned silently (no error), like a structural schema does,
and validation errors become Kubernetes ``StatusCause`` entries with ``field``
paths such as ``spec.osImageURL`` and real-server wording.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions

JSON = dict[str, Any]


def _translate(node: Any) -> Any:
    """Return a JSON-Schema (draft 4 style) copy of one structural-schema node."""
    if isinstance(node, list):
        return [_translate(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: JSON = {}
    for key, value in node.items():
        if key in ('properties', 'patternProperties', 'definitions'):
            out[key] = {name: _translate(sub) for name, sub in value.items()}
        elif key in ('items', 'additionalProperties', 'not'):
            out[key] = _translate(value)
        elif key in ('allOf', 'anyOf', 'oneOf'):
            out[key] = [_translate(sub) for sub in value]
        elif key.startswith('x-kubernetes-') or key in ('nullable', 'description', 'format', 'default', 'example'):
            continue  # handled below or irrelevant to validation
        else:
            out[key] = value
    if node.get('x-kubernetes-int-or-string'):
        out.pop('type', None)
        out['anyOf'] = out.get('anyOf', []) + [{'type': 'integer'}, {'type': 'string'}]
    if node.get('nullable') and 'type' in out:
        out['type'] = [out['type'], 'null'] if isinstance(out['type'], str) else [*out['type'], 'null']
    if node.get('x-kubernetes-list-type') == 'set':
        out['uniqueItems'] = True
    return out


def prune(obj: Any, schema: Mapping[str, Any], *, root: bool = False) -> Any:
    """Drop fields the structural schema does not declare (in place-safe: returns a new value)."""
    if isinstance(obj, dict):
        if schema.get('x-kubernetes-preserve-unknown-fields'):
            props = schema.get('properties', {})
            return {key: prune(value, props[key]) if key in props else copy.deepcopy(value)
                    for key, value in obj.items()}
        props = schema.get('properties')
        additional = schema.get('additionalProperties')
        result: JSON = {}
        for key, value in obj.items():
            if root and key in ('apiVersion', 'kind', 'metadata'):
                result[key] = copy.deepcopy(value)
            elif props is not None and key in props:
                result[key] = prune(value, props[key])
            elif isinstance(additional, Mapping):
                result[key] = prune(value, additional)
            elif additional is True:
                result[key] = copy.deepcopy(value)
            # else: unknown field, pruned silently
        return result
    if isinstance(obj, list) and isinstance(schema.get('items'), Mapping):
        return [prune(item, schema['items']) for item in obj]
    return copy.deepcopy(obj)


def field_path(path: Iterator[Any] | list[Any]) -> str:
    """``['spec', 'x', 0, 'y']`` → ``spec.x[0].y`` (the server's field path notation)."""
    text = ''
    for part in path:
        if isinstance(part, int):
            text += f'[{part}]'
        else:
            text += f'.{part}' if text else str(part)
    return text


def _go_value(value: Any) -> str:
    """Render a value the way apimachinery quotes it in error messages."""
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(',', ':'))


def _json_type(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def _cause(error: jsonschema.exceptions.ValidationError) -> JSON:
    """Turn one jsonschema error into a Kubernetes StatusCause."""
    path = list(error.absolute_path)
    field = field_path(path)
    value = error.instance
    validator = error.validator
    arg = error.validator_value
    if validator == 'required':
        missing = error.message.split("'")[1] if "'" in error.message else '?'
        return {'reason': 'FieldValueRequired', 'message': 'Required value',
                'field': field_path([*path, missing])}
    if validator == 'type':
        types = arg if isinstance(arg, list) else [arg]
        expected = ', '.join(t for t in types if t != 'null')
        actual = _json_type(value)
        return {'reason': 'FieldValueTypeInvalid',
                'message': f'Invalid value: "{actual}": {field} in body must be of type {expected}: "{actual}"',
                'field': field}
    if validator == 'enum':
        supported = ', '.join(_go_value(v) for v in arg)
        return {'reason': 'FieldValueNotSupported',
                'message': f'Unsupported value: {_go_value(value)}: supported values: {supported}',
                'field': field}
    if validator == 'maxLength':
        return {'reason': 'FieldValueTooLong', 'message': f'Too long: may not be more than {arg} bytes',
                'field': field}
    if validator == 'maxItems':
        return {'reason': 'FieldValueTooMany',
                'message': f'Too many: {len(value)}: must have at most {arg} items', 'field': field}
    if validator == 'uniqueItems':
        return {'reason': 'FieldValueDuplicate', 'message': 'Duplicate value', 'field': field}
    wording = {
        'minLength': f'{field} in body should be at least {arg} chars long',
        'pattern': f"{field} in body should match '{arg}'",
        'minimum': f'{field} in body should be greater than or equal to {arg}',
        'maximum': f'{field} in body should be less than or equal to {arg}',
        'minItems': f'{field} in body should have at least {arg} items',
        'minProperties': f'{field} in body should have at least {arg} properties',
        'maxProperties': f'{field} in body should have at most {arg} properties',
    }.get(str(validator), f'{field} in body {error.message}')
    return {'reason': 'FieldValueInvalid', 'message': f'Invalid value: {_go_value(value)}: {wording}',
            'field': field}


def _map_key_duplicates(obj: Any, schema: Mapping[str, Any], path: list[Any]) -> Iterator[JSON]:
    """``x-kubernetes-list-type: map`` lists must not repeat their key tuple (jsonschema can't say that)."""
    if isinstance(obj, dict):
        props = schema.get('properties', {})
        for key, value in obj.items():
            if key in props:
                yield from _map_key_duplicates(value, props[key], [*path, key])
    elif isinstance(obj, list):
        items = schema.get('items', {})
        if schema.get('x-kubernetes-list-type') == 'map':
            keys = schema.get('x-kubernetes-list-map-keys', [])
            seen: set[str] = set()
            for index, item in enumerate(obj):
                if not isinstance(item, dict):
                    continue
                ident = json.dumps([item.get(k) for k in keys])
                if ident in seen:
                    value = {k: item.get(k) for k in keys}
                    yield {'reason': 'FieldValueDuplicate',
                           'message': f'Duplicate value: {_go_value(value)}',
                           'field': field_path([*path, index])}
                seen.add(ident)
        for index, item in enumerate(obj):
            yield from _map_key_duplicates(item, items, [*path, index])


_DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_DNS1035_LABEL = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
_ABSENT: Any = object()

# A rule check gets (self, oldSelf or _ABSENT) and answers valid?, or None when it cannot tell.
RuleCheck = Callable[[Any, Any], bool | None]


def _cel_string(text: str) -> str:
    """A CEL single-quoted string literal body: only ``\\\\`` and ``\\'`` escapes occur in these CRDs."""
    return text.replace('\\\\', '\\').replace("\\'", "'")


def _compile_rule(rule: str) -> RuleCheck | None:
    """The CEL rule shapes of the vendored CRDs, as Python checks (None: not understood, skipped)."""
    rule = ' '.join(rule.split())
    formats = {'dns1123Subdomain': (_DNS1123_SUBDOMAIN, 253), 'dns1123Label': (_DNS1123_LABEL, 63),
               'dns1035Label': (_DNS1035_LABEL, 63)}
    if match := re.fullmatch(r'!format\.(\w+)\(\)\.validate\(self\)\.hasValue\(\)', rule):
        if match.group(1) not in formats:
            return None
        pattern, limit = formats[match.group(1)]
        return lambda value, old: isinstance(value, str) and len(value) <= limit and bool(pattern.match(value))
    literal = r"'((?:[^'\\]|\\.)*)'"
    alternatives = re.findall(r'self\.matches\(' + literal + r'\)', rule)
    if alternatives and rule == ' || '.join(f"self.matches('{a}')" for a in alternatives):
        regexes = [re.compile(_cel_string(a)) for a in alternatives]
        return lambda value, old: isinstance(value, str) and any(r.search(value) for r in regexes)
    if match := re.fullmatch(r"\(self\.split\('@'\)\.size\(\) == 2 && "
                             r"self\.split\('@'\)\[1\]\.matches\('(.*)'\)\)", rule):
        regex = re.compile(_cel_string(match.group(1)))
        return lambda value, old: (isinstance(value, str) and len(value.split('@')) == 2
                                   and regex.search(value.split('@')[1]) is not None)
    if match := re.fullmatch(r"\(self\.split\('@'\)\[0\]\.matches\('(.*)'\)\)", rule):
        regex = re.compile(_cel_string(match.group(1)))
        return lambda value, old: isinstance(value, str) and regex.search(value.split('@')[0]) is not None
    if match := re.fullmatch(r'self\.(\w+) >= self\.(\w+)', rule):
        left, right = match.groups()
        return lambda value, old: (None if not isinstance(value, dict) or left not in value or right not in value
                                   else value[left] >= value[right])
    if rule == 'self == oldSelf':
        return lambda value, old: None if old is _ABSENT else value == old
    if rule == 'self >= oldSelf':
        return lambda value, old: None if old is _ABSENT else value >= old
    if rule == 'self >= oldSelf || (self == 0 && oldSelf > 0)':
        return lambda value, old: None if old is _ABSENT else value >= old or (value == 0 and old > 0)
    if match := re.fullmatch(r'self\.metadata\.name == self\.spec\.(\w+)\.name \|\| oldSelf\.hasValue\(\) && '
                             r'oldSelf\.spec\.(\w+)\.name\.value\(\) == self\.spec\.(\w+)\.name', rule):
        field = match.group(1)

        def ref_name(obj: Any) -> Any:
            return ((obj.get('spec') or {}).get(field) or {}).get('name') if isinstance(obj, dict) else None

        # Named after its pool on create; on update the pool reference may not change.
        return lambda value, old: (value.get('metadata', {}).get('name') == ref_name(value)
                                   or (old is not _ABSENT and ref_name(old) == ref_name(value)))
    return None


CEL_RULES: dict[str, RuleCheck] = {}  # rule text → check, filled as schemas are loaded (for inspection)


PathPattern = tuple[str | None, ...]


def _collect_rules(schema: Mapping[str, Any], path: PathPattern) -> Iterator[tuple[PathPattern, JSON, RuleCheck]]:
    """(path pattern, rule, check) for every understood rule; ``None`` in a path = any list item / map value."""
    for rule in schema.get('x-kubernetes-validations') or []:
        try:
            check = _compile_rule(rule['rule'])
        except re.error:
            check = None  # a regex dialect Python does not share: skip, leniently
        if check is not None:
            CEL_RULES[rule['rule']] = check
            yield path, rule, check
    for name, sub in (schema.get('properties') or {}).items():
        yield from _collect_rules(sub, (*path, name))
    if isinstance(schema.get('items'), Mapping):
        yield from _collect_rules(schema['items'], (*path, None))
    if isinstance(schema.get('additionalProperties'), Mapping):
        yield from _collect_rules(schema['additionalProperties'], (*path, None))


def _values_at(obj: Any, old: Any, pattern: PathPattern,
               path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """(concrete path, value, old value or _ABSENT) for every value the pattern reaches."""
    if not pattern:
        yield path, obj, old
        return
    head, rest = pattern[0], pattern[1:]
    if head is None:
        if isinstance(obj, list):
            # Transition rules on list items compare by position only when the list kept its length.
            same_shape = isinstance(old, list) and len(old) == len(obj)
            for index, item in enumerate(obj):
                yield from _values_at(item, old[index] if same_shape else _ABSENT, rest, (*path, index))
        elif isinstance(obj, dict):
            for key, item in obj.items():
                yield from _values_at(item, old.get(key, _ABSENT) if isinstance(old, dict) else _ABSENT, rest,
                                      (*path, key))
    elif isinstance(obj, dict) and head in obj:
        yield from _values_at(obj[head], old.get(head, _ABSENT) if isinstance(old, dict) else _ABSENT, rest,
                              (*path, head))


class StructuralSchema:
    """One CRD version's schema: prune unknown fields, then validate."""

    def __init__(self, openapi_schema: Mapping[str, Any]) -> None:
        self.raw: Mapping[str, Any] = openapi_schema
        translated = _translate(openapi_schema)
        # metadata is validated by the server's ObjectMeta rules, not by the CRD schema.
        translated.get('properties', {}).pop('metadata', None)
        self._validator = jsonschema.Draft4Validator(translated)
        self._rules = list(_collect_rules(openapi_schema, ()))

    def prune(self, obj: JSON) -> JSON:
        return prune(obj, self.raw, root=True)

    def validate(self, obj: JSON, old: JSON | None = None) -> list[JSON]:
        """Return StatusCauses (empty when valid), sorted by field path like the server."""
        causes = [_cause(error) for error in self._validator.iter_errors(obj)]
        causes.extend(_map_key_duplicates(obj, self.raw, []))
        if not causes:  # like the server: CEL runs on objects that pass the schema
            causes.extend(self._rule_causes(obj, old))
        causes.sort(key=lambda cause: cause['field'])
        return causes

    def _rule_causes(self, obj: JSON, old: JSON | None) -> Iterator[JSON]:
        for pattern, rule, check in self._rules:
            for path, value, old_value in _values_at(obj, old if old is not None else _ABSENT, pattern):
                if check(value, old_value) is False:
                    field = field_path(list(path))
                    if rule.get('fieldPath'):
                        field = (field + rule['fieldPath']) if field else rule['fieldPath'].lstrip('.')
                    message = rule.get('message') or f"failed rule: {' '.join(rule['rule'].split())}"
                    yield {'reason': rule.get('reason', 'FieldValueInvalid'), 'field': field or '<nil>',
                           'message': f'Invalid value: "{_json_type(value)}": {message}'}
