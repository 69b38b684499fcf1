"""sprune: pruning self-supervised speech models and their language models.

Dependencies are pinned in tools/requirements.txt and installed by tools/install.sh;
`install_requires` only names what the core imports, unpinned, for use inside other envs.
"""
from setuptools import find_packages, setup

setup(
    name="sprune",
    version="0.1.0",
    description="Pruning toolkit for self-supervised speech models (wav2vec 2.0, HuBERT, WavLM)",
    packages=find_packages(include=["sprune", "sprune.*"]),
    package_data={"sprune": ["py.typed", "resources/*", "resources/upstream/*/*"]},
    python_requires=">=3.10",
    install_requires=["torch", "torchaudio", "numpy", "soundfile", "kaldiio", "PyYAML",
                      "tqdm", "safetensors"],
    entry_points={"console_scripts": ["sprune = sprune.cli:main"]},
)
