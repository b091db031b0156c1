"""`modelplane render -f FILE`: print the manifests a ModelDeployment becomes (like `helm template`).

Reads one or more ModelDeployments (YAML, `-` for stdin), validates them with the same models the
operator uses, and prints the children as a YAML stream. Errors name the field, e.g.
`spec.gpu.count: count must be absent or 1 when mig is set`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelplane.api.errors import describe
from modelplane.api.models import API_VERSION, KIND, ModelDeployment
from modelplane.render.children import DEFAULT_RUNTIME_IMAGE, Owner, RenderOptions, build_children

IMAGE_ENV = "MODELPLANE_RUNTIME_IMAGE"


def render_options_from_env() -> RenderOptions:
    return RenderOptions(default_image=os.environ.get(IMAGE_ENV) or DEFAULT_RUNTIME_IMAGE)


def render_documents(documents: list[Any], namespace: str, options: RenderOptions) -> list[dict[str, Any]]:
    """Validate each ModelDeployment and render its children; raises ValueError naming the field."""
    manifests: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = f"document {index + 1}: " if len(documents) > 1 else ""
        if not isinstance(document, dict):
            raise ValueError(f"{where}expected a mapping (a {KIND}), got {type(document).__name__}")
        if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
            raise ValueError(
                f"{where}apiVersion/kind: expected {API_VERSION} {KIND}, "
                f"got {document.get('apiVersion')} {document.get('kind')}"
            )
        try:
            resource = ModelDeployment.model_validate(document)
        except ValidationError as exc:
            raise ValueError(describe(exc, where)) from None
        owner = Owner(
            name=resource.metadata.name,
            namespace=resource.metadata.namespace or namespace,
            uid=resource.metadata.uid,
        )
        manifests += build_children(resource.spec, owner, options)
    return manifests


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="modelplane render",
        description="Print the Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler "
        "a ModelDeployment becomes, as a YAML stream.",
    )
    parser.add_argument("-f", "--filename", required=True, help="a ModelDeployment YAML file, or - for stdin")
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace for manifests that name none (default: default)",
    )
    parser.add_argument(
        "--image",
        help=f"the default runtime image (default: ${IMAGE_ENV}, else {DEFAULT_RUNTIME_IMAGE})",
    )
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text(encoding="utf-8")
        documents = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError) as exc:
        print(f"modelplane render: {args.filename}: {exc}", file=sys.stderr)
        return 1
    options = RenderOptions(default_image=args.image) if args.image else render_options_from_env()
    try:
        manifests = render_documents(documents, args.namespace, options)
    except ValueError as exc:
        print(f"modelplane render: {args.filename}: invalid {KIND}:\n{exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False, width=120))
    return 0
