"""The error boundary of every command line: a user's mistake (a bad option, a missing or broken file) or a
full disk is said in one line `error: ...` on stderr with a non-zero exit status; `--debug` or
BIFIT_DEBUG=1 shows the traceback instead."""
import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Type

DEBUG_FLAG = '--debug'
DEBUG_VARIABLE = 'BIFIT_DEBUG'
DEBUG_HELP = f'show the traceback of an error instead of its one-line message (or set {DEBUG_VARIABLE}=1)'


class UserError(RuntimeError):
    """A mistake the user can fix (an option, an input file, an output location): its message names the
    culprit and what was expected, and the command line says it in one line."""


class DiskFullError(UserError):
    """No space left on the device while writing `path`."""

    def __init__(self, path):
        super().__init__(f'disk full: no space left on the device while writing {path}; free some space (or '
                         f'write elsewhere) and run the same command again')


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors (an unknown flag, a bad value) are one-line `UserError`s naming the
    option, said by `run` instead of a usage screen."""

    def error(self, message: str):
        raise UserError(f'{message} (see --help)')


# Exceptions whose message is complete for a user: ours, and missing/unwritable paths raised by the OS.
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def disk_full(error: BaseException) -> Optional[OSError]:
    """The ENOSPC error behind `error` (itself, or its cause or context: torch.save and writers wrap it),
    or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        error = error.__cause__ or error.__context__
    return None


def check_writable(path, what: str) -> Path:
    """`path` when a file can be created there (its folder is created if missing; a file is created and
    removed to be sure, also on read-only mounts), else a UserError naming `what`, the folder and why."""
    path = Path(path)
    folder = path if path.suffix == '' and not path.is_file() else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        reason = f'{blocker} is a file, not a folder' if blocker else error.strerror or error
        raise UserError(f'{what} {path}: cannot write in {folder} ({reason}); choose a location '
                        f'you can write to') from error
    return path


def _message(error: BaseException) -> str:
    full = disk_full(error)
    if full is not None and not isinstance(error, UserError):
        error = DiskFullError(full.filename or 'a file')
    return ' '.join(str(error).split())


def run(main: Callable[[Any], Any], parse: Callable[[List[str]], Any], argv: Optional[List[str]] = None,
        user_errors: Tuple[Type[Exception], ...] = ()) -> None:
    """`main(parse(argv))` (default argv: the command line) behind the error boundary: user errors
    (USER_ERRORS and `user_errors`, e.g. the ValueErrors of the evaluation scripts' inputs), full disks and
    `SystemExit('message')` end in one line `error: message` and exit status 1 (130 on Ctrl-C); `--debug`
    (taken out of argv) or BIFIT_DEBUG=1 lets the traceback through. An int that `main` returns is the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, '') not in ('', '0')
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        status = main(parse(argv))
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            if debug:
                raise
            print(f'error: {exit_.code}', file=sys.stderr)
            raise SystemExit(1) from None
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print('error: interrupted', file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if debug or not (isinstance(error, USER_ERRORS + user_errors) or disk_full(error) is not None):
            raise
        print(f'error: {_message(error)}', file=sys.stderr)
        raise SystemExit(1) from None
    if isinstance(status, int) and not isinstance(status, bool):
        raise SystemExit(status)
