"""ntkft: linearization and the neural tangent kernel for fine-tuning, in JAX."""
import setuptools

# Lower bounds are the versions this repo was verified with (2026-11, CPU, Python 3.11).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml_collections>=1.1.0",
    "absl-py>=2.5.1",
    "numpy>=2.4",
    "scipy>=1.17",
    "scikit-learn>=1.9",
    "safetensors>=0.8.0",
    "tokenizers>=0.23.3",
    "tqdm>=4.70",
    "matplotlib>=3.11",
    "tensorboardX>=2.6.5",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=9.0",
        "pytest-xdist>=3.8",
        "nbclient>=0.11",
        "nbformat>=5.11",
        "ipykernel>=7.4",
        "ruff>=0.17",
    ],
    "tfds": ["tensorflow-datasets>=4.9"],
}

setuptools.setup(
    name="ntkft",
    version="0.1.0",
    description="Linearized fine-tuning and empirical NTKs for pretrained encoders (JAX/Flax).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["ntkft", "ntkft.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
