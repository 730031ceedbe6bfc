"""The export manifest: what an export holds, where it came from, and a SHA-256 of every file.

`EXPORT_DIR/N/manifest.json` sits next to `saved_model.pb`; TensorFlow Serving ignores it. The
server checks it before serving, so a version whose files changed after export (a partial copy,
a bad sync, an edit) is refused instead of served. The manifest itself is the library's
(`tfllm.manifest`): run dirs carry one too, and `tfllm verify` checks either kind.
"""

from tfllm import digests
from tfllm.digests import sha256_of_file  # noqa: F401  a name this module has always offered
from tfllm.manifest import (  # noqa: F401
    ALWAYS_EXCLUDED, FORMAT_VERSION, MANIFEST_FILENAME, SIGNATURE_FILENAME, read_manifest, verify_manifest,
    write_manifest,
)


def file_digests(directory):
    """`{relative path: SHA-256}` of every file under `directory` but the manifest and its
    signature, sorted."""
    return digests.file_digests(directory, ALWAYS_EXCLUDED)
