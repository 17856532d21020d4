"""The providers' machine-readable specifications, read where the workspace keeps them.

They live beside the repository in ``../shared/providers/specs/`` (``DIALER_PROVIDER_SPECS``
points elsewhere) and are never copied into it. Tests that need them skip with the reason when
they are absent, and fail under ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

from tests.conftest import unavailable

_WORKSPACE = Path(__file__).resolve().parents[2].parent
SPECS = Path(os.environ.get("DIALER_PROVIDER_SPECS", _WORKSPACE / "shared/providers/specs"))


def spec_file(relative: str) -> Path:
    path = SPECS / relative
    if not path.is_file():
        unavailable(f"no provider specification at {path} (set DIALER_PROVIDER_SPECS)")
    return path


@cache
def _voice_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(spec_file("vonage/voice.yml").read_text())
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    # Known defects (specs/README.md): each endpoint's type is pinned to its one documented value,
    # else a phone endpoint matches two branches of the `to` oneOf.
    for name, kind in {
        "EndpointPhoneTo": "phone",
        "EndpointPhoneFrom": "phone",
        "EndpointSip": "sip",
        "EndpointWebsocket": "websocket",
        "EndpointVBCExtension": "vbc",
        "EndpointApp": "app",
    }.items():
        schemas[name]["properties"]["type"]["enum"] = [kind]
    # The seed document is newer: length_timer goes to 86400 seconds.
    base = schemas["CreateCallRequestBase"]["properties"]
    base["length_timer"]["maximum"] = 86400
    return document


def voice_schema(name: str) -> jsonschema.protocols.Validator:
    """A validator for ``#/components/schemas/<name>`` of Vonage's Voice API spec."""
    document = _voice_document()
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("voice.yml", resource)
    schema = {"$ref": f"voice.yml#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def error_schema(name: str) -> jsonschema.protocols.Validator:
    """A validator for one of the shared error answers (``common_errors.yml``)."""
    document = yaml.safe_load(spec_file("vonage/common_errors.yml").read_text())
    schema = document["components"]["responses"][name]["content"]["application/json"]["schema"]
    schema = dict(schema, required=list(schema["properties"]))  # every documented field is sent
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("common_errors.yml", resource)
    schema = json.loads(json.dumps(schema).replace('"#/components', '"common_errors.yml#/components'))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def ncco_schema() -> jsonschema.protocols.Validator:
    """A validator for a whole NCCO, from Vonage's NCCO JSON Schema (draft 4)."""
    schema = json.loads(spec_file("vonage/ncco-schema.json").read_text())
    registry = Registry().with_resource("ncco", Resource.from_contents(schema, default_specification=DRAFT4))
    return jsonschema.Draft4Validator(schema, registry=registry)


def fonestorm_schema(name: str) -> jsonschema.protocols.Validator:
    """A validator for ``#/definitions/<name>`` of FoneStorm's 2.4 Swagger spec."""
    document = json.loads(spec_file("fractel/fonestorm-v2.4-swagger.json").read_text())
    resource = Resource.from_contents(document, default_specification=DRAFT4)
    registry = Registry().with_resource("fonestorm", resource)
    return jsonschema.Draft4Validator({"$ref": f"fonestorm#/definitions/{name}"}, registry=registry)


def fonestorm_operation(path: str, method: str = "post") -> dict[str, Any]:
    document = json.loads(spec_file("fractel/fonestorm-v2.4-swagger.json").read_text())
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


def problems(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    """Every way ``instance`` fails the schema, as readable lines (empty when it conforms)."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]
