"""Atomic writes: a reader never sees a half-written file or directory.

Everything the package writes (run directories, metrics, plots, SavedModel
versions) is first written to a temporary sibling and then renamed into
place; a rename within one filesystem is atomic, so an interrupted job
leaves either the old state or the new one, plus at most a hidden
`.<name>.partial-*` sibling that the next run ignores.
"""

import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
    """Yields a temporary sibling directory that becomes `path` on success.

    Args:
        path: the final directory.
        overwrite: replace an existing `path` (the old one is removed only
            after the new one is complete).

    Yields:
        The temporary directory to fill.

    Raises:
        FileExistsError: when `path` exists and `overwrite` is false.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass --overwrite.")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        if not overwrite:
            shutil.rmtree(partial, ignore_errors=True)
            raise FileExistsError(f"{path} appeared while writing; nothing replaced.")
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
        os.rmdir(old)
        os.rename(path, old)
    os.rename(partial, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """Yields a file object on a temporary sibling renamed to `path` on close."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, partial = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.partial-", dir=os.path.dirname(path)
    )
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise


def write_json(path, data):
    """Writes `data` as indented JSON, atomically."""
    with atomic_file(path) as stream:
        json.dump(data, stream, indent=2, sort_keys=False)
        stream.write("\n")


def read_json(path):
    """Reads a JSON file, with an error that names the file when it is bad."""
    try:
        with open(path) as stream:
            return json.load(stream)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
