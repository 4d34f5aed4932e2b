from setuptools import find_packages, setup

setup(
    name="kdpipe",
    version="0.1.0",
    description="Knowledge distillation on ImageNet: DALI loaders, timm models, fused Triton losses",
    packages=find_packages(include=["pipeline", "pipeline.*", "kernels", "kernels.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch==2.14.1", "torchvision==0.29.1", "timm==1.0.29", "accelerate==1.15.0",
        "safetensors==0.8.0", "tensorboard==2.21.0", "tqdm==4.70.1", "pyyaml==6.0.3",
    ],
    extras_require={"dali": ["nvidia-dali-cuda130==2.4.0"], "test": ["pytest==9.2.0"]},
)
