"""WordPiece tokenizer and packed token chunks for pre-training, prepared once on the CPU.

``prepare_data`` trains a lower-cased WordPiece vocabulary on the train split of the offline
corpora and writes a data folder that the trainer (``pretraining.trainer``) reads without
``datasets`` or the tokenizer, so a GPU machine needs only numpy and torch::

    data_dir/
      tokenizer/        tokenizer.json, tokenizer_config.json, vocab.txt (loads with AutoTokenizer)
      train.npy         uint16 (n_chunks, seq_len): [CLS] 126 stream tokens [SEP]
      heldout.npy       the same for the held-out texts (content-hash split of data.py)
      data.json         corpora, sizes, special ids, seq_len

The token stream is every text's tokens followed by [SEP], texts in corpus order; it is cut
into ``seq_len - 2`` token pieces (the remainder dropped) and each piece is framed by
[CLS] ... [SEP], as in BERT's sentence-packing pre-training data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json, read_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, in this order
DEFAULT_CORPORA = ("movie_reviews", "snli", "kjv")


def train_tokenizer(
    texts: Sequence[str],
    vocab_size: int = 8192,
    out_dir: str | Path | None = None,
    min_frequency: int = 2,
    model_max_length: int = 128,
):
    """Train a lower-cased BERT WordPiece tokenizer on ``texts``; save it to ``out_dir`` if given.

    Special tokens take ids 0-4: [PAD] [UNK] [CLS] [SEP] [MASK]. Returns a transformers
    ``BertTokenizer`` (fast backend) whose ``len()`` equals ``vocab_size`` when the texts
    hold enough distinct pieces.

    Example:
        >>> tok = train_tokenizer(["a tiny corpus", "of two texts"], vocab_size=60)  # doctest: +SKIP
        >>> tok("a tiny text")["input_ids"]  # doctest: +SKIP
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer  # the fast (Rust) tokenizer in transformers 5 (BertTokenizerFast is it)

    wordpiece = BertWordPieceTokenizer(lowercase=True, strip_accents=None, clean_text=True)
    wordpiece.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer = BertTokenizer(
        tokenizer_object=wordpiece._tokenizer, do_lower_case=True, model_max_length=model_max_length
    )
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens landed at ids {ids}, expected 0..4")
    if out_dir is not None:
        out_dir = Path(out_dir)
        tokenizer.save_pretrained(out_dir)
        wordpiece.save_model(str(out_dir))  # vocab.txt, for tools that want the plain list
    return tokenizer


def pack_chunks(token_lists: Sequence[Sequence[int]], seq_len: int, cls_id: int = 2, sep_id: int = 3) -> np.ndarray:
    """Concatenate token lists (each followed by [SEP]) and cut into [CLS] + (seq_len-2) + [SEP] rows.

    Example:
        >>> pack_chunks([[7, 8, 9], [10, 11, 12]], seq_len=5)
        array([[ 2,  7,  8,  9,  3],
               [ 2,  3, 10, 11,  3]], dtype=uint16)
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 (room for [CLS], a token and [SEP]), got {seq_len}.")
    body = seq_len - 2
    stream = np.fromiter((t for ids in token_lists for t in (*ids, sep_id)), dtype=np.int64)
    n = len(stream) // body
    if n == 0:
        raise ValueError(f"Only {len(stream)} tokens: not enough for one chunk of {seq_len}.")
    if stream.max(initial=0) >= 2**16:
        raise ValueError("token ids do not fit uint16; use a vocabulary below 65,536.")
    rows = stream[: n * body].reshape(n, body)
    framed = np.concatenate([np.full((n, 1), cls_id), rows, np.full((n, 1), sep_id)], axis=1)
    return framed.astype(np.uint16)


def encode_texts(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], batch: int = 2048) -> list[list[int]]:
    """Token ids of each text without special tokens, through the fast backend in batches, without offsets (what
    ``pack_chunks`` packs; ``analysis.frequency`` counts the same ids)."""
    backend = tokenizer.backend_tokenizer
    out: list[list[int]] = []
    for start in range(0, len(texts), batch):
        encodings = backend.encode_batch_fast(list(texts[start : start + batch]), add_special_tokens=False)
        out.extend(e.ids for e in encodings)
    return out


def prepare_data_from_texts(
    train_texts: Sequence[str],
    heldout_texts: Sequence[str],
    out_dir: str | Path,
    vocab_size: int = 8192,
    seq_len: int = 128,
    min_frequency: int = 2,
    meta: dict | None = None,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Train the tokenizer on ``train_texts`` (or reuse ``tokenizer_dir``'s) and write the data folder.

    Example:
        >>> prepare_data_from_texts(train, heldout, "runs/tiny-data", vocab_size=200, seq_len=32)  # doctest: +SKIP
        >>> prepare_data_from_texts(train, heldout, "runs/live", tokenizer_dir="bertbusters_nb/data/bbmini")  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        tokenizer = _reuse_tokenizer(tokenizer_dir, out_dir / "tokenizer", seq_len)
        vocab_size = len(tokenizer)
    else:
        tokenizer = train_tokenizer(train_texts, vocab_size, out_dir / "tokenizer", min_frequency, seq_len)
    arrays = {}
    for split, texts in (("train", train_texts), ("heldout", heldout_texts)):
        chunks = pack_chunks(encode_texts(tokenizer, texts), seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
        arrays[split] = chunks
        atomic_write_bytes(out_dir / f"{split}.npy", _npy_bytes(chunks))
    info = {
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
        "min_frequency": min_frequency,
        "special_tokens": dict(zip(SPECIAL_TOKENS, range(len(SPECIAL_TOKENS)))),
        "train_chunks": int(len(arrays["train"])),
        "heldout_chunks": int(len(arrays["heldout"])),
        "train_tokens": int(arrays["train"].size),
        "heldout_tokens": int(arrays["heldout"].size),
        "train_texts": len(train_texts),
        "heldout_texts": len(heldout_texts),
        "train_sha1": hashlib.sha1(arrays["train"].tobytes()).hexdigest(),
        **(meta or {}),
    }
    atomic_write_json(out_dir / "data.json", info)
    log.info(
        "data folder %s: %d train chunks, %d held-out chunks, vocab %d",
        out_dir,
        info["train_chunks"],
        info["heldout_chunks"],
        info["vocab_size"],
    )
    return out_dir


def prepare_data(
    out_dir: str | Path,
    corpora: Sequence[str] = DEFAULT_CORPORA,
    vocab_size: int = 8192,
    seq_len: int = 128,
    min_frequency: int = 2,
    tokenizer_dir: str | Path | None = None,
    max_texts: int | None = None,
) -> Path:
    """Tokenizer + packed chunks for the offline corpora (train / held-out split of ``data.py``).

    ``tokenizer_dir`` reuses a saved tokenizer (e.g. ``bertbusters_nb/data/bbmini``) instead of training
    one; ``max_texts`` keeps the first N train and N held-out texts of each corpus (a quick
    live or smoke run). Needs ``datasets`` (imported here, not at module import). A folder
    already prepared with the same settings is reused.

    Example:
        >>> prepare_data(".gpu/data")  # doctest: +SKIP
        PosixPath('.gpu/data')
        >>> prepare_data("runs/live-data", tokenizer_dir="bertbusters_nb/data/bbmini", max_texts=2000)  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    wanted = {
        "corpora": list(corpora),
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "min_frequency": min_frequency,
        "tokenizer_from": None if tokenizer_dir is None else str(tokenizer_dir),
        "max_texts": max_texts,
    }
    if (out_dir / "data.json").exists():
        info = read_json(out_dir / "data.json")
        if all(info.get(k) == v for k, v in wanted.items() if k != "vocab_size" or tokenizer_dir is None):
            log.info("reusing the data folder %s", out_dir)
            return out_dir
    from ..data.texts import load_texts  # needs datasets

    train = [t for c in corpora for t in load_texts(c, split="train")[:max_texts]]
    heldout = [t for c in corpora for t in load_texts(c, split="heldout")[:max_texts]]
    meta = {k: v for k, v in wanted.items() if k in ("corpora", "tokenizer_from", "max_texts")}
    return prepare_data_from_texts(
        train, heldout, out_dir, vocab_size, seq_len, min_frequency, meta=meta, tokenizer_dir=tokenizer_dir
    )


def _reuse_tokenizer(source: str | Path, target: Path, seq_len: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), model_max_length=seq_len)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"{source}: special tokens sit at ids {ids}; the trainer needs {list(SPECIAL_TOKENS)} at 0-4.")
    tokenizer.save_pretrained(target)
    if (Path(source) / "vocab.txt").exists():
        shutil.copyfile(Path(source) / "vocab.txt", target / "vocab.txt")
    return tokenizer


def load_chunks(data_dir: str | os.PathLike, split: str = "train") -> np.ndarray:
    """The packed (n_chunks, seq_len) uint16 array of a data folder's ``split`` ('train' or 'heldout')."""
    if split not in ("train", "heldout"):
        raise ValueError(f"Unknown split {split!r}; pick 'train' or 'heldout'.")
    path = Path(data_dir) / f"{split}.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the data folder with prepare_data({str(data_dir)!r}).")
    return np.load(path)


def unigram_entropy(
    chunks: np.ndarray,
    reference: np.ndarray | None = None,
    n_special: int = len(SPECIAL_TOKENS),
    vocab_size: int | None = None,
) -> float:
    """Unigram entropy (nats) of the non-special tokens in ``chunks``.

    With ``reference`` it is the cross-entropy of ``chunks`` under the reference's unigram
    distribution (add-one smoothed): the best loss a context-free predictor fitted on the
    reference can reach.

    Example:
        >>> round(unigram_entropy(np.array([[5, 6, 5, 6]])), 4)
        0.6931
    """

    def counts(arr: np.ndarray) -> np.ndarray:
        ids = arr.ravel().astype(np.int64)
        ids = ids[ids >= n_special]
        size = vocab_size or int(max(chunks.max(), 0 if reference is None else reference.max())) + 1
        return np.bincount(ids, minlength=size).astype(np.float64)

    target = counts(chunks)
    p_target = target / target.sum()
    if reference is None:
        nz = p_target > 0
        return float(-(p_target[nz] * np.log(p_target[nz])).sum())
    ref = counts(reference)
    ref[n_special:] += 1.0
    q = ref / ref.sum()
    nz = p_target > 0
    return float(-(p_target[nz] * np.log(q[nz])).sum())


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
