from setuptools import find_packages, setup

setup(
    name="tfllm",
    version="0.1.0",
    description="Train, evaluate and serve language models with TensorFlow and Keras.",
    # The programs live in the repository's top-level trainers/ and export/ folders but install
    # as tfllm.trainers and tfllm.export: a top-level `export` package in site-packages would
    # collide with any other project's.
    packages=find_packages(include=["tfllm", "tfllm.*"]) + ["tfllm.trainers", "tfllm.export"],
    package_dir={"tfllm.trainers": "trainers", "tfllm.export": "export"},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.0",
        "tensorflow-text==2.21.1",
        "keras>=3.10",
        "keras-hub==0.32.0",
        "tensorboard",
        "pyyaml>=6",
        "sentencepiece>=0.2",
        "tokenizers>=0.20",
        "sacrebleu>=2.4",
        "rouge-score>=0.1.2",
        "werkzeug>=3.0",
        "safetensors>=0.4",
        "huggingface-hub>=0.20",  # tfllm import hf://ORG/NAME
        "jinja2>=3.1.6",  # chat templates (the version transformers needs for its sandbox)
        "datasketch>=1.6",  # MinHash and locality-sensitive hashing: near-duplicate removal
        "cryptography>=42",  # AES-GCM weights at rest, Ed25519 manifest signatures
    ],
    # transformers and torch are the reference the imported checkpoints are tested against (CPU
    # builds; 2.13.0 is the CPU wheel this project's machines carry).
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6", "torch==2.13.0", "transformers>=4.51"]},
    entry_points={"console_scripts": ["tfllm=tfllm.cli:main"]},
)
