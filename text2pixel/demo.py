"""The local demo page behind ``text2pixel-demo``: type a caption, look at what the model draws.

The page (Gradio, the ``[demo]`` extra) shows the vocabulary and example captions (held-out
combinations marked), generates with any of the three methods, and shows the samples, each one's
log-likelihood, the attention picture of a chosen sample (which pixels listened to which word)
and, for MNIST-with-captions models drawing 32x32 images, the digit judge's verdict per sample.

Everything model-side goes through :class:`text2pixel.generation.Generator`, so a training run
and a SavedModel export behave alike, and bad captions get the CLI's own messages. ``DemoModel``
holds what the page computes and imports no Gradio; ``build_app`` and ``serve`` are the page.
"""

import dataclasses
import html
import json
import logging
import os
import socket
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

from text2pixel import generation, metrics as metrics_lib, pictures, text as text_lib
from text2pixel.judge import builder_captions, judge_verdicts, mnist_caption

METHODS = (("sample (temperature)", "sample"), ("greedy", "greedy"), ("beam search", "beam"))
MAX_SAMPLES = 16
DEFAULT_SAMPLES = 4
VIEW_SIDE = 128       # on-screen pixels of a sample in the gallery, whatever the image side
ATTENTION_SIDE = 64   # of each tile of an attention picture (one per word: many side by side)

# Where each named digit of a relation sits, in caption order (datasets/mnist_captions.py).
_MARKDOWN_PUNCTUATION = set("\\`*_{}[]()#+-.!|~")
# Examples on the page: (relation, digits); the held-out ones show generalisation to
# combinations never seen in training.
_EXAMPLES = (("left", (3, 5)), ("top_left", (7,)), ("bottom", (1, 9)), ("right", (4, 2)),
             ("left", (5, 3)), ("top_right", (9,)), ("bottom", (6, 0)))


def literal(text: str) -> str:
  """Text (a user's caption among it) shown as typed in Markdown: no markup, no HTML."""
  escaped = "".join("\\" + c if c in _MARKDOWN_PUNCTUATION else c for c in text)
  return html.escape(escaped, quote=False)


def error_message(error: BaseException) -> str:
  """The one line a binary prints for a user error (binaries/common.run_main)."""
  return "error: " + " ".join(str(error).split())


def user_errors() -> tuple:
  """What the binaries report as one clear line; anything else is a bug and keeps its trace."""
  from text2pixel.binaries import common
  return tuple(common.USER_ERRORS)


def trained_judge_dir() -> Optional[str]:
  """Where load_or_train_judge() finds a judge trained with the default settings (the one
  shipped with the package, else one cached in workspace/judge): loading it takes a second,
  training one minutes. None if there is none."""
  from text2pixel import judge as judge_lib
  wanted = judge_lib.JudgeSettings().to_dict()
  # SHIPPED_DIR: the judge committed with the package (judge.py, where it has one).
  for directory in (getattr(judge_lib, "SHIPPED_DIR", ""), judge_lib.DEFAULT_CACHE_DIR):
    try:
      with open(os.path.join(directory, judge_lib.INFO_FILE), encoding="utf-8") as f:
        settings = json.load(f).get("settings")
    except (OSError, ValueError):
      continue
    if settings == wanted and os.path.exists(os.path.join(directory, judge_lib.WEIGHTS_FILE)):
      return directory
  return None


# --- the model side of the page -----------------------------------------------------------------

@dataclasses.dataclass
class Result:
  """One request's samples: images [S, side, side] uint8, log_prob [S] nats, attention
  [S, pixels, words] (None for a model that does not attend), the caption's words with <eos>."""
  caption: str
  method: str
  images: np.ndarray
  log_prob: np.ndarray
  attention: Optional[np.ndarray]
  words: List[str]
  verdicts: List[str]
  warnings: List[str]
  seconds: float

  def bits_per_dim(self) -> np.ndarray:
    return metrics_lib.nats_to_bits(-self.log_prob / self.images[0].size)


class DemoModel:
  """A Generator plus what the page shows around it (vocabulary, examples, judge verdicts)."""

  def __init__(self, generator: generation.Generator, source: str, judge_mode: str = "auto",
               log: Callable[[str], None] = print):
    self.generator = generator
    self.source = source
    self.config = generator.config
    self.vocab = generator.vocab
    self.words = [w for w in self.vocab.words if w not in text_lib.RESERVED]
    mnist_words = {w for tokens in builder_captions() for w in tokens}
    # A model trained on MNIST-with-captions knows only the builder's words.
    self.mnist = "digit" in self.words and set(self.words) <= mnist_words
    self.judge, self.judge_note = self._load_judge(judge_mode, log)

  def _load_judge(self, mode: str, log):
    from text2pixel import judge as judge_lib
    if mode == "off":
      return None, "Digit judge off (--judge off)."
    if not self.mnist:
      return None, "No digit judge: it reads MNIST-with-captions images only."
    side = self.config.image_side
    if side != judge_lib.SIDE:
      return None, (f"No digit judge: it reads {judge_lib.SIDE}x{judge_lib.SIDE} images and "
                    f"this model draws {side}x{side}.")
    if mode == "auto" and trained_judge_dir() is None:
      return None, ("No digit judge: none shipped or cached (start with --judge on to train "
                    f"it once into {judge_lib.DEFAULT_CACHE_DIR}, ~4 minutes).")
    return judge_lib.load_or_train_judge(log=log), \
        "The digit judge checks each sample: are the named digits in their places?"

  def describe(self, caption: str) -> str:
    """A line about the typed caption: its layout and whether training ever saw it."""
    if not self.mnist or not caption.strip():
      return ""
    parsed = mnist_caption(caption)
    if parsed is None:
      return "not a caption of the data set: the judge gives no verdict for it"
    seen = "HELD OUT: a combination never seen in training" if parsed.held_out else \
        "a combination seen in training"
    return f"{parsed.layout} ({seen})"

  def examples(self) -> List[Tuple[str, str]]:
    """(caption, label) pairs for the page; labels mark held-out combinations."""
    if not self.mnist:
      return []
    from datasets import mnist_captions
    out = []
    for relation, digits in _EXAMPLES:
      caption = mnist_captions.caption_for(relation, digits)
      if not self.vocab.unknown_words(text_lib.tokenize(caption)):
        held = mnist_captions.is_held_out(relation, digits)
        out.append((caption, f"{caption}   [held out]" if held else caption))
    return out

  def run(self, caption: str, method: str, num_samples: int = DEFAULT_SAMPLES,
          temperature: float = 1.0, seed: int = 0) -> Result:
    """Generates; raises the Generator's user errors (bad caption, bad temperature) unchanged."""
    start = time.time()
    warnings: List[str] = []
    out = self.generator.generate([caption], method, num_samples=int(num_samples),
                                  temperature=float(temperature), seed=int(seed),
                                  warn=warnings.append)
    words = out["words"][0]
    attention = out["attention"][0][:, :, :len(words)] if self.generator.attends else None
    images = out["images"][0]
    return Result(caption, method, images, out["log_prob"][0], attention, words,
                  self.verdicts(caption, images), warnings, time.time() - start)

  def verdicts(self, caption: str, images: np.ndarray) -> List[str]:
    """Per image, the judge's verdict (empty strings without a judge)."""
    if self.judge is None:
      return [""] * len(images)
    parsed = mnist_caption(caption)
    if parsed is None:
      return ["no verdict: not a caption of the data set"] * len(images)
    return judge_verdicts(self.judge, parsed, images)

  def attention_picture(self, result: Result, index: int):
    return pictures.attention_picture(result.images[index], result.attention[index],
                                      result.words, f"sample {index + 1}",
                                      scale=max(1, ATTENTION_SIDE // self.config.image_side))

  def view(self, image: np.ndarray):
    """An image enlarged with square pixels, for the gallery."""
    from PIL import Image
    side = image.shape[0] * max(1, VIEW_SIDE // self.config.image_side)
    return Image.fromarray(image).resize((side, side), Image.NEAREST)


# --- the page -----------------------------------------------------------------------------------

_CSS = """
.pixelated img { image-rendering: pixelated; }
#status p { font-size: 1.05em; }
"""


def build_app(model: DemoModel):
  """The Gradio page over ``model``; one generation at a time, further requests wait in order."""
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local page
  import gradio as gr
  logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
  errors = user_errors()
  config = model.config
  limit = config.max_caption_len - 1
  judged = model.judge is not None

  def generate(caption, method, num_samples, temperature, seed, progress=gr.Progress()):
    progress(None, desc=f"drawing {config.num_pixels} pixels per image, one after another")
    try:
      result = model.run(caption, method, int(num_samples), float(temperature), int(seed or 0))
    except errors as error:  # the CLI's message; the page stays as it was, outputs cleared
      return (f"**{literal(error_message(error))}**", None, None,
              gr.update(choices=[], value=None), None, None)
    lines = [f"{result.method}: {len(result.images)} image(s) of “{result.caption}” in "
             f"{result.seconds:.1f} s"] + [f"warning: {w}" for w in result.warnings]
    gallery = [(model.view(image), _label(i, result)) for i, image in enumerate(result.images)]
    rows = [[i + 1, round(float(lp), 1), round(float(b), 3)] + ([v] if judged else [])
            for i, (lp, b, v) in enumerate(zip(result.log_prob, result.bits_per_dim(),
                                               result.verdicts))]
    choices = [str(i + 1) for i in range(len(result.images))]
    return ("  \n".join(literal(line) for line in lines), gallery, rows,
            gr.update(choices=choices, value=choices[0]), attention_of(result, 0), result)

  def attention_of(result, index):
    if result is None or result.attention is None:
      return None
    return model.attention_picture(result, index)

  def choose(result, choice):
    return attention_of(result, int(choice) - 1) if choice else None

  def picked(event: gr.SelectData):  # Gradio reads this annotation (so: no __future__ import)
    return gr.update(value=str(event.index + 1))

  vocabulary = ", ".join(f"`{w}`" for w in model.words)
  no_attention = "" if model.generator.attends else \
      " It does not attend to words, so it has no attention pictures."
  with gr.Blocks(title="text2pixel demo", analytics_enabled=False) as app:
    side = config.image_side
    gr.Markdown(
        f"## text2pixel: caption → {side}×{side} image, pixel by pixel\n"
        f"Model: {literal(model.source)} ({config.conditioning} conditioning, "
        f"{len(model.vocab)} words). {model.judge_note}{no_attention}")
    with gr.Row():
      with gr.Column(scale=3):
        caption = gr.Textbox(label=f"Caption (at most {limit} words)", lines=1,
                             placeholder="the digit 3 is on the left of the digit 5",
                             elem_id="caption")
        about = gr.Markdown(elem_id="about")
        examples = model.examples()
        if examples:
          gr.Examples([[c] for c, _ in examples], inputs=[caption],
                      example_labels=[label for _, label in examples],
                      label="Example captions ([held out]: a digit combination training "
                            "never showed)")
        with gr.Accordion(f"Vocabulary ({len(model.words)} words; others are unknown)",
                          open=len(model.words) <= 60):
          gr.Markdown(vocabulary, elem_id="vocabulary")
      with gr.Column(scale=2):
        method = gr.Radio(list(METHODS), value="sample", label="Method", elem_id="method")
        temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature",
                                elem_id="temperature")
        num_samples = gr.Slider(1, MAX_SAMPLES, value=DEFAULT_SAMPLES, step=1,
                                label="Number of samples (greedy: 1; beam: the beam width)",
                                elem_id="num_samples")
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**31 - 1,
                         label="Seed (same seed, same samples)", elem_id="seed")
        run = gr.Button("Generate", variant="primary", elem_id="generate")
    status = gr.Markdown(elem_id="status")
    with gr.Row():
      with gr.Column(scale=1):
        gallery = gr.Gallery(label="Samples", show_label=False, columns=4,
                             height=380, format="png", elem_id="samples",
                             elem_classes=["pixelated"], allow_preview=False)
      with gr.Column(scale=1):
        headers = ["sample", "log p, nats", "bits/dim"] + (["digit judge"] if judged else [])
        table = gr.Dataframe(headers=headers, interactive=False, wrap=True, max_height=640,
                             label="Per sample: log p(image | caption), the same in bits per "
                                   "pixel" + (", the judge's verdict" if judged else ""),
                             column_widths=["12%", "20%", "16%", "52%"] if judged else None,
                             elem_id="scores")
    attends = model.generator.attends
    choice = gr.Radio([], label="Attention picture of sample (or click a sample): the image, "
                                "then per word the pixels that listened to it (bright = attended)",
                      elem_id="choice", visible=attends)
    attention = gr.Image(label="Attention", show_label=False, type="pil", format="png",
                         elem_id="attention", elem_classes=["pixelated"], interactive=False,
                         visible=attends)
    state = gr.State(None)

    caption.change(model.describe, caption, about, queue=False, show_progress="hidden")
    method.change(lambda m: gr.update(visible=m == "sample"), method, temperature, queue=False,
                  show_progress="hidden")
    outputs = [status, gallery, table, choice, attention, state]
    inputs = [caption, method, num_samples, temperature, seed]
    # always_last: a click while a generation runs is run after it, not dropped.
    for trigger in (run.click, caption.submit):
      trigger(generate, inputs, outputs, trigger_mode="always_last", api_name=False)
    # Pictures of results already made: no need to wait behind another tab's generation.
    choice.change(choose, [state, choice], attention, show_progress="hidden", api_name=False,
                  concurrency_limit=None)
    gallery.select(picked, None, choice, queue=False, api_name=False)
  # One generation at a time (the CPU is the limit); the rest wait in the queue, in order.
  app.queue(default_concurrency_limit=1)
  return app


def _label(index: int, result: Result) -> str:
  """Under a sample: its number, log-likelihood and the judge's mark (the table has the rest)."""
  mark = next((m for m in ("✓", "✗") if m in result.verdicts[index]), "")
  return f"#{index + 1}  {float(result.log_prob[index]):.1f} nats  {mark}".rstrip()


def free_port() -> int:
  """A port nothing listens on now, on the loopback interface."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def serve(app, port: int) -> str:
  """Starts the page on 127.0.0.1:port (0: a free port) without blocking; returns its URL."""
  port = port or free_port()
  import gradio as gr
  app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
             show_error=False, ssr_mode=False, footer_links=[], mcp_server=False,
             theme=gr.themes.Default(), css=_CSS)
  return f"http://127.0.0.1:{port}/"
