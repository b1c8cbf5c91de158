"""Every file operation of the project that must not leave a half-written result: atomic writes of files
and folders, links, json in and out, inputs that must exist (with an error naming what was expected where),
free space before a large write, and the lock that keeps two runs out of one output folder."""
import fcntl
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, List, Union

from util.cli import DiskFullError, UserError, disk_full

PathLike = Union[str, os.PathLike]
# The temporary files of `atomic_write` (`.<name>.<8 hex digits>.tmp`) and of the tempfile-based saves of
# earlier versions (`.tmp-*`): what a killed write leaves behind.
TEMPORARY_FILE = re.compile(r'^\..+\.[0-9a-f]{8}\.tmp$|^\.tmp-')
LOCK_FILE = '.lock'


def temporary_path(path: Path) -> Path:
    """A fresh name beside `path` for a file that becomes `path` by a rename."""
    return path.with_name(f'.{path.name}.{uuid.uuid4().hex[:8]}.tmp')


@contextmanager
def atomic_write(path: PathLike, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
    """A file object to write `path` through: a temporary file in the same folder, flushed to disk and
    renamed over `path` when the block ends, removed when it raises. Readers see the old file or the
    whole new one, and an interrupted write never leaves a truncated `path`."""
    if not mode.startswith('w'):
        raise ValueError(f"atomic_write writes whole files: mode {mode!r} must start with 'w'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
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


def link_or_copy(source: PathLike, path: PathLike) -> None:
    """`path` with the content of `source`: a hard link where the filesystem allows (no second write), else
    a copy; put in place by a rename, so that `path` is never partial."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporary files that killed writes left in `folder` (see `TEMPORARY_FILE`); the removed."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if p.is_file() and TEMPORARY_FILE.match(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def disk_short(folder: PathLike, size: int) -> UserError:
    """The error that says `folder` has no room for `size` more bytes."""
    free = shutil.disk_usage(folder).free
    return UserError(f'disk full/short: need {size / 2 ** 20:.0f} MB in {folder} ({free / 2 ** 20:.0f} MB free)')


def require_free_space(folder: PathLike, size: int) -> None:
    """`disk_short` when `folder` has less than `size` bytes free (before a large write, instead of a failure
    in its middle)."""
    if shutil.disk_usage(folder).free < size:
        raise disk_short(folder, size)


@contextmanager
def output_lock(folder: PathLike) -> Iterator[None]:
    """Hold `<folder>/.lock` (an flock, released when the block ends or the process dies) so that a second
    run on `folder` stops at once with an error naming the folder and the other run's pid."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(handle, 32, 0).decode(errors='replace').strip() or 'unknown'
            raise UserError(f'{folder} is in use by another run (pid {other}): wait for it to end or choose '
                            f'another output folder') from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f'{os.getpid()}\n'.encode(), 0)
        yield
    finally:
        os.close(handle)
