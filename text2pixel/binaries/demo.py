"""text2pixel-demo: a local browser page to type captions and look at what the model draws.

  text2pixel-demo --saved_model pretrained            # an export (the default: pretrained/)
  text2pixel-demo --run_dir workspace/runs/cpu_small  # or a training run's latest checkpoint
  text2pixel-demo --port 0                            # any free port; the URL is printed

Serves on 127.0.0.1 only. Needs the [demo] extra (Gradio), which scripts/setup.sh installs.
"""

import importlib.util
import os
import sys

from absl import app, flags

from text2pixel.binaries.common import run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", "", "an exported SavedModel (default: the shipped pretrained/)")
flags.DEFINE_string("run_dir", "", "or: a training run (its latest checkpoint)")
flags.DEFINE_integer("port", 7860, "port on 127.0.0.1; 0 picks a free one")
flags.DEFINE_integer("beam_width", 4, "beams for --method beam from a run (an export has its own)")
flags.DEFINE_enum("judge", "auto", ["auto", "on", "off"],
                  "digit judge verdicts for 32x32 MNIST-with-captions models: auto = if a trained "
                  "judge is cached, on = train it first if needed (~4 min), off = none")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAINED = os.path.join(REPO, "pretrained")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def shipped_export() -> str:
  """pretrained/ itself if it is an export, else its one export subdirectory."""
  if os.path.exists(os.path.join(PRETRAINED, "saved_model.pb")):
    return PRETRAINED
  found = sorted(os.path.join(PRETRAINED, name) for name in
                 (os.listdir(PRETRAINED) if os.path.isdir(PRETRAINED) else [])
                 if os.path.exists(os.path.join(PRETRAINED, name, "saved_model.pb")))
  if len(found) != 1:
    what = "does not exist" if not os.path.isdir(PRETRAINED) else \
        f"holds {len(found)} SavedModel exports, not one"
    fail(f"no model given and the shipped export {PRETRAINED} {what}; "
         "pass --saved_model DIR or --run_dir DIR")
  return found[0]


def main(argv):
  del argv
  if FLAGS.run_dir and FLAGS.saved_model:
    fail("give at most one of --run_dir or --saved_model")
  if not 0 <= FLAGS.port <= 65535:
    fail(f"--port must be in 0..65535, got {FLAGS.port}")
  if importlib.util.find_spec("gradio") is None:
    fail("the demo needs Gradio: pip install -c constraints.txt -e '.[demo]' "
         "(scripts/setup.sh installs it)")
  source = FLAGS.run_dir or FLAGS.saved_model or shipped_export()
  from text2pixel import demo, generation
  print(f"text2pixel-demo: loading {source}", flush=True)
  # Each flag opens its own kind, so a wrong path gets the message for what was meant.
  generator = generation.CheckpointGenerator(source, FLAGS.beam_width) if FLAGS.run_dir else \
      generation.SavedModelGenerator(source)
  model = demo.DemoModel(generator, source, FLAGS.judge)
  page = demo.build_app(model)
  try:
    url = demo.serve(page, FLAGS.port)
  except OSError:  # Gradio's "Cannot find empty port", or a port this user may not open
    fail(f"cannot serve on 127.0.0.1:{FLAGS.port}: the port is in use or not allowed; "
         "choose another --port, or --port 0 for a free one")
  print(f"text2pixel-demo: serving {source} at {url} (Ctrl-C stops)", flush=True)
  try:
    page.block_thread()
  except KeyboardInterrupt:
    pass
  finally:
    page.close()
  return 0


def run():
  app.run(lambda argv: run_main(main, argv))


if __name__ == "__main__":
  run()
