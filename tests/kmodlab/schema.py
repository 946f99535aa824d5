"""Structural-schema pruning and validation of custom resources, as kube-apiserver does it.

A CRD's ``openAPIV3Schema`` is a *structural* OpenAPI schema, not plain JSON
Schema. This module translates the bits ``jsonschema`` does not know:

- ``nullable: true`` → the type also admits ``null``;
- ``x-kubernetes-int-or-string: true`` → integer or string;
- ``x-kubernetes-preserve-unknown-fields`` → no pruning below that node;
- ``x-kubernetes-list-type: set`` → unique items; ``map`` → unique map keys;
- ``x-kubernetes-validations`` (CEL) are not evaluated (documented gap);
- ``format`` is not checked (lenient, as with ``date-time`` on most servers).

Unknown fields are pruned silently (no error), like a structural schema does,
and validation errors become Kubernetes ``StatusCause`` entries with ``field``
paths such as ``spec.osImageURL`` and real-server wording.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
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


class StructuralSchema:
    """One CRD version's schema: prune unknown fields, then validate."""

    def __init__(self, openapi_schema: Mapping[str, Any]) -> None:
        self.raw: Mapping[str, Any] = openapi_schema
        translated = _translate(openapi_schema)
        # metadata is validated by the server's ObjectMeta rules, not by the CRD schema.
        translated.get('properties', {}).pop('metadata', None)
        self._validator = jsonschema.Draft4Validator(translated)

    def prune(self, obj: JSON) -> JSON:
        return prune(obj, self.raw, root=True)

    def validate(self, obj: JSON) -> list[JSON]:
        """Return StatusCauses (empty when valid), sorted by field path like the server."""
        causes = [_cause(error) for error in self._validator.iter_errors(obj)]
        causes.extend(_map_key_duplicates(obj, self.raw, []))
        causes.sort(key=lambda cause: cause['field'])
        return causes
