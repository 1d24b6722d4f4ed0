"""Warm-latency control (bench/WARM_LATENCY.md): the Python runtime loop of bench/baseline/bootstrap.py, but on ONE
kept-alive HTTP/1.1 connection (http.client), as lambda_runtime's hyper client does; answers `{"ok": true}`.
bootstrap.py's urllib opens a new TCP connection for every request. If this loop is as slow as the Rust control on
the benchmark's proxy, the stall belongs to connection reuse on that path, not to Rust or hyper."""

import http.client
import json
import os

host = os.environ["AWS_LAMBDA_RUNTIME_API"].removeprefix("http://")
conn = http.client.HTTPConnection(host)
API = "/2018-06-01/runtime/invocation"

while True:
    conn.request("GET", f"{API}/next")
    r = conn.getresponse()
    request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
    r.read()
    conn.request("POST", f"{API}/{request_id}/response", body=json.dumps({"ok": True}).encode(),
                 headers={"Content-Type": "application/json"})
    conn.getresponse().read()
