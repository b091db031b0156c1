"""The one `modelplane` command.

Each subcommand lives in its own module and is imported only when it runs, so the runtime image
(which has no Kopf or pydantic) and the operator image (which has no torch) share one entry point.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module with `main(argv: list[str]) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("modelplane_runtime.cli", "serve models over Open Inference Protocol v2 (HTTP and gRPC)"),
    "fetch": ("modelplane_runtime.fetch", "fetch a model from a URI into a model repository"),
    "operator": ("modelplane.commands.operator", "run the ModelDeployment operator"),
    "crd": ("modelplane.commands.crd", "print the ModelDeployment CustomResourceDefinition"),
    "render": ("modelplane.commands.render", "print the manifests a ModelDeployment becomes"),
    "devcluster": ("modelplane.devcluster.cli", "a local Kubernetes control plane with fake GPU nodes"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: modelplane <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `modelplane <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        from modelplane import __version__

        print(f"modelplane {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"modelplane: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "runtime" if module_name.startswith("modelplane_runtime") else "operator"
        print(
            f"modelplane {name}: missing dependency ({exc}); install modelplane[{extra}]",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
