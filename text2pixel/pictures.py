"""Pictures people look at: image grids with captions, and attention heat maps per word."""

from __future__ import annotations

import os
import textwrap
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from text2pixel import atomic

_FONT = ImageFont.load_default()
_LINE_HEIGHT = 12


def _text_block(lines: List[str], width: int) -> Image.Image:
  block = Image.new("L", (width, _LINE_HEIGHT * len(lines) + 4), 255)
  draw = ImageDraw.Draw(block)
  for i, line in enumerate(lines):
    draw.text((4, 2 + i * _LINE_HEIGHT), line, fill=0, font=_FONT)
  return block


def caption_grid(images: np.ndarray, captions: Sequence[str], scale: int = 4,
                 pad: int = 2) -> Image.Image:
  """images [rows, cols, H, W] uint8 -> one picture, each row's caption written under it."""
  images = np.asarray(images, np.uint8)
  if images.ndim == 3:
    images = images[:, None]
  rows, cols, h, w = images.shape
  tile_h, tile_w = h * scale, w * scale
  width = cols * (tile_w + pad) + pad
  wrap = max(20, width // 6)
  row_pictures = []
  for r in range(rows):
    strip = Image.new("L", (width, tile_h + 2 * pad), 255)
    for c in range(cols):
      tile = Image.fromarray(images[r, c]).resize((tile_w, tile_h), Image.NEAREST)
      strip.paste(tile, (pad + c * (tile_w + pad), pad))
    lines = textwrap.wrap(captions[r] if r < len(captions) else "", wrap) or [""]
    row_pictures.append(strip)
    row_pictures.append(_text_block(lines, width))
  total_h = sum(p.height for p in row_pictures)
  out = Image.new("L", (width, total_h), 255)
  y = 0
  for p in row_pictures:
    out.paste(p, (0, y))
    y += p.height
  return out


def tile_grid(images: np.ndarray, labels: Sequence[str], cols: int = 4, scale: int = 4,
              pad: int = 4) -> Image.Image:
  """images [N, H, W] uint8 -> a grid, each tile with its own (wrapped) label beneath it."""
  images = np.asarray(images, np.uint8)
  n, h, w = images.shape
  tile_w = max(w * scale, 128)
  wrapped = [textwrap.wrap(label, max(12, tile_w // 6)) or [""] for label in labels]
  label_h = _LINE_HEIGHT * max(len(x) for x in wrapped) + 4
  cell_h = h * scale + label_h + pad
  rows = (n + cols - 1) // cols
  out = Image.new("L", (cols * (tile_w + pad) + pad, rows * cell_h + pad), 255)
  for i in range(n):
    x, y = pad + (i % cols) * (tile_w + pad), pad + (i // cols) * cell_h
    out.paste(Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST), (x, y))
    out.paste(_text_block(wrapped[i], tile_w), (x, y + h * scale))
  return out


def attention_picture(image: np.ndarray, attention: np.ndarray, words: Sequence[str],
                      caption: str = "", scale: int = 4) -> Image.Image:
  """The image, then one heat map per word: attention [H*W, num_words] of each pixel over words.

  Each heat map shows, for every pixel, the weight the decoder gave that word while drawing it
  (bright = attended), so a reader sees which words placed which strokes. All maps share one
  scale, from 0 to the largest weight in the picture (written in the caption line), so maps can
  be compared with each other.
  """
  image = np.asarray(image, np.uint8)
  side = image.shape[0]
  attention = np.asarray(attention, np.float32)[:, :len(words)]
  maps = attention.T.reshape(len(words), side, side)
  top = max(float(attention.max()), 1e-6)
  tiles = [image] + [np.uint8(np.clip(m / top, 0, 1) * 255) for m in maps]
  caption = f"{caption}  (heat: 0 .. {top:.2f})" if caption else caption
  labels = ["image"] + list(words)
  tile = side * scale
  label_h = _LINE_HEIGHT + 4
  width = len(tiles) * (tile + 2) + 2
  out = Image.new("RGB", (width, tile + label_h + (_LINE_HEIGHT + 6 if caption else 0)),
                  (255, 255, 255))
  draw = ImageDraw.Draw(out)
  for i, (t, label) in enumerate(zip(tiles, labels)):
    x = 2 + i * (tile + 2)
    picture = Image.fromarray(t).resize((tile, tile), Image.NEAREST)
    if i > 0:  # heat maps in a colour ramp so they are not mistaken for images
      picture = _heat(np.asarray(picture))
    out.paste(picture.convert("RGB"), (x, 2))
    draw.text((x, tile + 4), label[:max(4, tile // 6)], fill=(0, 0, 0), font=_FONT)
  if caption:
    draw.text((2, tile + label_h + 2), caption, fill=(0, 0, 0), font=_FONT)
  return out


def _heat(gray: np.ndarray) -> Image.Image:
  v = gray.astype(np.float32) / 255.0
  rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
  return Image.fromarray(np.uint8(rgb * 255))


def save(picture: Image.Image, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.writing(path, ".tmp.png") as temp:  # PIL picks the format by the extension
    picture.save(temp)
  return path


def to_summary_image(picture: Image.Image) -> np.ndarray:
  """A PIL picture as a [1, H, W, C] uint8 array for tf.summary.image."""
  array = np.asarray(picture.convert("RGB"), np.uint8)
  return array[None]



def line_chart(panels: Sequence[dict], width: int = 900, panel_height: int = 220) -> Image.Image:
  """Stacked line charts, one per panel: {"title", "x_label", "series": {name: (xs, ys)}} and
  optionally "marks": [(x, label)], grey vertical lines (e.g. where a run was restarted), and
  "x_range": (lo, hi) to put several panels on one axis.

  Enough for a learning curve without a plotting library: linear axes from the data's range, the
  ends of each axis labelled, one colour per series with a legend line.
  """
  shades = [(0, 0, 0), (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14),
            (148, 103, 189), (140, 86, 75)]
  margin_left, margin_right, margin_top, margin_bottom = 70, 20, 22, 30
  out = Image.new("RGB", (width, panel_height * len(panels)), (255, 255, 255))
  draw = ImageDraw.Draw(out)
  for p, panel in enumerate(panels):
    top = p * panel_height
    x0, x1 = margin_left, width - margin_right
    y0, y1 = top + margin_top, top + panel_height - margin_bottom
    points = [(x, y) for xs, ys in panel["series"].values() for x, y in zip(xs, ys)
              if np.isfinite(y)]
    draw.text((x0, top + 4), panel["title"], fill=0, font=_FONT)
    draw.rectangle([x0, y0, x1, y1], outline=0)
    if not points:
      continue
    lo_x, hi_x = panel.get("x_range") or (min(x for x, _ in points), max(x for x, _ in points))
    lo_y, hi_y = min(y for _, y in points), max(y for _, y in points)
    hi_x, hi_y = (hi_x if hi_x > lo_x else lo_x + 1), (hi_y if hi_y > lo_y else lo_y + 1)
    to_px = lambda x, y: (x0 + (x - lo_x) / (hi_x - lo_x) * (x1 - x0),
                          y1 - (y - lo_y) / (hi_y - lo_y) * (y1 - y0))
    draw.text((4, y0), f"{hi_y:.3g}", fill=0, font=_FONT)
    draw.text((4, y1 - 10), f"{lo_y:.3g}", fill=0, font=_FONT)
    draw.text((x0, y1 + 4), f"{lo_x:,.0f}", fill=0, font=_FONT)
    label = f"{hi_x:,.0f}  {panel.get('x_label', '')}"
    draw.text((x1 - 6 * len(label), y1 + 4), label, fill=0, font=_FONT)
    label_spans = []  # (left, right, line) of the mark labels drawn so far
    for x, text in panel.get("marks", ()):
      if lo_x <= x <= hi_x:
        px = to_px(x, lo_y)[0]
        draw.line([px, y0, px, y1], fill=(170, 170, 170), width=1)
        text_x = px + 3 if px + 3 + 6 * len(text) < x1 else px - 3 - 6 * len(text)
        # Marks close together (short runs) put their labels on lines above each other.
        line = 0
        while any(l == line and text_x < right and left < text_x + 6 * len(text)
                  for left, right, l in label_spans):
          line += 1
        label_spans.append((text_x, text_x + 6 * len(text), line))
        draw.text((text_x, y1 - 12 - 11 * line), text, fill=(110, 110, 110), font=_FONT)
    for s, (name, (xs, ys)) in enumerate(panel["series"].items()):
      shade = shades[s % len(shades)]
      line = [to_px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
      if len(line) > 1:
        draw.line(line, fill=shade, width=2 if s == 0 else 1)
      for x, y in line:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=shade)
      legend_y = y0 + 4 + 12 * s
      draw.line([x0 + 8, legend_y + 6, x0 + 28, legend_y + 6], fill=shade, width=2)
      draw.text((x0 + 32, legend_y), name, fill=0, font=_FONT)
  return out
