"""util/files.py: atomic writes of files and folders (a crash never leaves a partial result), json, and
inputs that must exist."""
import json
import os
import re
import stat

import pytest

from util.files import atomic_folder, atomic_write, read_json, require, write_json


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / 'sub' / 'result.csv'
    with atomic_write(path, newline='') as f:
        f.write('a,b\r\n')
    assert path.read_bytes() == b'a,b\r\n'
    with atomic_write(path, 'wb') as f:
        f.write(b'new')
        assert path.read_bytes() == b'a,b\r\n', 'readers see the old file until the block ends'
    assert path.read_bytes() == b'new'
    assert [p.name for p in path.parent.iterdir()] == ['result.csv']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, 'the permissions open() gives'


def test_failed_atomic_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / 'result.json'
    write_json({'epoch': 1}, path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write('{"epoch": ')
            raise KeyboardInterrupt
    assert read_json(path, 'result') == {'epoch': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['result.json']
    with pytest.raises(ValueError, match="mode 'a' must start with 'w'"):
        with atomic_write(path, 'a'):
            pass


def test_atomic_folder_puts_the_folder_in_place_or_nothing(tmp_path):
    folder = tmp_path / 'video' / '0'
    with atomic_folder(folder) as partial:
        (partial / '00000.png').write_bytes(b'mask')
        assert not folder.exists() and partial.name == '0.partial'
    assert [p.name for p in folder.iterdir()] == ['00000.png']
    with pytest.raises(RuntimeError):
        with atomic_folder(folder) as partial:
            (partial / '00001.png').write_bytes(b'half')
            raise RuntimeError('interrupted')
    assert [p.name for p in folder.iterdir()] == ['00000.png'], 'the complete folder stays'
    assert sorted(p.name for p in folder.parent.iterdir()) == ['0']


def test_required_inputs_name_what_was_expected_where(tmp_path):
    missing = tmp_path / 'meta_expressions' / 'valid' / 'meta_expressions.json'
    with pytest.raises(FileNotFoundError, match=re.escape(f'meta file not found: expected {missing} (see data.md)')):
        read_json(missing, 'meta file')
    with pytest.raises(FileNotFoundError, match='run the converter first'):
        require(missing, 'meta file', 'run the converter first')
    missing.parent.mkdir(parents=True)
    missing.write_text(json.dumps({'videos': {}}))
    assert require(missing, 'meta file') == missing and read_json(missing, 'meta file') == {'videos': {}}
