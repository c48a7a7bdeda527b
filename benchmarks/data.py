"""Dataset loaders for the benchmarks and notebooks (no network needed).

* MNIST-1D: generated offline by the ``mnist1d`` package (the default).
* Fashion-MNIST: idx files from a user path, Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), or downloaded when a network exists.
* MovieLens ml-latest-small: a user's ``ratings.csv``, or the ``movielens``
  object inside Debian's ``r-cran-dslabs`` R data, read with ``rdata``.
* scikit-learn's bundled ``load_digits``.
* Jane Austen's six novels: Debian's ``r-cran-janeaustenr`` R data (or a
  user's folder holding its ``Rdata.rdx``/``.rdb``), read with ``rdata``.

Every loader returns float32 features and int32 labels as NumPy arrays.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_URL = ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/"
               "master/data/fashion/")
FASHION_FILES = {
    "x": "train-images-idx3-ubyte.gz", "y": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of each file's *decompressed* idx bytes (the data, whatever gzip
# header a mirror or Debian wrote), measured on Debian's dataset-fashion-mnist.
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DSLABS_RDATA = "/usr/lib/R/site-library/dslabs/data/Rdata"
AUSTEN_RDATA = "/usr/lib/R/site-library/janeaustenr/data/Rdata"
AUSTEN_NOVELS = ("prideprejudice", "sensesensibility", "emma", "mansfieldpark",
                 "persuasion", "northangerabbey")


class Classification(NamedTuple):
  x: np.ndarray
  y: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int


def mnist1d(num_samples: int = 5000, seed: int = 42) -> Classification:
  """MNIST-1D (Greydanus 2020), generated offline; 80/20 train/test split."""
  from mnist1d.data import get_dataset_args, make_dataset
  args = get_dataset_args()
  args.num_samples, args.seed = num_samples, seed
  d = make_dataset(args)
  return Classification(d["x"].astype(np.float32), d["y"].astype(np.int32),
                        d["x_test"].astype(np.float32),
                        d["y_test"].astype(np.int32), 10)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Classification:
  """scikit-learn's bundled 8x8 digits, features scaled to [0, 1]."""
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  order = np.random.default_rng(seed).permutation(len(y))
  x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
  n = int(len(y) * (1 - test_fraction))
  return Classification(x[:n], y[:n], x[n:], y[n:], 10)


def _idx_bytes(path: str | os.PathLike) -> bytes:
  raw = Path(path).read_bytes()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise ValueError(f"{path}: corrupted or truncated gzip file ({e}).") \
          from None
  return raw


def read_idx(path: str | os.PathLike, sha256: str | None = None
             ) -> np.ndarray:
  """Reads an idx file (optionally gzipped): the MNIST family's format.

  With ``sha256``, the decompressed bytes must have that digest.
  """
  raw = _idx_bytes(path)
  if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
    raise ValueError(f"{path}: SHA-256 of its data is "
                     f"{hashlib.sha256(raw).hexdigest()}, expected {sha256} "
                     "(corrupted, truncated or another file).")
  if len(raw) < 4:
    raise ValueError(f"{path}: too short for an idx header.")
  zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte idx file "
                     f"(magic {zero:#x}, type {dtype_code:#x}).")
  if len(raw) < 4 + 4 * ndim:
    raise ValueError(f"{path}: truncated idx header.")
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise ValueError(f"{path}: header says {dims}, found {data.size} bytes.")
  return data.reshape(dims)


def fashion_mnist(path: str | os.PathLike | None = None,
                  download: bool = False) -> Classification:
  """Fashion-MNIST (60k/10k), images flattened to 784 floats in [0, 1].

  Looks in ``path``, then in Debian's install location; with
  ``download=True`` fetches the four files into ``path`` (or
  ``~/.cache/lawn_optax/fashion-mnist``) when they are missing.
  """
  candidates = [Path(path)] if path else []
  candidates += [Path(d) for d in FASHION_DIRS]
  for d in candidates:
    if all((d / f).exists() for f in FASHION_FILES.values()):
      break
  else:
    if not download:
      raise FileNotFoundError(
          "Fashion-MNIST idx files not found in "
          f"{[str(c) for c in candidates]}: install Debian's "
          "dataset-fashion-mnist, pass path=, or download=True.")
    d = Path(path or Path.home() / ".cache/lawn_optax/fashion-mnist")
    d.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES.values():
      if not (d / f).exists():
        download(FASHION_URL + f, d / f, FASHION_SHA256[f])
  arr = {k: read_idx(d / f, FASHION_SHA256[f])
         for k, f in FASHION_FILES.items()}
  flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype(np.float32)
  return Classification(flat(arr["x"]), arr["y"].astype(np.int32),
                        flat(arr["x_test"]), arr["y_test"].astype(np.int32), 10)


def download(url: str, dest: Path, sha256: str) -> Path:
  """Fetches ``url`` (HTTPS only) to ``dest``, atomically: written to a
  temporary name, checked (SHA-256 of the decompressed data), then renamed;
  a failed or interrupted download leaves nothing at ``dest``."""
  if not url.startswith("https://"):
    raise ValueError(f"refusing to download over plain HTTP: {url}")
  part = dest.with_name(dest.name + ".part")
  try:
    with urllib.request.urlopen(url, timeout=60) as response:
      part.write_bytes(response.read())
    read_idx(part, sha256)  # raises on a truncated or wrong file
    os.replace(part, dest)
  finally:
    part.unlink(missing_ok=True)
  return dest


def _read_rdata_object(rdx: Path, rdb: Path, name: str):
  """One object from an R lazy-load database (``Rdata.rdx`` / ``.rdb``)."""
  import warnings

  import rdata
  raw = rdx.read_bytes()
  # The index is gzip in dslabs' build; R may also write it as length + zlib.
  try:
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else (
        zlib.decompress(raw[4:]))
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{rdx}: corrupted or truncated R index ({e}).") from None
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "assumed RDS": it is
    index = rdata.conversion.convert(rdata.parser.parse_data(raw))
  variables = index["variables"]
  if name not in variables:
    raise KeyError(f"{name!r} not in {rdx} (has {sorted(variables)[:10]}...)")
  offset, length = (int(v) for v in np.asarray(variables[name]).ravel()[:2])
  with open(rdb, "rb") as f:
    f.seek(offset)
    chunk = f.read(length)
  try:
    if len(chunk) != length:
      raise EOFError(f"{len(chunk)} of {length} bytes at offset {offset}")
    data = zlib.decompress(chunk[4:])  # 4-byte big-endian length, then zlib
  except (EOFError, zlib.error) as e:
    raise ValueError(f"{rdb}: corrupted or truncated R data for {name!r} "
                     f"({e}).") from None
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    parsed = rdata.parser.parse_data(data, expand_altrep=True)
  return rdata.conversion.convert(parsed)


class Ratings(NamedTuple):
  user: np.ndarray       # int32, 0..num_users-1
  item: np.ndarray       # int32, 0..num_items-1
  timestamp: np.ndarray  # int64
  num_users: int
  num_items: int


def _index(values: np.ndarray) -> tuple[np.ndarray, int]:
  uniq, inv = np.unique(values, return_inverse=True)
  return inv.astype(np.int32), len(uniq)


def movielens(path: str | os.PathLike | None = None) -> Ratings:
  """MovieLens ml-latest-small ratings (100,004 rows in the dslabs copy).

  ``path`` may be a ``ratings.csv`` (columns userId, movieId, rating,
  timestamp) or an ``Rdata`` prefix whose ``.rdx``/``.rdb`` hold a
  ``movielens`` data frame; by default Debian's r-cran-dslabs copy is read.
  """
  path = Path(path) if path else Path(DSLABS_RDATA)
  if path.suffix == ".csv":
    rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None,
                         encoding="utf-8")
    users, items, ts = rows["userId"], rows["movieId"], rows["timestamp"]
  else:
    rdx, rdb = path.with_suffix(".rdx"), path.with_suffix(".rdb")
    if not rdx.exists():
      raise FileNotFoundError(
          f"{rdx} not found: install Debian's r-cran-dslabs or pass the path "
          "of ml-latest-small's ratings.csv.")
    frame = _read_rdata_object(rdx, rdb, "movielens")
    users = np.asarray(frame["userId"])
    items = np.asarray(frame["movieId"])
    ts = np.asarray(frame["timestamp"])
  u, nu = _index(np.asarray(users))
  i, ni = _index(np.asarray(items))
  return Ratings(u, i, np.asarray(ts, np.int64), nu, ni)


class LeaveOneOut(NamedTuple):
  train_user: np.ndarray
  train_item: np.ndarray
  val: np.ndarray    # [num_eval_users, 1 + num_negatives] item ids, positive first
  test: np.ndarray   # same layout
  eval_users: np.ndarray
  num_users: int
  num_items: int


def leave_one_out(r: Ratings, num_negatives: int = 99,
                  seed: int = 0) -> LeaveOneOut:
  """Implicit feedback split (NCF protocol): each user's latest interaction is
  the test item, the one before it the validation item, the rest training.
  Users with fewer than 3 interactions are kept for training only. Each eval
  row holds the positive then ``num_negatives`` items the user never rated.
  """
  rng = np.random.default_rng(seed)
  order = np.lexsort((r.timestamp, r.user))
  user, item = r.user[order], r.item[order]
  starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
  ends = np.r_[starts[1:], len(user)]
  keep = np.ones(len(user), bool)
  val, test, eval_users = [], [], []
  for s, e in zip(starts, ends):
    if e - s < 3:
      continue
    seen = set(item[s:e].tolist())
    pool = num_negatives * 2
    negs = []
    for held in (item[e - 2], item[e - 1]):
      cand = rng.integers(0, r.num_items, size=pool)
      cand = [c for c in dict.fromkeys(cand.tolist()) if c not in seen]
      while len(cand) < num_negatives:
        cand += [c for c in rng.integers(0, r.num_items, size=pool).tolist()
                 if c not in seen and c not in cand]
      negs.append([held] + cand[:num_negatives])
    val.append(negs[0])
    test.append(negs[1])
    eval_users.append(user[s])
    keep[e - 2:e] = False
  return LeaveOneOut(user[keep], item[keep], np.asarray(val, np.int32),
                     np.asarray(test, np.int32),
                     np.asarray(eval_users, np.int32), r.num_users,
                     r.num_items)


# ----------------------------------------------------------------------------
# Jane Austen's novels, for the character-level language-model benchmark.

_CHAPTER = re.compile(r"^\s*(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?\s*$")


class Corpus(NamedTuple):
  """Byte-level text splits (uint8 arrays; the vocabulary is the 256 bytes)."""
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray
  source: str


def austen_novels(path: str | os.PathLike | None = None
                  ) -> dict[str, list[str]]:
  """Each of the six novels as its list of lines (janeaustenr's objects)."""
  path = Path(path) if path else Path(AUSTEN_RDATA)
  if path.is_dir():
    path = path / "Rdata"
  rdx, rdb = path.with_suffix(".rdx"), path.with_suffix(".rdb")
  if not rdx.exists() or not rdb.exists():
    raise FileNotFoundError(
        f"{rdx} not found: install Debian's r-cran-janeaustenr "
        "(sudo apt install r-cran-janeaustenr) or pass the folder holding "
        "its Rdata.rdx and Rdata.rdb.")
  return {n: [str(line) for line in _read_rdata_object(rdx, rdb, n)]
          for n in AUSTEN_NOVELS}


def paragraphs(lines: list[str]) -> str:
  """Undo the line wrapping: a paragraph's lines joined by spaces, one
  paragraph per line."""
  out, cur = [], []
  for line in lines:
    if line.strip():
      cur.append(line.strip())
    elif cur:
      out.append(" ".join(cur))
      cur = []
  if cur:
    out.append(" ".join(cur))
  return "\n".join(out) + "\n"


def chapters(lines: list[str]) -> list[list[str]]:
  """A novel's chapters (heading line included); front matter dropped."""
  starts = [i for i, line in enumerate(lines) if _CHAPTER.match(line)]
  if not starts:
    raise ValueError("no chapter headings ('CHAPTER I', 'Chapter 1', ...) "
                     "found")
  return [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)])]


def text_corpus(novels: dict[str, list[str]],
                train_novels: tuple[str, ...] = AUSTEN_NOVELS[:4],
                heldout_novels: tuple[str, ...] = AUSTEN_NOVELS[4:],
                max_train_chars: int | None = None,
                source: str = "") -> Corpus:
  """Train on whole novels; validate and test on alternate chapters of the
  held-out ones (even chapters -> validation, odd -> test), so validation
  and test are the same kind of unseen text and never overlap training.

  ``max_train_chars`` keeps the start of the training stream (a small
  corpus reaches the over-fitting regime in a few epochs)."""
  overlap = set(train_novels) & set(heldout_novels)
  if overlap:
    raise ValueError(f"novels {sorted(overlap)} are in train and held out")
  missing = [n for n in (*train_novels, *heldout_novels) if n not in novels]
  if missing:
    raise KeyError(f"novels {missing} not in the corpus (has "
                   f"{sorted(novels)})")
  train = "".join(paragraphs(novels[n]) for n in train_novels)
  if max_train_chars:
    train = train[:max_train_chars]
  val, test = [], []
  for n in heldout_novels:
    for i, ch in enumerate(chapters(novels[n])):
      (val if i % 2 == 0 else test).append(paragraphs(ch))
  enc = lambda s: np.frombuffer(s.encode("utf-8"), np.uint8).copy()
  return Corpus(enc(train), enc("".join(val)), enc("".join(test)), source)


def austen(path: str | os.PathLike | None = None,
           max_train_chars: int | None = None, **kwargs) -> Corpus:
  """Jane Austen's novels as a byte-level corpus (see :func:`text_corpus`):
  train on Pride and Prejudice, Sense and Sensibility, Emma and Mansfield
  Park; validate/test on alternate chapters of Persuasion and Northanger
  Abbey."""
  source = str(path or AUSTEN_RDATA)
  return text_corpus(austen_novels(path), max_train_chars=max_train_chars,
                     source=f"janeaustenr R data at {source}", **kwargs)
