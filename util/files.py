"""Every file operation of the project that must not leave a half-written result: atomic writes of files
and folders, json in and out, and inputs that must exist (with an error naming what was expected where)."""
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Union

from util.cli import DiskFullError, disk_full

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_write(path: PathLike, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
    """A file object to write `path` through: a temporary file in the same folder, flushed to disk and
    renamed over `path` when the block ends, removed when it raises. Readers see the old file or the
    whole new one, and an interrupted write never leaves a truncated `path`."""
    if not mode.startswith('w'):
        raise ValueError(f"atomic_write writes whole files: mode {mode!r} must start with 'w'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:8]}.tmp')
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # permissions as open() gives
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if disk_full(error) is not None:
            raise DiskFullError(path) from error
        raise


@contextmanager
def atomic_folder(folder: PathLike) -> Iterator[Path]:
    """A temporary sibling folder (`<folder>.partial`) to write into, put in place of `folder` when the
    block ends and removed when it raises: an interrupted run never leaves a half-written `folder`."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def require(path: PathLike, what: str, hint: str = 'see data.md') -> Path:
    """`path` if it exists, else a FileNotFoundError naming what was expected where."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{what} not found: expected {path} ({hint})')
    return path


def read_json(path: PathLike, what: str, hint: str = 'see data.md') -> Any:
    """The json at `path`, which must exist (see `require`)."""
    with open(require(path, what, hint)) as f:
        return json.load(f)


def write_json(obj: Any, path: PathLike) -> None:
    """`obj` as json at `path`, written atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        json.dump(obj, f)
