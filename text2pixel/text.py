"""Caption text: tokenization, colour-word removal, and the vocabulary.

Tokenization must be reproducible inside a TensorFlow graph (the exported SavedModel takes raw
caption strings), so it is defined by one regular expression: ASCII lower-casing, then maximal
runs of letters/digits, joined by single inner hyphens or apostrophes ("dark-blue", "man's").
:func:`tokenize` applies it with nltk's ``RegexpTokenizer`` (which needs no downloaded data) and
:func:`tokenize_tf` is the same rule in TF string ops; a test checks that they agree.
"""

from __future__ import annotations

import collections
import json
import string
from typing import Dict, Iterable, List, Sequence

from nltk.tokenize import RegexpTokenizer

from text2pixel import atomic

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
RESERVED = (PAD, UNK, EOS)

TOKEN_PATTERN = r"[a-z0-9]+(?:['-][a-z0-9]+)*"
_TOKENIZER = RegexpTokenizer(TOKEN_PATTERN)
# Only ASCII letters are lower-cased, exactly like tf.strings.lower without an encoding.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class CaptionError(ValueError):
  """A caption that cannot be encoded; the message says why."""


def tokenize(text: str) -> List[str]:
  return _TOKENIZER.tokenize(text.translate(_ASCII_LOWER))


def tokenize_tf(text):
  """In-graph twin of :func:`tokenize`: a string tensor [batch] -> RaggedTensor of tokens."""
  import tensorflow as tf
  text = tf.strings.lower(text)
  text = tf.strings.regex_replace(text, r"[^a-z0-9'-]+", " ")
  text = tf.strings.regex_replace(text, r"['-]{2,}", " ")          # "a--b" -> a b
  text = tf.strings.regex_replace(text, r"(^|\s)['-]+", " ")       # leading ' or -
  text = tf.strings.regex_replace(text, r"['-]+(\s|$)", " ")       # trailing ' or -
  return tf.strings.split(tf.strings.strip(text))


def empty_captions(like_ids):
  """The empty caption (<eos> alone) in the shape of a padded id batch [batch, length]: (ids,
  lengths). What caption dropout trains with and guidance and the caption-normalised score
  compare against."""
  import tensorflow as tf
  batch, length = tf.shape(like_ids)[0], tf.shape(like_ids)[1]
  ids = tf.one_hot(tf.zeros([batch], tf.int32), length, on_value=EOS_ID, off_value=0,
                   dtype=like_ids.dtype)
  return ids, tf.ones([batch], tf.int32)


def two_word_slots(ids, word_ids):
  """Where a caption holds words of ``word_ids``: (how many [batch], first and last position,
  the words there)."""
  import tensorflow as tf
  word_ids = tf.cast(tf.reshape(word_ids, [1, 1, -1]), ids.dtype)
  is_word = tf.reduce_any(ids[:, :, None] == word_ids, axis=-1)               # [batch, length]
  length = tf.shape(ids)[1]
  first = tf.argmax(tf.cast(is_word, tf.int32), axis=1, output_type=tf.int32)
  last = length - 1 - tf.argmax(tf.cast(is_word[:, ::-1], tf.int32), axis=1,
                                output_type=tf.int32)
  count = tf.reduce_sum(tf.cast(is_word, tf.int32), axis=1)
  return (count, first, last, tf.gather(ids, first, batch_dims=1),
          tf.gather(ids, last, batch_dims=1))


def swap_two_words(ids, word_ids, forbidden_pairs=()):
  """Captions with their two words of ``word_ids`` exchanged ("the digit 3 is on the left of the
  digit 5" -> "... 5 ... 3"): (swapped ids, eligible [batch] bool). A caption is eligible when it
  holds exactly two such words, they differ, and they are not one of ``forbidden_pairs`` (word id
  pairs, either order); the others come back unchanged."""
  import tensorflow as tf
  count, first, last, first_word, last_word = two_word_slots(ids, word_ids)
  eligible = (count == 2) & (first_word != last_word)
  for a, b in forbidden_pairs:
    eligible &= ~(((first_word == a) & (last_word == b)) | ((first_word == b) & (last_word == a)))
  positions = tf.range(tf.shape(ids)[1])[None, :]
  swapped = tf.where(positions == first[:, None], last_word[:, None],
                     tf.where(positions == last[:, None], first_word[:, None], ids))
  return tf.where(eligible[:, None], swapped, ids), eligible


def neighbour_of_two_words(ids, word_ids, draws, forbidden_pairs=()):
  """A caption that differs from each caption only in its two words of ``word_ids`` (the digit
  words "0" ... "9", in digit order), drawn by ``draws`` [batch, 3] uniform in [0, 1):
  (negative ids, eligible [batch] bool). The negative is, with equal chance, the two words
  swapped ("3 left of 5" -> "5 left of 3"), the first word in both places ("3 ... 3"), the
  second in both places ("5 ... 5"), or one of them replaced by another word of ``word_ids``
  ("3 ... 8"): the ways a two-digit sample fails. A caption is eligible when it holds exactly
  two such words, its negative differs from it, and neither names one of ``forbidden_pairs``
  (word id pairs, either order); the others come back unchanged."""
  import tensorflow as tf
  words = tf.cast(tf.reshape(word_ids, [-1]), ids.dtype)
  num_words = tf.shape(words)[0]
  count, first, last, first_word, last_word = two_word_slots(ids, words)
  kind = tf.minimum(tf.cast(draws[:, 0] * 4, tf.int32), 3)  # swap, repeat 1st, repeat 2nd, replace
  replace_first = draws[:, 1] < 0.5
  replaced = tf.where(replace_first, first_word, last_word)
  replaced_index = tf.argmax(tf.cast(words[None, :] == replaced[:, None], tf.int32), axis=1,
                             output_type=tf.int32)
  step = 1 + tf.minimum(tf.cast(draws[:, 2] * tf.cast(num_words - 1, tf.float32), tf.int32),
                        num_words - 2)  # another word: 1 ... num_words - 1 places on
  other = tf.gather(words, (replaced_index + step) % num_words)
  new_first = tf.where(kind == 0, last_word, tf.where(kind == 1, first_word, tf.where(
      kind == 2, last_word, tf.where(replace_first, other, first_word))))
  new_last = tf.where(kind == 0, first_word, tf.where(kind == 1, first_word, tf.where(
      kind == 2, last_word, tf.where(replace_first, last_word, other))))
  eligible = (count == 2) & ((new_first != first_word) | (new_last != last_word))
  for a, b in forbidden_pairs:
    for x, y in ((first_word, last_word), (new_first, new_last)):
      eligible &= ~(((x == a) & (y == b)) | ((x == b) & (y == a)))
  positions = tf.range(tf.shape(ids)[1])[None, :]
  negative = tf.where(positions == first[:, None], new_first[:, None],
                      tf.where(positions == last[:, None], new_last[:, None], ids))
  return tf.where(eligible[:, None], negative, ids), eligible


# --- colour words (COCO: the paper removes colour information from captions) ---------------------

BASIC_COLOURS = (
    "red", "green", "blue", "yellow", "orange", "purple", "violet", "pink", "brown", "black",
    "white", "gray", "grey", "silver", "gold", "golden", "beige", "tan", "maroon", "navy", "teal",
    "turquoise", "cyan", "magenta", "lime", "olive", "indigo", "lavender", "crimson", "scarlet",
    "burgundy", "khaki", "ivory", "cream", "aqua", "bronze", "copper", "coral", "charcoal",
    "blond", "blonde", "auburn", "brunette", "multicolored", "multicoloured", "multi-colored",
    "multi-coloured", "multicolor", "multicolour", "multi-color", "multi-colour", "colorful",
    "colourful", "rainbow")
_SHADE_PREFIXES = ("dark", "light", "bright", "pale", "deep", "navy", "sky", "baby", "hot",
                   "royal", "lime", "olive", "forest", "neon")
_COLOUR_SUFFIXES = ("ish", "dish", "ie", "y")


def _colour_dictionary() -> frozenset:
  words = set(BASIC_COLOURS)
  for colour in BASIC_COLOURS:
    for suffix in _COLOUR_SUFFIXES:          # reddish, greenish, bluish/blueish, pinky ...
      words.add(colour + suffix)
      if colour.endswith("e"):
        words.add(colour[:-1] + suffix)
    for prefix in _SHADE_PREFIXES:           # dark-blue, light-grey, sky-blue ...
      words.add(f"{prefix}-{colour}")
  for a in BASIC_COLOURS:                    # blue-green, black-and-white as one token
    for b in BASIC_COLOURS:
      if a != b:
        words.add(f"{a}-{b}")
        words.add(f"{a}-and-{b}")
  return frozenset(words - {"tany", "tanie", "ivoryish", "goldy", "creamy"})


COLOUR_WORDS = _colour_dictionary()
# "navy" and "sky" prefixed as separate words ("sky blue") are handled by dropping a shade word
# that directly precedes a colour word.
_SHADE_WORDS = frozenset(_SHADE_PREFIXES)
# Other parts a hyphenated colour compound may hold: "off-white", "blue-ish", "red-white-and-blue".
_COMPOUND_PARTS = COLOUR_WORDS | _SHADE_WORDS | {"and", "or", "ish", "off"}


def is_colour_word(token: str) -> bool:
  """A dictionary colour word, or a hyphenated compound made only of colour parts with at least
  one colour in it ("reddish-brown", "off-white"; not "grey-haired" or "light-hearted")."""
  if token in COLOUR_WORDS:
    return True
  parts = token.split("-")
  return (len(parts) > 1 and all(p in _COMPOUND_PARTS for p in parts)
          and any(p in COLOUR_WORDS for p in parts))


def remove_colour_words(tokens: Sequence[str]) -> List[str]:
  """Drops colour words, shade words that qualify one ("dark blue"), and the "and"/"or" that
  joined two removed colours ("a red and white bus" -> "a bus")."""
  def is_colour_at(i: int) -> bool:
    if i >= len(tokens):
      return False
    if is_colour_word(tokens[i]):
      return True
    return tokens[i] in _SHADE_WORDS and is_colour_at(i + 1)

  kept = []
  for i, token in enumerate(tokens):
    if is_colour_at(i):
      continue
    if token in ("and", "or") and i > 0 and is_colour_word(tokens[i - 1]) and is_colour_at(i + 1):
      continue
    kept.append(token)
  return kept


def encode_captions(vocab: "Vocabulary", captions: Sequence[str], max_len: int, warn=None
                    ) -> List[List[int]]:
  """Ids for user-given captions, with the errors a person needs to fix them.

  An empty caption or one over the limit is an error; a caption whose words are all unknown is an
  error naming them; some unknown words only warn (they become <unk>).
  """
  encoded = []
  for caption in captions:
    if not isinstance(caption, str):
      try:
        caption = caption.decode("utf-8")
      except UnicodeDecodeError:
        raise CaptionError(f"caption {caption!r} is not valid UTF-8") from None
    ids = vocab.encode(caption, max_len)
    unknown = vocab.unknown_words(tokenize(caption))
    if len(unknown) == len(ids) - 1:
      raise CaptionError(f"caption {caption!r}: no word is in the vocabulary (unknown: "
                         f"{', '.join(unknown)})")
    if unknown and warn is not None:
      warn(f"caption {caption!r}: unknown words {', '.join(unknown)} become <unk>")
    encoded.append(ids)
  return encoded


# --- vocabulary -------------------------------------------------------------------------------

class Vocabulary:
  """Word <-> id map with reserved <pad>=0, <unk>=1, <eos>=2; saved as JSON (never pickled)."""

  def __init__(self, words: Sequence[str]):
    words = list(words)
    if tuple(words[:len(RESERVED)]) != RESERVED:
      raise ValueError(f"a vocabulary must start with the reserved tokens {RESERVED}")
    if len(set(words)) != len(words):
      raise ValueError("a vocabulary must not repeat words")
    self.words = words
    self._ids: Dict[str, int] = {w: i for i, w in enumerate(words)}

  def __len__(self) -> int:
    return len(self.words)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.words == other.words

  @classmethod
  def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 1) -> "Vocabulary":
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    # Most frequent first, ties alphabetical, so the same data always gives the same ids.
    kept = sorted((w for w, c in counts.items() if c >= min_count and w not in RESERVED),
                  key=lambda w: (-counts[w], w))
    return cls(list(RESERVED) + kept)

  def id_of(self, word: str) -> int:
    return self._ids.get(word, UNK_ID)

  def unknown_words(self, tokens: Sequence[str]) -> List[str]:
    return [t for t in tokens if t not in self._ids]

  def encode(self, caption: str, max_len: int) -> List[int]:
    """Token ids of a caption followed by <eos>; raises CaptionError for unusable captions."""
    tokens = tokenize(caption)
    if not tokens:
      raise CaptionError(f"caption {caption!r} has no words")
    if len(tokens) + 1 > max_len:
      raise CaptionError(f"caption has {len(tokens)} words; the limit is {max_len - 1} "
                         f"(max_caption_len={max_len} including <eos>)")
    return [self.id_of(t) for t in tokens] + [EOS_ID]

  def decode(self, ids: Iterable[int]) -> str:
    words = []
    for i in ids:
      i = int(i)
      if i in (PAD_ID, EOS_ID):
        break
      words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
    return " ".join(words)

  def save(self, path: str) -> None:
    atomic.write_json(path, {"words": self.words}, indent=0)

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("words"), list) or not all(
        isinstance(w, str) for w in data["words"]):
      raise ValueError(f"{path} is not a text2pixel vocabulary (expected {{\"words\": [...]}})")
    return cls(data["words"])
