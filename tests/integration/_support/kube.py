"""Run kubectl and wait for conditions, with failures that say what was observed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message has the command and its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(
            f"`kubectl {' '.join(args)}` exited {returncode}:\n{stderr.strip() or stdout.strip()}"
        )
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def not_found(self) -> bool:
        return "NotFound" in self.stderr or "not found" in self.stderr


@dataclass(frozen=True)
class Kubectl:
    """kubectl with one kubeconfig. ``k("get", "pods")`` returns text; ``k.json(...)`` parsed JSON."""

    binary: Path
    kubeconfig: Path
    timeout: float = 120

    def with_kubeconfig(self, kubeconfig: Path) -> Kubectl:
        return replace(self, kubeconfig=kubeconfig)

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result.returncode, result.stdout, result.stderr)
        return result

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.run(*args, "-o", "json", input=input).stdout)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, **selectors: str) -> Any:
        """One object (``name``) or the list's items."""
        args = ["get", kind] + ([name] if name else [])
        if namespace:
            args += ["-n", namespace]
        for flag, value in selectors.items():
            args += [f"--{flag.replace('_', '-')}={value}"]
        data = self.json(*args)
        return data if name else data["items"]

    def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> Any:
        try:
            return self.get(kind, name, namespace)
        except KubectlError as error:
            if error.not_found:
                return None
            raise

    def apply(
        self, manifest: dict[str, Any] | list[dict[str, Any]] | str, namespace: str | None = None,
        server_side: bool = False,
    ) -> str:  # fmt: skip
        """Apply a manifest (a dict, a list of dicts, or YAML text)."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, list):
            text = yaml.safe_dump_all(manifest, sort_keys=False)
        else:
            text = yaml.safe_dump(manifest, sort_keys=False)
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        return self(*args, input=text)

    def delete(self, kind: str, name: str, namespace: str | None = None, wait: bool = True) -> str:
        args = ["delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}"]
        if namespace:
            args += ["-n", namespace]
        return self(*args)


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message has the last observation."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30,
    describe: str = "condition",
    *,
    interval: float = 0.1,
    max_interval: float = 1.0,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    An exception from the predicate counts as "not yet" (an object may not exist yet). On timeout,
    raises WaitTimeout naming ``describe`` and the last value or exception observed.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as error:  # the last error is reported if the wait times out
            last = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {describe}; last observed: {last!r}")
        time.sleep(interval)  # the poll interval of a wait-for-condition loop
        interval = min(interval * 1.5, max_interval)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """A status condition of an object by type, or None."""
    if not obj:
        return None
    for item in obj.get("status", {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def deployment_available(obj: dict[str, Any] | None) -> bool:
    found = condition(obj, "Available")
    return bool(found and found.get("status") == "True")
