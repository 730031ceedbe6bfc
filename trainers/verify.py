"""`tfllm verify`: check a run dir or an export against its manifest.json, and its signature.

    tfllm verify runs/demo                      # a run dir (manifest written by train and import)
    tfllm verify exports/demo                   # every version: exports/demo/1/, 2/, ...
    tfllm verify exports/demo/3 --public-key keys/signing_key.pub.pem

Every file is read and hashed again, whatever it holds (encrypted weights too). Each file that
changed, is missing or is not in the manifest is named on a line of its own, then one line
says how many; the exit status is 2. A matching directory prints one "OK" line and exits 0.
With `--public-key`, a missing signature, one made by another key, or a manifest changed after
signing fails the check as well.
"""

import os
import sys

from tfllm.errors import UserError
from tfllm.manifest import (
    MANIFEST_FILENAME, SIGNATURE_FILENAME, manifest_directories, read_manifest, verify_manifest,
)
from tfllm.signing import check_signature, key_id, load_public_key


def run(args):
    public_key = load_public_key(args.public_key) if args.public_key else None
    directories = manifest_directories(args.path)
    if not directories:
        raise UserError(f"{args.path} has no {MANIFEST_FILENAME} (nor numbered export versions holding one); pass a "
                        "run dir or an export written by tfllm train, import or export (a run trained before runs "
                        "kept a manifest gets one when `tfllm train` runs on it again)")
    problems, files = [], 0
    for directory in directories:
        found = verify(directory, public_key)
        prefix = "" if directory == args.path else os.path.relpath(directory, args.path) + "/"
        problems += [prefix + problem for problem in found]
        manifest = _readable_manifest(directory)
        files += len(manifest.get("files") or {}) if manifest else 0
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise UserError(f"{args.path} does not match its {MANIFEST_FILENAME}: {len(problems)} problem(s) above, "
                        f"{files} file(s) listed; restore those files, or write the directory again "
                        "(tfllm train, import or export)")
    print(f"OK {args.path}: {files} file(s) match {_manifests(directories, args.path)}{_signed(directories, public_key)}")


def verify(directory, public_key=None):
    """The problems of one directory with a manifest: its files, then its signature when
    `public_key` is given; [] when it all holds."""
    problems = verify_manifest(directory)
    if public_key is not None and os.path.isfile(os.path.join(directory, MANIFEST_FILENAME)):
        signature = check_signature(directory, public_key)
        if signature:
            problems.append(signature)
    return problems


def _readable_manifest(directory):
    try:
        return read_manifest(directory)
    except (OSError, ValueError):
        return None


def _manifests(directories, path):
    if directories == [path]:
        return MANIFEST_FILENAME
    return f"the {MANIFEST_FILENAME} of {len(directories)} version(s)"


def _signed(directories, public_key):
    if public_key is not None:
        return f"; signed by {key_id(public_key)}"
    if any(os.path.exists(os.path.join(d, SIGNATURE_FILENAME)) for d in directories):
        return f"; {SIGNATURE_FILENAME} not checked (pass --public-key)"
    return "; not signed"
