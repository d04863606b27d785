"""Drives text2pixel-demo in headless Chromium (Debian's /usr/bin/chromium, through Playwright).

Used by tests/test_demo.py, and on its own to take the README's screenshot of a real model:

  .venv/bin/python tests/demo_browser.py --saved_model pretrained --out docs/demo.png
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import subprocess
import sys
import threading
from typing import List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("TEXT2PIXEL_CHROMIUM", "/usr/bin/chromium")
# As root and on a machine with no network but package registries: no sandbox, no GPU, and none
# of Chromium's own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
STARTUP_LIMIT_S = 300    # a safety net for a server that never comes up, not a timing assumption
GENERATION_LIMIT_S = 300
_SERVING = re.compile(r"serving .* at (http://127\.0\.0\.1:\d+/)")


class Demo:
  """A text2pixel-demo process on a free loopback port; its output is kept for error messages."""

  def __init__(self, model_args: Sequence[str], extra_args: Sequence[str] = ()):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               GRADIO_ANALYTICS_ENABLED="False")
    self.process = subprocess.Popen(
        [sys.executable, "-m", "text2pixel.binaries.demo", *model_args, "--port", "0",
         *extra_args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    self.lines: List[str] = []
    urls: "queue.Queue[str]" = queue.Queue()

    def drain():  # keeps reading, so the server never blocks on a full pipe
      for line in self.process.stdout:
        self.lines.append(line.rstrip("\n"))
        match = _SERVING.search(line)
        if match:
          urls.put(match.group(1))
      urls.put("")  # the process ended

    threading.Thread(target=drain, daemon=True).start()
    try:
      self.url = urls.get(timeout=STARTUP_LIMIT_S)
    except queue.Empty:
      self.url = ""
    if not self.url:
      self.stop()
      raise RuntimeError("text2pixel-demo did not start:\n" + self.output())

  def output(self) -> str:
    return "\n".join(self.lines[-40:])

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()


def launch_browser(playwright):
  return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_page(browser, url: str):
  page = browser.new_page(viewport={"width": 1280, "height": 900})
  page.goto(url)
  page.locator("#caption textarea").wait_for()
  return page


def submit(page, caption: str, method: str = "sample", num_samples: int = 4, seed: int = 0):
  """Fills the form and clicks Generate (does not wait for the result)."""
  page.locator("#caption textarea").fill(caption)
  page.locator("#method").get_by_label(
      {"sample": "sample (temperature)", "greedy": "greedy", "beam": "beam search"}[method],
      exact=True).check()
  if method == "sample":
    page.locator("#num_samples input[type=number]").fill(str(num_samples))
    page.locator("#num_samples input[type=number]").press("Enter")
  page.locator("#seed input").fill(str(seed))
  page.locator("#generate").click()


def wait_for_status(page, text: str) -> str:
  """Waits until the status line under the form says ``text``; returns the whole line."""
  from playwright.sync_api import expect
  status = page.locator("#status")
  expect(status).to_contain_text(text, timeout=GENERATION_LIMIT_S * 1000)
  return status.inner_text()


def wait_for_pictures(page) -> None:
  """Waits until every sample and the attention picture have loaded (for a whole screenshot)."""
  page.wait_for_function(
      "() => [...document.querySelectorAll('#samples img, #attention img')]"
      ".every(i => i.complete && i.naturalWidth > 0)", timeout=GENERATION_LIMIT_S * 1000)


def sample_images(page):
  return page.locator("#samples img")


def column(page, index: int) -> List[float]:
  """The numbers in one column of the per-sample table."""
  cells = page.locator(f"#scores [role=gridcell][data-col='{index}']")
  return [float(cells.nth(i).inner_text()) for i in range(cells.count())]


def attention_size(page) -> Tuple[int, int]:
  """(width, height) of the attention picture as the server made it (0, 0 when there is none)."""
  image = page.locator("#attention img")
  if image.count() == 0:
    return 0, 0
  image.first.wait_for()
  return tuple(page.evaluate(
      "() => { const i = document.querySelector('#attention img');"
      " return i && i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0]; }"))


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description="Screenshot of the demo page with a model.")
  where = parser.add_mutually_exclusive_group()
  where.add_argument("--saved_model", default="")
  where.add_argument("--run_dir", default="")
  parser.add_argument("--caption", default="the digit 3 is on the left of the digit 5")
  parser.add_argument("--method", default="sample", choices=["sample", "greedy", "beam"])
  parser.add_argument("--num_samples", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--judge", default="auto", choices=["auto", "on", "off"])
  parser.add_argument("--out", default=os.path.join(REPO, "docs", "demo.png"))
  args = parser.parse_args(argv)
  from playwright.sync_api import sync_playwright
  model_args = ["--saved_model", args.saved_model] if args.saved_model else \
      ["--run_dir", args.run_dir] if args.run_dir else []
  demo = Demo(model_args, ["--judge", args.judge])
  try:
    with sync_playwright() as playwright:
      browser = launch_browser(playwright)
      page = open_page(browser, demo.url)
      submit(page, args.caption, args.method, args.num_samples, args.seed)
      print(wait_for_status(page, args.caption))
      wait_for_pictures(page)
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      page.screenshot(path=args.out, full_page=True)
      browser.close()
  finally:
    demo.stop()
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
