"""Importing a model's own `model.py`: code its owner ships on purpose, as with Triton's python backend."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from modelplane_runtime.errors import ModelLoadError


def import_code(path: Path, unique: str) -> Any:
    """Import a model's model.py under a private module name, with its folder importable."""
    module_name = f"modelplane_user_model_{re.sub(r'[^0-9a-zA-Z_]', '_', unique)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses, pickling and typing inside model.py can find their module.
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelLoadError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module
