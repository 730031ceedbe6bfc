"""Durable writes: a crash never leaves a file or directory half-written.

Every file a run, an evaluation or an export writes goes through `write_atomically` (one file)
or `staging_directory` (a directory built whole beside its target, then renamed into place);
`read_json_if_present` reads back what they wrote.
"""

import contextlib
import json
import os
import shutil
import tempfile

from tfllm.errors import UserError


def write_atomically(path, content, mode=None):
    """Write `content` (str as UTF-8, or bytes) to `path` through a temporary sibling and a rename.

    Readers see the old file or the new one, never part of either. `mode` sets the new file's
    permission bits (default: what a plain `open` would create).
    """
    with atomically_written(path, mode) as file:
        file.write(content.encode("utf-8") if isinstance(content, str) else content)


@contextlib.contextmanager
def atomically_written(path, mode=None):
    """A binary file to write in pieces (a stream too large for memory) that replaces `path`
    whole when the block ends, or never appears if it raises; `mode` as in `write_atomically`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
        # mkstemp creates the file private (0600); give it the permissions `open` would have.
        os.chmod(temporary, _default_file_mode() if mode is None else mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_user_file(path, what, hint, binary=False):
    """The content of a file the user named (text unless `binary`); one `UserError` line naming
    `what` (its flag or key) and `path`, then `hint`, when it cannot be read or is not UTF-8."""
    try:
        with open(path, "rb" if binary else "r", **({} if binary else {"encoding": "utf-8"})) as file:
            return file.read()
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or type(error).__name__}; {hint}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {path} is not UTF-8 text ({error.reason}); {hint}") from None


def read_json_if_present(path):
    """The JSON content of `path`, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def _default_file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def staging_directory(target, prefix=None):
    """Yield a new empty directory beside `target`; on success it replaces `target` whole.

    On an exception the staging directory is removed and `target` is left as it was. `prefix`
    names the staging directory (default `.NAME.`): a name starting with a dot, or one that is
    not a number, is skipped by readers that poll the parent (TF Serving loads only numbers).
    """
    parent = os.path.dirname(os.path.abspath(target))
    staging = tempfile.mkdtemp(prefix=prefix or f".{os.path.basename(target)}.", dir=parent)
    # mkdtemp makes it private; a reader running as another user (a server) must see the result.
    os.chmod(staging, 0o755)
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(source, target):
    """Rename the finished directory `source` to `target`; an existing `target` is replaced.

    A directory rename cannot overwrite a non-empty directory, so the old one steps aside
    first and is deleted only once the new one is in place: at every moment `target` is either
    the complete old directory or the complete new one.
    """
    if not os.path.exists(target):
        os.replace(source, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=os.path.dirname(os.path.abspath(target)))
    os.rmdir(old)
    os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)
