"""text2pixel-export: a training run -> a SavedModel that takes raw caption strings.

  text2pixel-export --run_dir workspace/runs/cpu_small --export_dir workspace/exports/cpu_small

Signatures: sample, greedy, beam, score, metadata (see text2pixel/export.py). The SavedModel
needs only TensorFlow to load (no tensorflow_addons), as TF Serving requires.
"""

from absl import app, flags

from text2pixel.binaries.common import run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "workspace/runs/cpu_small", "training run (latest checkpoint)")
flags.DEFINE_string("export_dir", "workspace/exports/cpu_small", "where the SavedModel goes")
flags.DEFINE_integer("beam_width", 4, "beam width of the 'beam' signature")


def main(argv):
  del argv
  from text2pixel import export, training
  if FLAGS.beam_width < 1:
    raise ValueError("--beam_width must be >= 1")
  config, vocab, model = training.load_run(FLAGS.run_dir)
  path = export.export(model, vocab, config, FLAGS.export_dir, beam_width=FLAGS.beam_width)
  print(f"exported {FLAGS.run_dir} to {path} (signatures: sample, greedy, beam, score, metadata)")
  return 0


def run():
  app.run(lambda argv: run_main(main, argv))


if __name__ == "__main__":
  run()
