"""The pod the operator renders, run here as processes: its fetch init container, then its server.

The operator and the runtime meet only at command-line flags, mount paths, port numbers, probe paths
and scrape annotations. This test reads all of them from `render` (never from a copy), maps each
mount to a folder and each container port to a free port, and runs the real `modelplane` command:
`fetch` exactly as the init container would, then `serve` with the model volume read-only, polled
through the rendered probes and called with tritonclient under the served name and version.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from modelplane.api.models import API_VERSION, KIND, ModelDeployment
from modelplane.render.children import Owner, build_children
from tritonclient.utils import InferenceServerException

from tests.runtime.fetch_support import FileServer, fetch_env
from tests.runtime.modelgen import mlp_module, torchscript_mlp
from tests.runtime.serverproc import MODELPLANE, Server, free_ports, http_status, wait_for

TOKEN = "s3cret-token"
X = np.random.default_rng(7).standard_normal((3, 64), dtype=np.float32)


@dataclass
class Pod:
    """The rendered pod template's parts this test runs."""

    template: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return self.template["spec"]

    @property
    def init(self) -> dict[str, Any]:
        [container] = self.spec["initContainers"]
        return container

    @property
    def server(self) -> dict[str, Any]:
        [container] = self.spec["containers"]
        return container


def render_pod(spec: dict[str, Any], name: str = "mlp") -> Pod:
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": "models", "uid": "0000-1111"},
        "spec": spec,
    }
    resource = ModelDeployment.model_validate(document)
    children = build_children(resource.spec, Owner(name, "models", "0000-1111"))
    [deployment] = [child for child in children if child["kind"] == "Deployment"]
    return Pod(deployment["spec"]["template"])


class Node:
    """Stands in for the kubelet: a folder per volume, a free port per container port."""

    def __init__(self, root: Path, pod: Pod) -> None:
        self.volumes = {volume["name"]: root / volume["name"] for volume in pod.spec["volumes"]}
        for path in self.volumes.values():
            path.mkdir(parents=True)
        ports = pod.server["ports"]
        self.ports = dict(zip((p["containerPort"] for p in ports), free_ports(len(ports)), strict=True))
        self.named_ports = {p["name"]: self.ports[p["containerPort"]] for p in ports}

    def mount_map(self, container: dict[str, Any]) -> list[tuple[str, Path]]:
        """Mount paths of a container, longest first, with the folder each stands for."""
        mounts = [
            (m["mountPath"], self.volumes[m["name"]] / m.get("subPath", ""))
            for m in container["volumeMounts"]
        ]
        return sorted(mounts, key=lambda pair: len(pair[0]), reverse=True)

    def localize(self, container: dict[str, Any]) -> list[str]:
        """The container's args with mount paths and port numbers mapped onto this machine."""
        mounts = self.mount_map(container)
        args: list[str] = []
        previous = ""
        for arg in container["args"]:
            if previous.endswith("-port") and int(arg) in self.ports:
                arg = str(self.ports[int(arg)])
            for mount_path, folder in mounts:
                if arg == mount_path or arg.startswith(mount_path + "/"):
                    arg = str(folder) + arg[len(mount_path) :]
                    break
            args.append(arg)
            previous = arg
        return args

    def env(self, container: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
        env = fetch_env()
        mounts = self.mount_map(container)
        for item in container.get("env", []):
            value = item["value"]
            for mount_path, folder in mounts:
                if value == mount_path or value.startswith(mount_path + "/"):
                    value = str(folder) + value[len(mount_path) :]
                    break
            env[item["name"]] = value
        env.update(extra or {})
        return env

    def probe(self, container: dict[str, Any], probe: str) -> int | None:
        get = container[probe]["httpGet"]
        return http_status(self.named_ports[get["port"]], get["path"])


def read_only(folder: Path) -> None:
    """What `readOnly: true` on the server's model mount means: nothing under it can be written."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


def run_init(node: Node, pod: Pod, *extra: str) -> subprocess.CompletedProcess[str]:
    """The init container: `modelplane` with its rendered args, in its rendered environment."""
    return subprocess.run(
        [MODELPLANE, *node.localize(pod.init), *extra],
        env=node.env(pod.init),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_pod(node: Node, pod: Pod, log_dir: Path) -> Server:
    """Run the pod as a kubelet would: the init container to completion, the model volume mounted
    read-only into the server, and the server until its startup probe passes."""
    fetched = run_init(node, pod)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    read_only(node.volumes["model"])

    args = [MODELPLANE, *node.localize(pod.server), "--host", "127.0.0.1"]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=node.env(pod.server))
    named = node.named_ports
    server = Server(process, named["http"], named["grpc"], named["metrics"], log_path, args)
    try:
        wait_for(lambda: not server.alive() or node.probe(pod.server, "startupProbe") == 200, timeout=90)
        assert server.alive(), server.log()
    except BaseException:
        server.stop(5)
        raise
    return server


def test_rendered_pod_fetches_and_serves_an_exported_model(tmp_path: Path, files: FileServer) -> None:
    module = mlp_module(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.zeros(2, 64),), dynamic_shapes=({0: batch},))
    source = tmp_path / "src" / "mlp.pt2"
    source.parent.mkdir()
    torch.export.save(program, str(source))
    uri = files.put("/models/mlp.pt2", source.read_bytes())

    pod = render_pod(
        {
            "model": {"uri": uri, "name": "classifier", "version": "3"},
            "runtime": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 500, "authTokenSecret": "api-token"},
            "startup": {"maxLoadSeconds": 60},
        }
    )
    node = Node(tmp_path / "node", pod)
    (node.volumes["auth-token"] / "token").write_text(TOKEN + "\n")

    server = start_pod(node, pod, tmp_path / "logs")
    try:
        # After the startup probe, readiness and liveness pass too.
        assert node.probe(pod.server, "readinessProbe") == 200
        assert node.probe(pod.server, "livenessProbe") == 200

        headers = {"Authorization": f"Bearer {TOKEN}"}
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            assert client.is_model_ready("classifier", "3", headers=headers)
            config = client.get_model_config("classifier", "3", headers=headers)
            assert config["max_batch_size"] == 16
            assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
            metadata = client.get_model_metadata("classifier", headers=headers)
            [input_meta] = metadata["inputs"]
            [output_meta] = metadata["outputs"]
            request = httpclient.InferInput(input_meta["name"], list(X.shape), "FP32")
            request.set_data_from_numpy(X)
            result = client.infer("classifier", [request], model_version="3", headers=headers)
            with torch.inference_mode():
                expected = module(torch.from_numpy(X)).numpy()
            np.testing.assert_allclose(result.as_numpy(output_meta["name"]), expected, rtol=1e-5, atol=1e-6)
            with pytest.raises(InferenceServerException):  # the token from authTokenSecret is enforced
                client.infer("classifier", [request], model_version="3")
        finally:
            client.close()

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert grpc.is_model_ready("classifier", "3", headers={"authorization": f"Bearer {TOKEN}"})
        finally:
            grpc.close()

        # The scrape annotations point at the runtime's Triton metrics.
        annotations = pod.template["metadata"]["annotations"]
        scraped = http_status(
            node.ports[int(annotations["prometheus.io/port"])], annotations["prometheus.io/path"]
        )
        assert scraped == 200
        assert server.metric("nv_inference_request_success", "classifier", "3") >= 1
    finally:
        code = server.stop(timeout=pod.spec.get("terminationGracePeriodSeconds", 30))
    assert code == 0, server.log()


def test_rendered_pod_serves_a_fetched_triton_repository(tmp_path: Path) -> None:
    """A file:// folder holding a Triton repository is copied as it is and served under its name."""
    repository = tmp_path / "triton"
    module = torchscript_mlp(repository, name="mlp", max_batch_size=8)
    pod = render_pod({"model": {"uri": f"file://{repository}", "format": "torchscript"}}, name="mlp")
    node = Node(tmp_path / "node", pod)

    server = start_pod(node, pod, tmp_path / "logs")
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            request = grpcclient.InferInput("INPUT__0", list(X.shape), "FP32")
            request.set_data_from_numpy(X)
            result = client.infer("mlp", [request], model_version="1")
            with torch.inference_mode():
                expected = module(torch.from_numpy(X)).numpy()
            np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected, rtol=1e-5, atol=1e-6)
        finally:
            client.close()
    finally:
        assert server.stop() == 0, server.log()


def test_rendered_fetch_of_a_missing_model_fails_with_the_uri_in_its_message(
    tmp_path: Path, files: FileServer
) -> None:
    """The init container's failure is what the pod status (and so the ModelDeployment) shows."""
    uri = f"{files.url}/models/missing.pt2"
    pod = render_pod({"model": {"uri": uri}})
    node = Node(tmp_path / "node", pod)
    fetched = run_init(node, pod, "--retries", "0")
    assert fetched.returncode == 1
    last = (fetched.stdout + fetched.stderr).strip().splitlines()[-1]
    assert uri in last, last
    assert "404" in last, last
    assert not [p for p in node.volumes["model"].iterdir() if not p.name.startswith(".")]
    assert os.access(node.volumes["model"], os.W_OK)
