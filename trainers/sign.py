"""`tfllm sign`: sign the manifest of a run dir or an export with an Ed25519 private key.

    tfllm keygen --out keys                                  # keys/signing_key.pem, .pub.pem
    tfllm sign runs/demo --key-file keys/signing_key.pem     # writes runs/demo/manifest.json.sig
    tfllm verify runs/demo --public-key keys/signing_key.pub.pem

An export is signed as it is written with `tfllm export --sign-key-file KEY`; this verb signs
what exists already: a run dir, whose manifest `tfllm train` and `tfllm import` write, or an
export (every version of an export base dir). The files are checked against the manifest first:
a signature vouches for what is on disk, so a directory that does not match is refused. Training
the run again rewrites its manifest and removes the signature, which no longer holds; sign it again.
"""

import os

from tfllm.errors import UserError
from tfllm.manifest import MANIFEST_FILENAME, manifest_directories, verify_manifest
from tfllm.signing import key_id, load_private_key, sign_manifest


def run(args):
    key = load_private_key(args.key_file, "--key-file")
    directories = manifest_directories(args.path)
    if not directories:
        raise UserError(f"{args.path} has no {MANIFEST_FILENAME}; sign a run dir or an export written by tfllm "
                        "train, import or export")
    for directory in directories:
        problems = verify_manifest(directory)
        if problems:
            raise UserError(f"{directory} does not match its {MANIFEST_FILENAME} ({'; '.join(problems[:3])}"
                            f"{'; ...' if len(problems) > 3 else ''}); nothing was signed. "
                            f"`tfllm verify {directory}` names every file")
    signed = [sign_manifest(directory, key) for directory in directories]
    where = signed[0] if len(signed) == 1 else f"{len(signed)} versions under {os.path.abspath(args.path)}"
    print(f"Signed {where} with {key_id(key.public_key())}")
