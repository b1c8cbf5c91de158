"""File-system helpers of the data loaders and tools: required inputs and atomic json outputs."""
import json
import os
from pathlib import Path
from typing import Any


def require(path: Path, what: str, hint: str = 'see data.md') -> Path:
    """`path` if it exists, else a FileNotFoundError naming what was expected where."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{what} not found: expected {path} ({hint})')
    return path


def read_json(path: Path, what: str, hint: str = 'see data.md') -> Any:
    with open(require(path, what, hint)) as f:
        return json.load(f)


def write_json(obj: Any, path: Path) -> None:
    """Write through a temporary file and rename it, so that concurrent readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    with open(tmp, 'w') as f:
        json.dump(obj, f)
    os.replace(tmp, path)
