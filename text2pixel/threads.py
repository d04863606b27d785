"""TensorFlow's CPU thread pools, for every binary, experiment, benchmark and the judge.

Measured (experiments/NOTEBOOK.md, "Benchmarks"): the pixel loop's ops are small, so on a CPU one
thread per op and as many ops in parallel as cores beats TensorFlow's default of every op
spreading over all cores (paper float32 step 4.11 s -> 2.82 s on 2 cores).
"""

import os
import sys
from typing import Callable, Optional


def configure_threads(intra_op_threads: int = 1, inter_op_threads: int = 0,
                      log: Optional[Callable[[str], None]] = None) -> bool:
  """Sets the pools (intra 0: TensorFlow's default; inter 0: one per CPU core). Must run before
  TensorFlow executes its first op; afterwards it changes nothing, says so, and returns False."""
  import tensorflow as tf
  try:
    if intra_op_threads:
      tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads or os.cpu_count() or 1)
    return True
  except RuntimeError:  # the runtime is already up (e.g. called twice in one process)
    message = (f"TensorFlow already started; thread settings unchanged (intra "
               f"{tf.config.threading.get_intra_op_parallelism_threads()}, inter "
               f"{tf.config.threading.get_inter_op_parallelism_threads()})")
    if log:
      log(message)
    else:
      print(f"warning: {message}", file=sys.stderr)
    return False
