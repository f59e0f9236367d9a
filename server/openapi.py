"""OpenAPI 3.0 description of the collector's HTTP API, served at ``/api/v1/openapi.json``."""

from __future__ import annotations

from edgebench.agent.fleet import protocol as p


def _ok(description: str, schema: dict | None = None) -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


OBJ = {"type": "object"}
ERR = {"400": _ok("invalid request", {"$ref": "#/components/schemas/Error"}),
       "404": _ok("not found", {"$ref": "#/components/schemas/Error"})}
TOO_LARGE = {"413": _ok("body over its limit: 1 MiB of JSON or TOML, --max-model-size for a model (the connection "
                        "is closed when the Content-Length alone is over the limit)",
                        {"$ref": "#/components/schemas/Error"})}

GATE_PARAMS = [
    {"name": "record", "in": "query", "schema": {"type": "boolean"},
     "description": "also write the verdicts to InfluxDB (measurement edgebench_gate)"},
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "junit", "markdown"]},
     "description": "json (default): the edgebench.gates/1 document; junit: JUnit XML; markdown: a PR comment"}]
VERDICTS = {"description": "verdicts, as ?format= asks", "content": {  # each format its own content type
    "application/json": {"schema": {"$ref": "#/components/schemas/GateDocument"}},
    "application/xml": {"schema": {"type": "string", "description": "JUnit XML (format=junit)"}},
    "text/markdown": {"schema": {"type": "string", "description": "a PR comment (format=markdown)"}}}}
DEVICE_ID = {"name": "device_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}
BROKER = {"409": _ok("no broker admin account configured (edgebench server --broker-admin-user), or the broker user "
                     "of that name is not a device's", {"$ref": "#/components/schemas/Error"}),
          "502": _ok("the broker cannot be reached, refused the admin account, or its Dynamic Security plugin "
                     "refused the change (its error in the message)", {"$ref": "#/components/schemas/Error"})}
UNRECORDED = {"503": _ok("record=true and InfluxDB unreachable: verdicts not recorded",
                       {"$ref": "#/components/schemas/Error"})}

OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {"title": "edgebench collector", "version": "1",
             "description": "Devices, models, jobs and results of an edgebench fleet (docs/fleet.md)."},
    "paths": {
        "/healthz": {"get": {"summary": "broker and InfluxDB reachable", "responses": {
            "200": _ok("healthy", OBJ), "503": _ok("broker or InfluxDB unreachable", OBJ)}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": _ok("metrics")}}},
        "/api/v1/devices": {"get": {"summary": "registered devices: state, last seen, labels, inventory",
                                    "responses": {"200": _ok("devices", OBJ)}}},
        "/api/v1/models": {
            "get": {"summary": "uploaded models", "responses": {"200": _ok("models", OBJ)}},
            "post": {"summary": "upload a model (raw body); stored under its sha256",
                     "parameters": [{"name": "name", "in": "query", "required": True, "schema": {"type": "string"}}],
                     "requestBody": {"content": {"application/octet-stream": {"schema": {
                         "type": "string", "format": "binary"}}}},
                     "responses": {"201": _ok("the model", {"$ref": "#/components/schemas/Model"}), **ERR,
                                   **TOO_LARGE}}},
        "/api/v1/models/{sha256}": {"get": {"summary": "one model", "parameters": [
            {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok("the model", {"$ref": "#/components/schemas/Model"}), **ERR}}},
        "/api/v1/models/{sha256}/content": {"get": {
            "summary": "the model file; honours one Range: bytes=N-, bytes=N-M or bytes=-N (resume)", "parameters": [
                {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "Range", "in": "header", "schema": {"type": "string"}, "description": "one byte range; "
                 "several ranges or other units are ignored (the whole file)"}],
            "responses": {"200": _ok("whole file"), "206": _ok("the requested range, with Content-Range"),
                          "416": _ok("the range starts beyond the end: Content-Range: bytes */SIZE",
                                     {"$ref": "#/components/schemas/Error"}), **ERR}}},
        "/api/v1/jobs": {
            "get": {"summary": "jobs, newest first", "parameters": [
                {"name": "batch", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _ok("jobs", OBJ)}},
            "post": {"summary": "submit a matrix: models x devices x runtimes x delegates x threads",
                     "requestBody": {"content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/JobMatrix"}}}},
                     "responses": {"201": _ok("batch id and the jobs created", OBJ), **ERR, **TOO_LARGE}}},
        "/api/v1/jobs/{job_id}": {"get": {"summary": "one job's state", "parameters": [
            {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok("the job", OBJ), **ERR}}},
        "/api/v1/jobs/{job_id}/cancel": {"post": {"summary": "ask the device to cancel the job", "parameters": [
            {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"202": _ok("cancel sent", OBJ), **ERR}}},
        "/api/v1/results": {"get": {
            "summary": "result summaries with their labels (the device's plus the job's, e.g. release)",
            "parameters": [
                {"name": "batch", "in": "query", "schema": {"type": "string"}},
                {"name": "samples", "in": "query", "schema": {"type": "boolean"},
                 "description": "add latency_ns: the raw latency samples the result carried (at most 10000)"},
                {"name": "latest", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
                 "description": "N: only the N newest results per device x model x runtime x delegate chain asked "
                                "for x delegates that ran x threads x labels (1 or true: the newest)"}],
            "responses": {"200": _ok("results", {"type": "object", "properties": {"results": {
                "type": "array", "items": {"$ref": "#/components/schemas/Result"}}}}), "400": ERR["400"]}}},
        "/api/gates/evaluate": {
            "get": {"summary": "evaluate the release gates of the collector's --gates file on the latest results "
                               "(the same evaluation as `edgebench gate --server`)",
                    "parameters": GATE_PARAMS,
                    "responses": {"200": VERDICTS, "400": ERR["400"], **UNRECORDED,
                                  "409": _ok("no gates file configured", {"$ref": "#/components/schemas/Error"})}},
            "post": {"summary": "evaluate the rules in the body on the latest results",
                     "parameters": GATE_PARAMS,
                     "requestBody": {"required": True, "content": {
                         "application/toml": {"schema": {"type": "string", "description": "[[gate]] tables "
                                                         "(docs/gates.md); any non-JSON content type is read as TOML"}},
                         "application/json": {"schema": {"type": "object", "properties": {
                             "gate": {"type": "array", "items": {"type": "object"}}}}}}},
                     "responses": {"200": VERDICTS, **ERR, **TOO_LARGE, **UNRECORDED}}},
        "/api/gates/verdicts": {"post": {
            "summary": "record verdicts (an edgebench.gates/1 document) in the registry (GET /api/v1/gates/verdicts) "
                       "and in InfluxDB, measurement edgebench_gate; a 503 leaves them in the registry only",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/GateDocument"}}}},
            "responses": {"201": _ok("points written", {"type": "object", "properties": {
                "written": {"type": "integer"}}}), **ERR, **TOO_LARGE,
                "503": _ok("InfluxDB unreachable", {"$ref": "#/components/schemas/Error"})}}},
        "/api/v1/tokens": {
            "get": {"summary": "the API tokens (no secrets): name, role, created, last_used, revoked",
                    "responses": {"200": _ok("tokens", OBJ)}},
            "post": {"summary": "make a token; the answer holds it, shown this once",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["name", "role"], "properties": {
                             "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                             "role": {"type": "string", "enum": ["read", "submit", "admin"]}}}}}},
                     "responses": {"201": _ok("the token", {"type": "object", "properties": {
                         "name": {"type": "string"}, "role": {"type": "string"}, "token": {"type": "string"}}}),
                         **ERR, "409": _ok("a token of that name exists", {"$ref": "#/components/schemas/Error"})}}},
        "/api/v1/tokens/{name}/revoke": {"post": {
            "summary": "revoke a token, at once on every collector", "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok("revoked", OBJ), **ERR}}},
        "/api/v1/devices/{device_id}/credentials": {
            "post": {"summary": "make the device's MQTT credentials on the broker (Dynamic Security: user = device id, "
                                "client id bound to edgebench-agent-ID, a role with its own topics only; as "
                                "fleet-auth.py add-device), or reset its password; the answer holds the password, "
                                "shown this once and not kept by the collector",
                     "parameters": [DEVICE_ID],
                     "responses": {"201": _ok("the credentials", {"$ref": "#/components/schemas/Credentials"}),
                                   **ERR, **BROKER}},
            "delete": {"summary": "remove the device's MQTT user and role; the broker disconnects it",
                       "parameters": [DEVICE_ID],
                       "responses": {"200": _ok("revoked", {"type": "object", "properties": {
                           "device": {"type": "string"}, "revoked": {"type": "boolean"}}}),
                           **ERR, **BROKER}}},
        "/api/v1/gates/verdicts": {"get": {
            "summary": "the recorded gate verdicts, newest first (what the collector's page draws as the gate history)",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                         "maximum": 1000, "default": 100}}],
            "responses": {"200": _ok("verdicts", {"type": "object", "properties": {"verdicts": {
                "type": "array", "items": {"$ref": "#/components/schemas/RecordedVerdict"}}}}), **ERR}}},
        "/api/v1/dead-letters": {"get": {"summary": "invalid messages and why", "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}],
            "responses": {"200": _ok("dead letters", OBJ), **ERR}}},
    },
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {
        "type": "http", "scheme": "bearer", "description": "a token from `edgebench server token create`; roles read, "
        "submit (includes read), admin (includes submit); docs/fleet.md"}}, "schemas": {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
        "Credentials": {"type": "object", "required": ["device", "username", "password", "client_id"], "properties": {
            "device": {"type": "string"}, "username": {"type": "string", "description": "the device id"},
            "password": {"type": "string", "description": "random; shown this once"},
            "client_id": {"type": "string", "description": "the only client id the user may connect with"},
            "reset": {"type": "boolean", "description": "the user existed: its password was replaced"},
            "mqtt_url": {"type": "string", "description": "the broker as boards reach it (--broker-device-url)"}}},
        "Result": {"type": "object", "properties": {
            "job_id": {"type": "string"}, "device_id": {"type": "string"}, "batch_id": {"type": "string"},
            "summary": {"type": "object", "description": "the bench report without its per-run arrays"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "received": {"type": "number"}, "finished": {"type": "number"},
            "drift": {"type": "object", "nullable": True, "description": "drift against the job's reference: "
                      "max_abs_err, mean_abs_err, cosine_mean, top1_agreement, samples, reference_sha; or error"},
            "latency_ns": {"type": "array", "items": {"type": "integer"}, "description": "with samples=1"}}},
        "RecordedVerdict": {"type": "object", "properties": {
            "id": {"type": "integer"}, "recorded": {"type": "number", "description": "Unix time, s"},
            "rule": {"type": "string"}, "model": {"type": "string", "description": "the judged result's model, else "
                                                                                  "the rule's pattern"},
            "board_class": {"type": "string", "description": "'unlabelled' where none"},
            "config": {"type": "string"}, "status": {"type": "string", "enum": ["pass", "fail", "missing",
                                                                                "inconclusive"]},
            "value": {"type": ["number", "null"]}, "message": {"type": "string"}}},
        "GateDocument": {"type": "object", "required": ["verdicts"], "properties": {
            "schema": {"type": "string", "enum": ["edgebench.gates/1"]},
            "exit_code": {"type": "integer", "enum": [0, 1, 2, 6],
                          "description": "0 all pass, 1 a rule failed, 2 data missing, 6 a regression cannot be "
                                         "told yet (inconclusive: more repeats needed)"},
            "recorded": {"type": "integer", "description": "points written to InfluxDB (record=1)"},
            "verdicts": {"type": "array", "items": {
                "type": "object", "required": ["rule", "model", "status", "message"], "properties": {
                "rule": {"type": "string"}, "model": {"type": "string"}, "metric": {"type": "string"},
                "board_class": {"type": "string"}, "config": {"type": "string", "description": "runtime, "
                                                              "delegate chain, threads, variant of the judged results"},
                "case": {"type": "string", "description": "rule x model x configuration: the JUnit test case"},
                "status": {"type": "string", "enum": ["pass", "fail", "missing", "inconclusive"]},
                "notes": {"type": "array", "items": {"type": "string"}},
                "message": {"type": "string"}, "value": {"type": "number", "nullable": True},
                "max": {"type": "number", "nullable": True}, "min": {"type": "number", "nullable": True},
                "baseline": {"type": "string", "nullable": True},
                "regression": {"type": "object", "nullable": True}, "source": {"type": "string", "nullable": True},
                "result_created": {"type": "string", "nullable": True},
                "result_model": {"type": "string", "nullable": True},
                "result_labels": {"type": "object", "nullable": True}}}}}},
        "Model": {"type": "object", "properties": {
            "sha256": {"type": "string"}, "name": {"type": "string"}, "size_bytes": {"type": "integer"},
            "format": {"type": "string", "enum": ["tflite", "onnx"]}, "uploaded": {"type": "number"}}},
        "JobMatrix": {"type": "object", "required": ["models", "devices"], "additionalProperties": False,
                      "description": "at most 10000 jobs (the product of the lists' lengths and the devices "
                                     "selected); unknown keys are refused", "properties": {
            "models": {"type": "array", "maxItems": 1000, "items": {"type": "string", "description": "sha256"}},
            "devices": {"type": "object", "additionalProperties": False, "properties": {
                "ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "all": {"type": "boolean"}}},
            "runtimes": {"type": "array", "maxItems": 1000, "items": {
                "type": "string", "enum": list(p.RUNTIMES), "nullable": True}},
            "delegates": {"type": "array", "maxItems": 1000, "items": {"type": "array", "maxItems": 16,
                                                                       "items": {"type": "string"}}},
            "threads": {"type": "array", "maxItems": 1000, "items": {"type": "integer", "nullable": True}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "labels every job's result carries, e.g. {\"release\": \"v1.5.0\"}"},
            "reference": {"type": "string", "description": "sha256 of an uploaded reference model: every job also "
                          "measures its model's output drift against it"},
            "options": {"type": "object", "additionalProperties": False, "properties": {
                "settings": {"type": "object", "description": "min_runs, min_duration_s, max_duration_s, "
                             "warmup_runs, warmup_duration_s, profile_runs (push --profile-ops)"},
                "shape": {"type": "array", "items": {"type": "string"}},
                "input": {"type": "array", "items": {"type": "string"}},
                "providers": {"type": "array", "items": {"type": "string"}},
                "seed": {"type": "integer"}, "sensors": {"type": "boolean"}, "timeout_s": {"type": "number"},
                "cpus": {"type": "array", "maxItems": 1024, "items": {"type": "integer", "minimum": 0, "maximum": 1023},
                         "description": "pin the benchmark process to these CPU ids (bench --cpus)"},
                "repeats": {"type": "integer", "minimum": 1, "maximum": 1000,
                            "description": "fresh benchmark processes per job (bench --repeats); default 1"},
                "generation": {"type": "object", "additionalProperties": False, "description": "a language "
                               "model's (GGUF) generation per repeat; refused for any other model", "properties": {
                                   key: {"type": "integer", "minimum": 1, "maximum": p.MAX_GENERATION_TOKENS}
                                   for key in p.GENERATION_SETTINGS}}}}}},
    }},
}


def document(routes: list) -> dict:
    """OPENAPI with its security: every operation but /healthz needs a token (``routes``: server/api.py's ROUTES,
    which name each route's role): the role in its description, its 401 and 403 answers. The model content also
    takes the signed URL a job carries."""
    import copy

    described = copy.deepcopy(OPENAPI)
    roles = {(method.lower(), path.replace("{sha}", "{sha256}").replace("{job}", "{job_id}")): role
             for method, path, _, role in routes}
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in described["paths"].items():
        for method, operation in operations.items():
            role = roles.get((method, path))
            if role is None:
                operation["security"] = []
                continue
            operation["description"] = f"Needs a token with the {role} role."
            operation["responses"]["401"] = _ok("no token, a malformed Authorization header, or an unknown or "
                                                "revoked token", error)
            operation["responses"]["403"] = _ok(f"the token's role is below {role}", error)
    content = described["paths"]["/api/v1/models/{sha256}/content"]["get"]
    content["security"] = [{"bearer": []}, {}]
    content["parameters"] += [
        {"name": "expires", "in": "query", "schema": {"type": "integer"}, "description": "signed URL (from a job)"},
        {"name": "sig", "in": "query", "schema": {"type": "string"}, "description": "signed URL (from a job)"}]
    content["description"] = "Needs a token with the read role, or the signed URL a job carries (boards)."
    return described
