"""Writing directories so that a crash never leaves one half-written."""

import os
import shutil
import tempfile


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
