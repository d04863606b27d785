"""The fused pixel loop (``pixel_loop.cc``): the 1,024-step loop as one op, for training
(teacher forcing with a gradient) and for decoding (scoring, greedy and ancestral sampling).

Built from source on this machine (``python -m text2pixel.kernels`` at set-up, or on first use),
with the compile and link flags of the installed TensorFlow, into ``_build/`` next to this file
(git-ignored). A build is keyed by the source's and the compiler flags' hash, so an edited source
or another TensorFlow rebuilds, and several processes starting at once (multi-worker tests) wait
for one build under a file lock instead of racing.

:func:`pixel_loop` runs the loop; its gradient is registered below: the op's backward twin gives
d loss / d (input part), keys, values and the attention pre-activations, and the two weight
gradients are one matrix product each over the saved activations. :func:`pixel_decode` runs the
loop with the output layer inside, so each pixel can be chosen before the next one's input.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from typing import NamedTuple, Optional

import tensorflow as tf

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pixel_loop.cc")
BUILD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build")


class KernelBuildError(RuntimeError):
  """The fused kernel could not be compiled or loaded; the message has the compiler's output."""


def _compile_command(output: str):
  flags = ["-O3", "-shared", "-fPIC", "-ffp-contract=fast", "-march=native", "-Wno-ignored-attributes"]
  return (["g++"] + flags + [SOURCE, "-o", output] + tf.sysconfig.get_compile_flags() +
          tf.sysconfig.get_link_flags())


def _cpu_features() -> bytes:
  """The CPU's instruction-set flags: -march=native builds for this CPU, and a build left by
  another machine in the same tree (these machines change from day to day) may use instructions
  this one lacks, or miss ones it has."""
  try:
    with open("/proc/cpuinfo", "rb") as f:
      for line in f:
        if line.startswith(b"flags"):
          return b" ".join(sorted(line.split(b":", 1)[1].split()))
  except OSError:
    pass
  import platform
  return platform.processor().encode()


def library_path() -> str:
  with open(SOURCE, "rb") as f:
    key = hashlib.sha256(f.read() + " ".join(_compile_command("")).encode() +
                         tf.__version__.encode() + _cpu_features()).hexdigest()[:16]
  return os.path.join(BUILD_DIR, f"pixel_loop_{key}.so")


def build(verbose: bool = True) -> str:
  """Compiles the kernel unless this source and these flags were already built; returns the .so."""
  path = library_path()
  if os.path.exists(path):
    return path
  os.makedirs(BUILD_DIR, exist_ok=True)
  with open(os.path.join(BUILD_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(path):  # another process built it while we waited
      return path
    if verbose:
      print("[text2pixel] compiling the fused pixel loop (once per machine, ~1 min)",
            file=sys.stderr, flush=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    result = subprocess.run(_compile_command(tmp), capture_output=True, text=True)
    if result.returncode:
      raise KernelBuildError("compiling text2pixel/kernels/pixel_loop.cc failed:\n" +
                             result.stderr[-4000:])
    os.replace(tmp, path)
  return path


_ops = None


def ops():
  """The loaded op library (built first if needed)."""
  global _ops
  if _ops is None:
    try:
      _ops = tf.load_op_library(build())
    except tf.errors.NotFoundError as error:
      raise KernelBuildError(f"loading the fused pixel loop failed: {error}") from None
  return _ops


class PixelLoopOutputs(NamedTuple):
  h: tf.Tensor          # [batch, steps, units]           h^pix_j
  c: tf.Tensor          # [batch, steps, units]           LSTM cell state
  gates: tf.Tensor      # [batch, steps, 4 units]         i, f, g, o after their nonlinearities
  alpha: tf.Tensor      # [batch, steps, words]           eq. 8 (width 0 without attention)
  context: tf.Tensor    # [batch, steps, annotation dim]  eq. 7 (width 0 without attention)
  attention: tf.Tensor  # [batch, steps, attention units] a_j (width 0 without attention)


def _no_attention(tables: tf.Tensor, batch):
  """Keys, values, mask and W_c of zero width: the ops' inputs for a model that does not attend."""
  units = tables.shape[-1] // 4
  return (tf.zeros([batch, 0, units]), tf.zeros([batch, 0, 0]), tf.zeros([batch, 0]),
          tf.zeros([units, 0]))


def pixel_loop(tables: tf.Tensor, ids: tf.Tensor, base: tf.Tensor, recurrent_kernel: tf.Tensor,
               keys: Optional[tf.Tensor] = None, values: Optional[tf.Tensor] = None,
               memory_mask: Optional[tf.Tensor] = None,
               attention_kernel: Optional[tf.Tensor] = None,
               num_threads: int = 0) -> PixelLoopOutputs:
  """Runs the teacher-forced pixel LSTM (with Luong attention and input feeding if given).

  Everything is float32. Pixel j's input part (features_j W_in + b) is base + sum_f
  tables[ids[:, j, f]]: ``tables`` [rows, 4 units], ``ids`` [batch, steps, features] (int32),
  ``base`` [batch, 4 units] (see ``fast_loops.input_tables``). ``keys``
  (W_a h^lang) [batch, words, units], ``values`` (h^lang) [batch, words, dim], ``memory_mask``
  [batch, words] (1 for a real word), ``attention_kernel`` W_c [units + dim, attention units];
  without attention pass None for these four. Only ``h`` and ``attention`` carry gradients; the
  other outputs are saved activations.
  """
  if attention_kernel is None:
    keys, values, memory_mask, attention_kernel = _no_attention(tables, tf.shape(ids)[0])
  return PixelLoopOutputs(*ops().text2pixel_pixel_loop_forward(
      tables, ids, base, recurrent_kernel, keys, values, memory_mask, attention_kernel,
      num_threads=num_threads))


@tf.RegisterGradient("Text2pixelPixelLoopForward")
def _pixel_loop_gradient(op, grad_h, grad_c, grad_gates, grad_alpha, grad_context,
                         grad_attention):
  del grad_c, grad_gates, grad_alpha, grad_context  # saved activations: used under stop_gradient
  h, c, gates, alpha, context, attention = op.outputs
  zeros_if_none = lambda g, like: tf.zeros_like(like) if g is None else g
  grad_input, grad_tables, grad_base, grad_keys, grad_values, grad_pre = (
      ops().text2pixel_pixel_loop_backward(
          *op.inputs, h, c, gates, alpha, context, attention,
          zeros_if_none(grad_h, h), zeros_if_none(grad_attention, attention),
          num_threads=op.get_attr("num_threads")))

  def weight_gradient(x, grad):  # sum over batch and steps of x_j^T grad_j: one matmul
    return tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), tf.reshape(grad, [-1, grad.shape[-1]]),
                     transpose_a=True)

  shifted = lambda x: tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], axis=1)  # x_{j-1}, x_{-1}=0
  grad_recurrent = weight_gradient(shifted(tf.concat([attention, h], -1)), grad_input)
  grad_attention_kernel = weight_gradient(tf.concat([h, context], -1), grad_pre)
  return (grad_tables, None, grad_base, grad_recurrent, grad_keys, grad_values, None,
          grad_attention_kernel)


DECODE_MODES = ("score", "greedy", "sample")


def pixel_decode(mode: str, tables: tf.Tensor, static_ids: tf.Tensor, lags: tf.Tensor,
                 base: tf.Tensor, recurrent_kernel: tf.Tensor, output_kernel: tf.Tensor,
                 output_bias: tf.Tensor, keys: Optional[tf.Tensor] = None,
                 values: Optional[tf.Tensor] = None, memory_mask: Optional[tf.Tensor] = None,
                 attention_kernel: Optional[tf.Tensor] = None,
                 targets: Optional[tf.Tensor] = None, uniforms: Optional[tf.Tensor] = None,
                 temperature=1.0, guidance=None, num_threads: int = 0):
  """The pixel loop with eq. 5's output layer inside, no gradient: (pixels [batch, steps] int32,
  log_prob [batch, steps] (log p(x_j | x_<j, y) at temperature 1), alpha [batch, steps, words]).

  ``mode``: "score" teacher-forces ``targets`` [batch, steps] (retrieval's log-likelihoods);
  "greedy" takes each pixel's argmax; "sample" draws by inverse CDF from softmax(logits /
  temperature) at ``uniforms`` [batch, steps]. Pixel j's input part is base + sum_f
  tables[static_ids[j, f] + (x_{j - lags[f]} if lags[f] else 0)], x before the image being the
  start symbol (see ``fast_loops.InputTables``). The other arguments are as for
  :func:`pixel_loop`; ``output_kernel`` [attention units (or units without attention), levels].
  ``guidance`` (greedy and sample): rows are (caption, empty caption) pairs, each pair choosing
  its pixels from l_empty + guidance (l_caption - l_empty) (classifier-free guidance).
  """
  if mode not in DECODE_MODES:
    raise ValueError(f"unknown decode mode '{mode}'; choose one of {DECODE_MODES}")
  if attention_kernel is None:
    keys, values, memory_mask, attention_kernel = _no_attention(tables, tf.shape(base)[0])
  targets = tf.zeros([0, 0], tf.int32) if targets is None else targets
  uniforms = tf.zeros([0, 0], tf.float32) if uniforms is None else uniforms
  return ops().text2pixel_pixel_loop_decode(
      tables, static_ids, base, recurrent_kernel, keys, values, memory_mask, attention_kernel,
      lags, output_kernel, output_bias, targets, uniforms,
      tf.convert_to_tensor(temperature, tf.float32),
      tf.convert_to_tensor(1.0 if guidance is None else guidance, tf.float32), mode=mode,
      guided=guidance is not None, num_threads=num_threads)


tf.no_gradient("Text2pixelPixelLoopDecode")
