"""Table 1 (MS-COCO): build the data from a COCO download, train alignPixelRNN and the
baselines, evaluate, and write experiments/results/coco_<scale>.md next to the paper's numbers.

  .venv/bin/python experiments/coco.py --coco_dir workspace/coco_raw --scale paper --minutes 1440

COCO cannot be downloaded on this project's machines; WORKSPACE.md says which files go where.
"""

import functools
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402

FLAGS = flags.FLAGS

PAPER = [  # the paper's Table 1 (earlier rows from alignDRAW)
    ("Fully-Conn VAE", 1, 6.6, 12, 53.4, (0.156, 0.10)),
    ("Conv-Deconv VAE", 1, 6.5, 12, 52.9, (0.164, 0.10)),
    ("SkipthoughtDRAW", 2, 11.2, 18.9, 63.3, (0.157, 0.11)),
    ("noalignDRAW", 2.8, 14.1, 23.1, 68, (0.155, 0.11)),
    ("alignDRAW", 3, 14, 22.9, 68.5, (0.156, 0.11)),
    ("alignPixelRNN (paper)", 4.5, 20.6, 30.4, 80.5, (0.166, 0.12)),
]

EXPERIMENT = runner.Experiment(
    dataset="coco",
    build_command=lambda py, data: [py, "-m", "datasets.coco", "--coco_dir", FLAGS.coco_dir,
                                    "--out_dir", data],
    paper_rows=[{"Model": f"{m}, the paper's Table 1", "R@1": a, "R@5": b, "R@10": c, "R@50": d,
                 "SSI": s} for m, a, b, c, d, s in PAPER],
    sample_captions=["a person driving a car along a roadside", "people are walking in the snow",
                     "a woman is walking on a street", "a dog sitting on a hill",
                     "a group of people standing on a beach"],
    description="the paper's Table 1 (MS-COCO)")

if __name__ == "__main__":
  # Like the runner's flags, defined only when run as the program.
  flags.DEFINE_string("coco_dir", os.environ.get("COCO_DIR", "workspace/coco_raw"),
                      "the COCO download (WORKSPACE.md); $COCO_DIR sets the default")
  runner.define_flags()
  flags.adopt_module_key_flags(runner)
  app.run(functools.partial(runner.main, EXPERIMENT))
