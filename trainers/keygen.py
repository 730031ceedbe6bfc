"""`tfllm keygen`: a new Ed25519 key pair to sign manifests with.

    tfllm keygen --out keys       # keys/signing_key.pem (private, mode 0600), keys/signing_key.pub.pem

The same keys as `openssl genpkey -algorithm ed25519 -out signing_key.pem` and
`openssl pkey -in signing_key.pem -pubout -out signing_key.pub.pem` make. Keep the private key
where the signer runs; hand the public one to whoever verifies.
"""

from tfllm.signing import generate_key_pair, key_id, load_public_key


def run(args):
    private_path, public_path = generate_key_pair(args.out)
    print(f"Wrote {private_path} (private: sign with tfllm export --sign-key-file or tfllm sign --key-file) "
          f"and {public_path} (tfllm verify --public-key); key {key_id(load_public_key(public_path))}")
