"""What every binary shares: one clear error line and exit status 2 for a user's mistake, the
traceback and exit status 1 for anything else, and the rule for directories a user names.

Nothing here imports TensorFlow: flags are checked before it starts (a few seconds).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from typing import Callable, Optional, Sequence

from absl import flags

from text2pixel.errors import OutputDirError, UsageError, UserError
from text2pixel.threads import configure_threads
from text2pixel.text import CaptionError

# The project's own error types (text2pixel/errors.py, and CaptionError next to the tokenizer).
# Not ValueError, FileNotFoundError or the like: raised from inside TensorFlow or Keras they mean
# a bug, which must keep its traceback rather than be reported as the user's fault.
USER_ERRORS = (UserError, CaptionError)


# Why one thread per op: text2pixel/threads.py.
flags.DEFINE_integer("intra_op_threads", 1, "threads one op may use (0: TensorFlow's default)")
flags.DEFINE_integer("inter_op_threads", 0, "ops run in parallel (0: one per CPU core)")




def run_main(main, argv, check_flags: Optional[Callable[[], None]] = None) -> int:
  """Runs check_flags() (plain Python, before TensorFlow starts), then main(argv).

  A user error (USER_ERRORS) prints 'error: ...' on one line and exits with status 2; any other
  exception propagates (absl prints its traceback, exit status 1).
  """
  try:
    if check_flags is not None:
      check_flags()
    configure_threads(flags.FLAGS.intra_op_threads, flags.FLAGS.inter_op_threads)
    return main(argv) or 0
  except USER_ERRORS as error:
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def require(condition: bool, message: str) -> None:
  """A flag check: UsageError(message) unless condition holds."""
  if not condition:
    raise UsageError(message)


def exactly_one_model_source(run_dir: str, saved_model: str) -> None:
  require(bool(run_dir) != bool(saved_model),
          "give exactly one of --run_dir (a training run) or --saved_model (an export)")


def check_output_dir(path: str, flag: str, binary: str, own_files: Sequence[str]) -> None:
  """The rule for a directory a user names for a binary's output: it may be new, empty, or hold
  only files named like that binary's outputs (``own_files``: fnmatch patterns), which it then
  overwrites. Anything else (a mistyped run, data set or home directory) is refused, so that
  nothing of the user's is ever overwritten or deleted."""
  if not os.path.lexists(path):
    return
  if not os.path.isdir(path):
    raise OutputDirError(f"{flag} {path} is a file, not a directory")
  def own(name):  # an output, or its temporary name from a write a kill cut short (atomic.py)
    return any(fnmatch.fnmatchcase(name.split(".tmp")[0], pattern) for pattern in own_files)
  foreign = sorted(name for name in os.listdir(path) if not own(name))
  if foreign:
    raise OutputDirError(f"refusing to write into {flag} {path}: it holds files {binary} did not "
                         f"write (e.g. {foreign[0]!r}); choose a new or empty directory")
