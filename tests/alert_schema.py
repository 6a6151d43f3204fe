"""Validation of ``alvh.alert.v1`` payloads against the published JSON Schema,
``docs/schema/alert.v1.json`` (draft 2020-12), by the ``jsonschema`` library.

The schema file is the contract consumers read; the tests hold every alert the daemon
publishes and every line of a backtest's ``alerts.jsonl`` to it, so the file cannot
drift from what the code emits. No code is shared with the daemon.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "schema" / "alert.v1.json"


@cache
def schema() -> dict[str, Any]:
    """The schema document (checked against the draft 2020-12 meta-schema once)."""
    document: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    return document


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def alert_errors(payload: object) -> list[str]:
    """Every way ``payload`` departs from the schema, one line each with its JSON path
    (empty list: valid). Use as ``assert alert_errors(p) == []`` so a failure lists them."""
    errors = sorted(_validator().iter_errors(payload), key=lambda e: e.json_path)
    return [f"{e.json_path}: {e.message}" for e in errors]
