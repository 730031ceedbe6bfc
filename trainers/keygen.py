"""`tfllm keygen`: a new Ed25519 key pair to sign manifests with, or a new key file to encrypt
weights with.

    tfllm keygen --out keys                     # keys/signing_key.pem (private, mode 0600), keys/signing_key.pub.pem
    tfllm keygen --encrypt-key-file model.key   # 64 hex digits (mode 0600), never over an existing file

The signing keys are those `openssl genpkey -algorithm ed25519 -out signing_key.pem` and
`openssl pkey -in signing_key.pem -pubout -out signing_key.pub.pem` make; the encryption key the
one `openssl rand -hex 32` writes. Keep a private key where the signer runs and hand the public one
to whoever verifies; keep a copy of an encryption key, without which nothing sealed with it reads.
"""

from tfllm.encryption import write_new_key
from tfllm.errors import UserError
from tfllm.signing import generate_key_pair, key_id, load_public_key


def run(args):
    if args.out is None and args.encrypt_key_file is None:
        raise UserError("nothing to make: pass --out DIR (a signing key pair), --encrypt-key-file KEY (an "
                        "encryption key), or both")
    if args.encrypt_key_file is not None:
        key = write_new_key(args.encrypt_key_file)
        print(f"Wrote {key.path} (key id {key.key_id}): encrypt with --encrypt-key-file or train.encrypt_key_file; "
              "keep a copy, without it nothing encrypted with it can be read")
    if args.out is not None:
        private_path, public_path = generate_key_pair(args.out)
        print(f"Wrote {private_path} (private: sign with tfllm export --sign-key-file or tfllm sign --key-file) "
              f"and {public_path} (tfllm verify --public-key); key {key_id(load_public_key(public_path))}")
