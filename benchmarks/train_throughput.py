"""Training throughput: pixels/s (batch x pixels / step time) after warm-up, and GFLOP/s.

  .venv/bin/python benchmarks/train_throughput.py --preset paper
  .venv/bin/python benchmarks/train_throughput.py --preset cpu_small --mixed_precision mixed_bfloat16

The step is exactly the trainer's (forward, backward, all-reduce, clip, RMSProp) on synthetic
data of the preset's shapes, so the input pipeline is not measured (see --with_data).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="cpu_small")
  parser.add_argument("--batch_size", type=int, default=0, help="0: the preset's")
  parser.add_argument("--mixed_precision", default="float32")
  parser.add_argument("--jit_compile", action="store_true")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  common.add_thread_flags(parser)
  args = parser.parse_args()
  threads = common.apply_thread_flags(args)

  config, step = make_step(args.preset, args.batch_size, args.mixed_precision, args.jit_compile)
  seconds = common.timed(lambda: step().numpy(), args.warmup, args.repeats)
  pixels_per_sec = config.batch_size * config.num_pixels / seconds
  flops = training_flops_per_step(config)
  gflops = flops / seconds / 1e9
  peak = common.cpu_peak_gflops()
  common.report("train_throughput", f"{args.preset} batch {config.batch_size} "
                f"{config.mixed_precision}{' xla' if config.jit_compile else ''}, {threads}: "
                f"{seconds:.3f} s/step, {pixels_per_sec:,.0f} pixels/s, {gflops:.1f} GFLOP/s of "
                f"a {peak:.0f} GFLOP/s fp32 peak",
                preset=args.preset, batch_size=config.batch_size,
                mixed_precision=config.mixed_precision, jit_compile=config.jit_compile,
                seconds_per_step=seconds, pixels_per_sec=pixels_per_sec, gflops=gflops,
                peak_gflops=peak, threads=threads)


def make_step(preset: str, batch_size: int = 0, mixed_precision: str = "float32",
              jit_compile: bool = False):
  """(config, step): the trainer's step on one synthetic batch of the preset's shapes."""
  import tensorflow as tf
  from text2pixel import config as config_lib, model as model_lib
  config = config_lib.get_preset(preset).replace(mixed_precision=mixed_precision,
                                                 jit_compile=jit_compile)
  if batch_size:
    config = config.replace(batch_size=batch_size)
  if config.mixed_precision != "float32":
    tf.keras.mixed_precision.set_global_policy(config.mixed_precision)
  model = model_lib.build(config, vocab_size=30)
  optimizer = tf.keras.optimizers.RMSprop(config.learning_rate)
  ids, lengths, images = (tf.constant(x) for x in common.batch(config, config.batch_size))

  @tf.function(jit_compile=config.jit_compile)
  def step():
    with tf.GradientTape() as tape:
      logits = model(dict(caption_ids=ids, caption_len=lengths, image=images), training=True)
      loss = model_lib.sequence_loss(logits, images, config.num_pixels)
    grads = tape.gradient(loss, model.trainable_variables)
    grads, _ = tf.clip_by_global_norm(grads, config.clip_norm)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return config, step


def training_flops_per_step(config) -> float:
  """Matrix-multiply FLOPs of one step: forward 2*m*n*k per dense product, backward twice that."""
  c = config
  attention = c.conditioning == "attention"
  lstm_in = (c.pixel_embedding_dim + 2 * c.position_embedding_dim + c.above_context *
             c.pixel_embedding_dim + (c.attention_units if attention else 0) +
             (2 * c.encoder_units if c.conditioning == "mean" else 0))
  per_pixel = 2 * (lstm_in + c.decoder_units) * 4 * c.decoder_units      # LSTM gates
  if attention:
    per_pixel += 2 * c.decoder_units * c.max_caption_len * 2               # scores + context
    per_pixel += 2 * (c.decoder_units + 2 * c.encoder_units) * c.attention_units  # W_c
  per_pixel += 2 * (c.attention_units if attention else c.decoder_units) * c.num_levels  # logits
  forward = per_pixel * c.num_pixels * c.batch_size
  return 3.0 * forward


if __name__ == "__main__":
  main()
