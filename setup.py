"""ssljax: self-supervised and metric learning in pure-functional JAX."""

from setuptools import find_packages, setup

setup(
    name="ssljax",
    version="0.1.0",
    description="Self-supervised and metric-learning methods in pure-functional JAX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ssljax", "ssljax.*"]),
    install_requires=[
        "jax>=0.8.0",
        "numpy>=1.26",
        "chex>=0.1.90",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "array-record>=0.8",
        "grain>=0.2.12",
        "ml-collections>=1.1",
        "absl-py>=2.0",
        "mlxtend>=0.23",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4"],
        "tf": ["tensorflow-cpu>=2.16"],
        # PyTorch peers measured side by side in benchmarks/ (never imported
        # by the library).
        "bench": ["torch>=2.9", "torchvision>=0.24", "pillow>=10"],
    },
)
