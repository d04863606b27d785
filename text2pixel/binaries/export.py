"""text2pixel-export: a training run -> a SavedModel that takes raw caption strings.

  text2pixel-export --run_dir workspace/runs/cpu_small --export_dir workspace/exports/cpu_small

Signatures: sample, greedy, beam, score, metadata (see text2pixel/export.py). The SavedModel
needs only TensorFlow to load (no tensorflow_addons), as TF Serving requires. --export_dir may be
new, empty or an earlier export (which is replaced); anything else is refused.
"""

from absl import app, flags

from text2pixel import layout
from text2pixel.binaries.common import require, run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "workspace/runs/cpu_small", "training run (latest checkpoint)")
flags.DEFINE_string("export_dir", "workspace/exports/cpu_small", "where the SavedModel goes")
flags.DEFINE_integer("beam_width", 4, "beam width of the 'beam' signature")
flags.DEFINE_float("guidance", None, "classifier-free guidance scale of the sample and greedy "
                   "signatures (default the run's own; 1 = none)")


def check_flags():
  require(FLAGS.beam_width >= 1, "--beam_width must be >= 1")
  layout.check_export_replaceable(FLAGS.export_dir)  # before anything is loaded: nothing to lose
  config = layout.load_trained_run_config(FLAGS.run_dir)[0]
  from text2pixel import generation
  generation.check_guidance(config, "sample", FLAGS.guidance)


def main(argv):
  del argv
  from text2pixel import export, training
  config, vocab, model = training.load_run(FLAGS.run_dir)
  if FLAGS.guidance is not None:
    config = config.replace(guidance=FLAGS.guidance)
  path = export.export(model, vocab, config, FLAGS.export_dir, beam_width=FLAGS.beam_width)
  print(f"exported {FLAGS.run_dir} to {path} (signatures: {', '.join(export.SIGNATURES)})")
  return 0


def run():
  app.run(lambda argv: run_main(main, argv, check_flags))


if __name__ == "__main__":
  run()
