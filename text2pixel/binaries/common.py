"""What every binary shares: one clear error line and a non-zero exit for bad input."""

from __future__ import annotations

import os
import sys

from absl import flags

from text2pixel.config import ConfigError
from text2pixel.text import CaptionError
from text2pixel.tfrecords import DataError

USER_ERRORS = (ConfigError, CaptionError, DataError, FileNotFoundError, ValueError)


# Measured (benchmarks/train_throughput.py, WORKSPACE.md "Benchmarks"): the pixel loop's ops are
# small, so on a CPU one thread per op and as many ops in parallel as cores beats TF's default of
# every op spreading over all cores (paper float32 step 4.11 s -> 2.82 s on 2 cores).
flags.DEFINE_integer("intra_op_threads", 1, "threads one op may use (0: TensorFlow's default)")
flags.DEFINE_integer("inter_op_threads", 0, "ops run in parallel (0: one per CPU core)")


def configure_threads(intra_op_threads: int = 1, inter_op_threads: int = 0) -> None:
  """Sets TensorFlow's CPU thread pools; must run before TensorFlow executes its first op."""
  import tensorflow as tf
  try:
    if intra_op_threads:
      tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads or os.cpu_count() or 1)
  except RuntimeError:  # the runtime is already up (e.g. called twice in one process)
    print("warning: TensorFlow already started; thread settings unchanged", file=sys.stderr)


def run_main(main, argv) -> int:
  """Runs main(argv); a user error prints 'error: ...' on one line and exits with status 2."""
  from text2pixel.training import TrainingError
  configure_threads(flags.FLAGS.intra_op_threads, flags.FLAGS.inter_op_threads)
  try:
    return main(argv) or 0
  except (TrainingError,) + USER_ERRORS as error:
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
