"""The Lambda runtime API loop for the Python baseline, in the shape of AWS's custom-runtime tutorial: import the
handler (which builds its boto3 client at import), then get the next invocation, call the handler, post the result
or the error, forever. It stands in for awslambdaric, whose native client never answered an invocation from cargo
lambda's emulator here; it does less work than awslambdaric, so it can only make the baseline look faster.
"""

import json
import os
import sys
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handler  # noqa: E402  (module load = the function's init: boto3 client built here)

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"].removeprefix("http://") + "/2018-06-01/runtime/invocation"


def post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()


while True:
    with urllib.request.urlopen(f"{API}/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read() or b"{}")
    try:
        result = handler.handler(event, None)
    except Exception as e:  # noqa: BLE001 - reported to the runtime API, as awslambdaric does
        post(f"{API}/{request_id}/error", {"errorType": type(e).__name__, "errorMessage": str(e),
                                           "stackTrace": traceback.format_exc().splitlines()})
        continue
    post(f"{API}/{request_id}/response", result)
