"""`helm test`: the ModelDeployment CRD is Established and the operator answers on its health endpoint.

Runs in the operator image as the operator's ServiceAccount, using only the standard library (the
test must not need anything the image lacks). Every endpoint can be overridden by environment, so
the same script also runs outside a pod against a local control plane.
"""

import json
import os
import ssl
import sys
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
CRD = os.environ.get("MODELPLANE_TEST_CRD", "modeldeployments.modelplane.dev")
HEALTH_URL = os.environ["MODELPLANE_TEST_HEALTH_URL"]


def api_server() -> str:
    default = "https://{}:{}".format(
        os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    return os.environ.get("MODELPLANE_TEST_API_SERVER", default)


def api_get(path: str) -> dict:
    token_file = os.environ.get("MODELPLANE_TEST_TOKEN_FILE", SA + "/token")
    ca_file = os.environ.get("MODELPLANE_TEST_CA_FILE", SA + "/ca.crt")
    with open(token_file) as handle:
        token = handle.read().strip()
    request = urllib.request.Request(api_server() + path, headers={"Authorization": "Bearer " + token})
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.load(response)


def check_crd() -> str | None:
    # A list with a field selector, not a GET: the operator may list and watch CRDs, nothing more.
    try:
        found = api_get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?fieldSelector=metadata.name%3D" + CRD
        )
    except Exception as exc:
        return f"listing CRD {CRD}: {exc}"
    if not found.get("items"):
        return f"CRD {CRD} is not installed"
    conditions = found["items"][0].get("status", {}).get("conditions", [])
    if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return f"CRD {CRD} is not Established: {conditions}"
    return None


def check_health() -> str | None:
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=10) as response:
            if response.status != 200:
                return f"{HEALTH_URL} answered {response.status}"
    except Exception as exc:
        return f"{HEALTH_URL}: {exc}"
    return None


def main() -> int:
    failures = [error for error in (check_crd(), check_health()) if error]
    for error in failures:
        print("FAIL", error, file=sys.stderr)
    if not failures:
        print(f"ok: CRD {CRD} is Established and {HEALTH_URL} is healthy")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
