"""Table 2 (MNIST-with-captions): build the data, train alignPixelRNN and the baselines,
evaluate, and write experiments/results/mnist_captions_<scale>.md next to the paper's numbers.

  .venv/bin/python experiments/mnist_captions.py --scale cpu_small --minutes 30
  .venv/bin/python experiments/mnist_captions.py --scale paper --minutes 1440   # a GPU's work
"""

import functools
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402

EXPERIMENT = runner.Experiment(
    dataset="mnist_captions",
    build_command=lambda py, data: [py, "-m", "datasets.mnist_captions", "--out_dir", data],
    paper_rows=[{"Model": "PixelRNN (Mnist), the paper's Table 2", "R@1": 4.3, "R@5": 53.6,
                 "R@10": 63.1, "R@50": 88.0, "SSI": (0.356, 0.35)}],
    sample_captions=[
        "the digit 3 is on the left of the digit 5", "the digit 0 is at the top of the digit 8",
        "the digit 7 is at the bottom right of the image",
        "the digit 1 is at the top left of the image",
        "the digit 5 is on the left of the digit 3",  # held out: never seen in training
    ],
    description="the paper's Table 2 (MNIST-with-captions)")

if __name__ == "__main__":
  runner.define_flags()
  flags.adopt_module_key_flags(runner)
  app.run(functools.partial(runner.main, EXPERIMENT))
