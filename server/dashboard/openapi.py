"""The OpenAPI 3.1 description of every ``/api/`` endpoint (``GET /api/openapi.json``).

Written out rather than derived: the API is small, and the document is the contract the
pages and scripts rely on. tests/test_dashboard_api.py checks it names every route.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from shelfrank.server.dashboard.errors import HTTP_STATUS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME_MS: Schema = {"type": "integer", "description": "unix time in milliseconds"}
EVENT_TYPE: Schema = {
    "type": "string",
    "enum": ["view", "add_to_cart", "purchase", "search", "dismiss"],
}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {
                        "type": "string",
                        "enum": list(HTTP_STATUS),
                        "description": "a gRPC status code's name, or METHOD_NOT_ALLOWED"
                        " (HTTP only: the path exists, not with this method; 405)",
                    },
                    "message": {
                        "type": "string",
                        "description": "names the field at fault, as over gRPC",
                    },
                }
            )
        }
    ),
    "Explanation": _object(
        {
            "reason": {
                "type": "string",
                "enum": [
                    "personalized",
                    "because_history",
                    "similar_item",
                    "popular",
                    "exploration",
                    "new_item",
                ],
            },
            "because": _array(STRING),
            "contributions": _array(_object({"source": STRING, "value": NUMBER})),
            "rest": {**NUMBER, "description": "the contributions left out, summed"},
        }
    ),
    "Recommendations": _object(
        {
            "strategy": {
                "type": "string",
                "enum": ["trained", "fold-in", "features", "popularity", "item"],
            },
            "model_version": STRING,
            "variant": {**STRING, "description": "empty: no experiment applied"},
            "experiment": STRING,
            "items": _array(
                _object(
                    {
                        "item_id": STRING,
                        "score": NUMBER,
                        "explanation": _nullable(_ref("Explanation")),
                    }
                )
            ),
        }
    ),
    "Sample": _object(
        {
            "time_ms": TIME_MS,
            "events_per_s": NUMBER,
            "recommend_p50_ms": _nullable(NUMBER),
            "recommend_p99_ms": _nullable(NUMBER),
            "recommend_calls": INTEGER,
        }
    ),
    "Overview": _object(
        {
            "model": _object(
                {
                    "version": _nullable(STRING),
                    "published_ms": _nullable(TIME_MS),
                    "age_s": _nullable(NUMBER),
                    "trained": BOOLEAN,
                    "strategy": {"type": "string", "enum": ["model", "popularity"]},
                }
            ),
            "trainer": _object(
                {
                    "holder": _nullable(STRING),
                    "role": {"type": "string", "enum": ["all", "server", "trainer"]},
                }
            ),
            "counts": _object(
                {
                    "users": INTEGER,
                    "items": INTEGER,
                    "events": INTEGER,
                    "available_items": INTEGER,
                }
            ),
            "replicas": _array(_object({"replica": STRING, "samples": _array(_ref("Sample"))})),
            "this_replica": STRING,
        }
    ),
    "User": _object(
        {
            "user_id": STRING,
            "profile": _array(STRING),
            "events": _array(
                _object(
                    {
                        "time_ms": TIME_MS,
                        "type": EVENT_TYPE,
                        "item_id": STRING,
                        "query": {**STRING, "description": "a search's query (empty: none)"},
                    }
                )
            ),
            "recommendations": _ref("Recommendations"),
        }
    ),
    "WhatIf": _object(
        {
            "events": _array(_object({"item_id": STRING, "type": EVENT_TYPE})),
            "features": _array({**STRING, "description": "'column=value' tokens"}),
            "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        },
        required=[],
    ),
    "WhatIfResult": _object({"before": _ref("Recommendations"), "after": _ref("Recommendations")}),
    "Item": _object(
        {
            "item_id": STRING,
            "features": _array(STRING),
            "available": BOOLEAN,
            "similar": _ref("Recommendations"),
            "shown": {
                **INTEGER,
                "description": "stored responses (served, else reported shown) whose list"
                " held the item, over the last window_days UTC days (today's included)",
            },
            "clicked": {
                **INTEGER,
                "description": "views of the item carrying the recommendation id of such a"
                " response, same days; counted as stored, not the feedback report's"
                " attribution (which also counts views without an id by its time window)",
            },
            "window_days": INTEGER,
            "audit": _array(
                _object({"time_ms": TIME_MS, "actor": STRING, "action": STRING, "detail": STRING})
            ),
        }
    ),
    "Availability": _object({"available": BOOLEAN}),
    "AvailabilityResult": _object({"changed": BOOLEAN, "available": BOOLEAN}),
    "EvaluationInfo": _object({"name": STRING, "saved_ms": TIME_MS, "files": _array(STRING)}),
    "Evaluation": {
        "allOf": [
            _ref("EvaluationInfo"),
            _object({"report": {"description": "the stored report.json (null: none)"}}),
        ]
    },
}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Schema]:
    described = {400: "invalid input (the message names the field)", 401: "no or wrong token"}
    described |= {403: "CSRF check failed", 404: "unknown", 503: "store unavailable, retry"}
    described |= {405: "not with this method (METHOD_NOT_ALLOWED; the Allow header says which)"}
    described |= {429: "too large (RESOURCE_EXHAUSTED: more than a Track batch)"}
    return {
        str(code): {"description": described[code], **_json(_ref("Error"))}
        for code in (401, 405, 503, *codes)
    }


def _ok(schema: Schema, description: str = "OK") -> dict[str, Schema]:
    return {"200": {"description": description, **_json(schema)}}


def _path_parameter(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": STRING,
        "description": description,
    }


USER_ID = _path_parameter("user_id", "URL-encoded; may hold '/'")
ITEM_ID = _path_parameter("item_id", "URL-encoded; may hold '/'")
NAME = _path_parameter("name", "the evaluation's name")
CSRF_PARAMETER: Schema = {
    "name": "X-CSRF-Token",
    "in": "header",
    "required": False,
    "schema": STRING,
    "description": "with a session cookie (not with a bearer token): the shelfrank_csrf cookie",
}


def _paths() -> dict[str, Schema]:
    return {
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", **_json({"type": "object"})}},
            }
        },
        "/api/overview": {
            "get": {
                "summary": "Serving model, trainer, counts, an hour of load per replica",
                "responses": {**_ok(_ref("Overview")), **_errors()},
            }
        },
        "/api/users/{user_id}": {
            "get": {
                "summary": "A shopper: profile, latest 100 events, explained recommendations"
                " (a look: no impression recorded, not counted as served)",
                "parameters": [
                    USER_ID,
                    {
                        "name": "k",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    },
                ],
                "responses": {**_ok(_ref("User")), **_errors(400, 404)},
            }
        },
        "/api/users/{user_id}/what-if": {
            "post": {
                "summary": "Recommendations as if these events were tracked and these"
                " features given; nothing is stored",
                "parameters": [USER_ID, CSRF_PARAMETER],
                "requestBody": {"required": True, **_json(_ref("WhatIf"))},
                "responses": {**_ok(_ref("WhatIfResult")), **_errors(400, 403, 404, 429)},
            }
        },
        "/api/items/{item_id}": {
            "get": {
                "summary": "An item: features, availability, similar items, how often it was"
                " shown and clicked over the last 7 UTC days, audit log (every availability"
                " change, from the dashboard or gRPC SetAvailability)",
                "parameters": [ITEM_ID],
                "responses": {**_ok(_ref("Item")), **_errors(400, 404)},
            }
        },
        "/api/items/{item_id}/availability": {
            "post": {
                "summary": "Make the item (un)available, from every process's next call;"
                " audited when it changes (actor: the caller)",
                "parameters": [ITEM_ID, CSRF_PARAMETER],
                "requestBody": {"required": True, **_json(_ref("Availability"))},
                "responses": {**_ok(_ref("AvailabilityResult")), **_errors(400, 403, 404)},
            }
        },
        "/api/experiments": {
            "get": {
                "summary": "The feedback report: each experiment's variants (CTR, conversion,"
                " intervals, by day) and comparisons with verdicts",
                "responses": {
                    **_ok({"type": "object"}, "the report JSON (README: Feedback and experiments)"),
                    **_errors(400),
                },
            }
        },
        "/api/evaluations": {
            "get": {
                "summary": "Stored evaluation runs, newest first",
                "responses": {
                    **_ok(_object({"evaluations": _array(_ref("EvaluationInfo"))})),
                    **_errors(),
                },
            }
        },
        "/api/evaluations/{name}": {
            "get": {
                "summary": "A stored evaluation and its report",
                "parameters": [NAME],
                "responses": {**_ok(_ref("Evaluation")), **_errors(404)},
            }
        },
        "/api/evaluations/{name}/files/{file}": {
            "get": {
                "summary": "A stored file of an evaluation (its report or a plot)",
                "parameters": [NAME, _path_parameter("file", "a file name the run lists")],
                "responses": {
                    "200": {
                        "description": "the stored bytes",
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    **_errors(404),
                },
            }
        },
    }


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shelfrank dashboard API",
            "version": "1",
            "description": "The JSON API behind the dashboard (`shelfrank serve --http-port`)."
            " Errors carry the gRPC code and its message; the HTTP status follows from"
            " the code. With tokens configured every call needs `Authorization: Bearer"
            " <token>` or the dashboard's session cookie (then POSTs need X-CSRF-Token)."
            " A Host header the server does not answer to (serve --http-allowed-host) gets"
            " a plain-text 400.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "shelfrank_session"},
            },
        },
    }
