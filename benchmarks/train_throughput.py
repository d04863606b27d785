"""Training throughput of the Trainer's own step: pixels/s after warm-up, and GFLOP/s.

  .venv/bin/python benchmarks/train_throughput.py --preset paper
  .venv/bin/python benchmarks/train_throughput.py --preset cpu_small --compare 601bb5f

The step timed is ``Trainer.train_step`` itself (data iterator, forward, backward, all-reduce,
non-finite guard, clip, RMSProp) on a small real MNIST-with-captions build, so a number here is a
training number. ``--compare REV`` runs the same measurement on REV's code (a git worktree) in the
same call, alternating old and new, and prints the ratio: these machines differ by up to 2x from
day to day, so only a ratio measured side by side is a speed claim.
"""

import json
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the benchmarks share flag names (--preset, --repeats), one
  # imports another (profile_train_step.py: train_throughput.py), and absl refuses a name defined
  # twice in one process.
  flags.DEFINE_string("preset", "cpu_small", "config preset")
  flags.DEFINE_integer("batch_size", 0, "0: the preset's")
  flags.DEFINE_string("mixed_precision", "float32", "the config's mixed_precision")
  flags.DEFINE_boolean("jit_compile", False, "XLA-compile the step")
  flags.DEFINE_string("pixel_loop", "", "fused | graph (default: the config's)")
  flags.DEFINE_integer("warmup", 3, "untimed steps first (tracing, compiling)")
  flags.DEFINE_integer("repeats", 10, "timed steps (the median is reported)")
  flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "text2pixel_bench_data"),
                      "the small data set (built here if missing)")
  flags.DEFINE_list("set", [], "config overrides name=value (e.g. decoder_units=256), typed as "
                    "the config's fields; the report's label names them")
  common.define_compare_flags()
  for name in common.THREAD_FLAGS + common.COMPARE_FLAGS:
    flags.declare_key_flag(name)


def main(argv):
  del argv
  if FLAGS.compare:
    make_data(FLAGS.data_dir)
    return common.compare(__file__, sys.argv[1:], FLAGS.compare, FLAGS.rounds,
                          key="seconds_per_step", higher_is_better=False)
  common.use_code_root()
  threads = common.apply_thread_flags()
  make_data(FLAGS.data_dir)

  overrides = dict(mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
                   eval_every=10 ** 6, sample_every=10 ** 6, checkpoint_every=10 ** 6)
  if FLAGS.batch_size:
    overrides["batch_size"] = FLAGS.batch_size
  if FLAGS.pixel_loop:
    overrides["pixel_loop"] = FLAGS.pixel_loop
  overrides.update(parse_settings(FLAGS.set, FLAGS.preset))
  config, step = make_step(FLAGS.preset, FLAGS.data_dir, **overrides)
  seconds = common.timed(step, FLAGS.warmup, FLAGS.repeats)
  pixels_per_sec = config.batch_size * config.num_pixels / seconds
  flops = training_flops_per_step(config)
  gflops = flops / seconds / 1e9
  peak = common.cpu_peak_gflops()
  loop = getattr(config, "pixel_loop", "graph")
  label = FLAGS.preset + "".join(f" {item}" for item in FLAGS.set)
  common.report("train_throughput", f"{label} batch {config.batch_size} "
                f"{config.mixed_precision}{' xla' if config.jit_compile else ''}, {loop} loop, "
                f"{threads}: {seconds:.3f} s/step, {pixels_per_sec:,.0f} pixels/s, "
                f"{gflops:.1f} GFLOP/s of a {peak:.0f} GFLOP/s fp32 peak",
                preset=FLAGS.preset, settings=FLAGS.set, batch_size=config.batch_size,
                mixed_precision=config.mixed_precision, jit_compile=config.jit_compile,
                pixel_loop=loop, seconds_per_step=seconds, pixels_per_sec=pixels_per_sec,
                gflops=gflops, peak_gflops=peak, threads=threads)


def parse_settings(items, preset: str):
  """{"decoder_units": 256, ...} from ["decoder_units=256", ...]: JSON values, typed and
  validated as the config's fields on top of ``preset``."""
  from text2pixel import config as config_lib
  from text2pixel.errors import ConfigError
  settings = {}
  for item in items:
    name, _, text = item.partition("=")
    try:
      settings[name] = json.loads(text)
    except ValueError:
      settings[name] = text  # a string field's value, unquoted
  try:
    base = json.loads(config_lib.get_preset(preset).to_json())
    parsed = config_lib.from_json(json.dumps({**base, **settings}))
  except ConfigError as error:
    raise app.UsageError(f"--set {','.join(items)}: {error}") from None
  return {name: getattr(parsed, name) for name in settings}


def make_data(data_dir: str) -> None:
  """A small real MNIST-with-captions build (once; every tree compared reads the same one)."""
  if os.path.exists(os.path.join(data_dir, "metadata.json")):
    return
  from datasets import mnist_captions
  mnist_captions.build(data_dir, num_train=512, num_validation=64, num_test=16, num_heldout=16,
                       seed=0, num_shards=1, log=lambda *_: None)


def make_step(preset: str, data_dir: str, **overrides):
  """(config, step): one call of the Trainer's own train step, on real TFRecords."""
  from text2pixel import config as config_lib, training
  config = config_lib.get_preset(preset).replace(**overrides)
  run_dir = tempfile.mkdtemp(prefix="text2pixel_bench_run_")
  trainer = training.Trainer(config, data_dir, run_dir, log=lambda *_: None)

  def step():
    loss, _, _ = trainer.train_step(trainer.train_iterator)
    return float(loss)

  return config, step


def training_flops_per_step(config) -> float:
  """Matrix-multiply FLOPs of one step: forward 2*m*n*k per dense product, backward twice that."""
  c = config
  attention = c.conditioning == "attention"
  lstm_in = (c.pixel_embedding_dim + 2 * c.position_embedding_dim + c.above_context *
             c.pixel_embedding_dim + (c.attention_units if attention else 0) +
             (c.annotation_dim if c.conditioning == "mean" else 0))
  per_pixel = 2 * (lstm_in + c.decoder_units) * 4 * c.decoder_units      # LSTM gates
  if attention:
    per_pixel += 2 * c.decoder_units * c.max_caption_len * 2               # scores + context
    per_pixel += 2 * (c.decoder_units + c.annotation_dim) * c.attention_units  # W_c
  per_pixel += 2 * (c.attention_units if attention else c.decoder_units) * c.num_levels  # logits
  forward = per_pixel * c.num_pixels * c.batch_size
  return 3.0 * forward


if __name__ == "__main__":
  define_flags()
  app.run(main)
