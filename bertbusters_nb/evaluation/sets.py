"""Fixed evaluation sets: texts tokenized once and (for masked LM) masked once, kept on the device.

Every condition of an experiment is scored on the very same tokens and the very same
masked positions, so two conditions differ only by the ablation. The masking draws all its
random numbers from one seeded ``torch.Generator`` on the CPU over the whole set, so it
does not depend on the batch size, the device or how many conditions run.

An eval set stores its examples as padded (N, T) tensors on the device; ``batches``
slices them into views (no copies) and trims each batch to its longest example. Targets
are aligned with the model's logit positions: ``targets[i, t]`` is the token the logits at
position t must predict, or -100 where nothing is scored (unmasked tokens for masked LM,
the last token and padding for causal LM). Classification sets hold one label per example; embedding sets
hold no targets (the intact model's sentence embeddings are the reference, ``objectives.EmbeddingDistance``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from ..device import best_device
from .metrics import NUM_LABELS, check_task, is_regression

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class Batch:
    """One batch: the model's keyword inputs plus what the engine scores.

    inputs: input_ids, attention_mask (and token_type_ids) views, (B, T_batch).
    targets: (B, T_batch) token targets for LMs, (B,) labels for classification.
    scored: flat indices into (B * T_batch) of the positions with a target (LMs only).
    start, stop: the examples' range in the eval set.
    """

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    scored: torch.Tensor | None
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class EvalSet:
    """Tokenized examples on one device, padded to the longest; see the module docstring.

    kind: 'mlm', 'causal' or 'classification'. input_ids / attention_mask / token_type_ids:
    (N, T) tensors on ``device``. targets: (N, T) token targets or (N,) labels. lengths:
    tokens per example (CPU). batch_size: default batch size. seed: masking seed (None: no
    randomness). max_length: truncation length used when tokenizing.
    """

    kind: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    targets: torch.Tensor
    lengths: torch.Tensor
    batch_size: int
    seed: int | None
    max_length: int
    _scored_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @property
    def n_targets(self) -> int:
        """Scored tokens (LMs) or examples (classification)."""
        return int((self.targets != IGNORE_INDEX).sum()) if self.kind != "classification" else len(self)

    def batches(self, batch_size: int | None = None, start: int = 0) -> Iterator[Batch]:
        """Consecutive batches of ``batch_size`` examples (views on the device), each trimmed to its longest."""
        size = int(batch_size or self.batch_size)
        for i in range(start, len(self), size):
            yield self.batch(i, min(i + size, len(self)))

    def batch(self, start: int, stop: int) -> Batch:
        width = int(self.lengths[start:stop].max())
        inputs = {
            "input_ids": self.input_ids[start:stop, :width],
            "attention_mask": self.attention_mask[start:stop, :width],
        }
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids[start:stop, :width]
        if self.kind == "classification":
            return Batch(inputs, self.targets[start:stop], None, start, stop)
        targets = self.targets[start:stop, :width]
        key = (start, stop)
        if key not in self._scored_cache:  # nonzero() syncs a GPU: do it once per batch shape
            self._scored_cache[key] = (targets.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
        return Batch(inputs, targets, self._scored_cache[key], start, stop)

    def head(self, n: int) -> "EvalSet":
        """The first ``n`` examples, masking unchanged (texts are a seeded sample, so this is a smaller one)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"head needs a positive number of examples (got {n!r}).")
        if n >= len(self):
            return self
        sliced = {
            k: v[:n]
            for k, v in vars(self).items()
            if k in ("input_ids", "attention_mask", "targets", "lengths") or (k == "token_type_ids" and v is not None)
        }
        return dataclasses.replace(self, **sliced, _scored_cache={})

    def fingerprint(self) -> str:
        """A short hash of the tokens, targets and kind: identifies the set in checkpoints."""
        digest = hashlib.sha256(self.kind.encode())
        for tensor in (self.input_ids, self.attention_mask, self.targets):
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def to(self, device: str | torch.device) -> "EvalSet":
        """The same set on another device (masking unchanged)."""
        return dataclasses.replace(  # lengths stay on the CPU; a fresh cache (its indices live on the old device)
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids.to(device),
            targets=self.targets.to(device),
            _scored_cache={},
        )


@dataclass
class MLMEvalSet(EvalSet):
    """Masked-LM set; ``mask_prob`` and ``seed`` fix which positions are masked and how."""

    mask_prob: float = 0.15


@dataclass
class CausalEvalSet(EvalSet):
    """Causal-LM set: every next token of every text is scored."""


@dataclass
class ClassificationEvalSet(EvalSet):
    """Sequence classification set for ``task`` (a key of ``metrics.METRIC_FOR_TASK``)."""

    task: str = "rt"

    @property
    def num_labels(self) -> int:
        return NUM_LABELS[self.task]


@dataclass
class EmbeddingEvalSet(EvalSet):
    """Sentences for the embedding objective of a head-less encoder (mean-pooled last hidden state)."""


def _tokenize(tokenizer, texts: Sequence[str], text_pairs: Sequence[str] | None, max_length: int):
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string.")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: an evaluation set needs at least one text.")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs.")
    args = (texts,) if text_pairs is None else (texts, list(text_pairs))
    enc = tokenizer(
        *args,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_special_tokens_mask=True,
        return_attention_mask=True,
        return_overflowing_tokens=False,
        return_length=True,
    )
    full = tokenizer(*args, truncation=False, add_special_tokens=True, return_length=True, verbose=False)["length"]
    cut = sum(1 for n in full if n > max_length)
    if cut:  # said once per eval set, not per text
        log.warning(
            "%d of %d texts are longer than max_length=%d tokens and were truncated.", cut, len(texts), max_length
        )
    enc.pop("length", None)
    return enc


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mask_prob: float = 0.15,
    seed: int = 42,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (as ``DataCollatorForLanguageModeling``): pick ``mask_prob`` of the non-special
    positions; of those 80% become [MASK], 10% a random token, 10% stay. Returns (masked ids, targets).

    All random numbers come from one CPU generator seeded with ``seed`` and drawn for the whole
    (N, T) matrix at once, so the result is the same whatever the batch size or device.

    Example:
        >>> ids, targets = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer))  # doctest: +SKIP
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be between 0 and 1 (got {mask_prob}).")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    shape = input_ids.shape
    chosen = torch.bernoulli(torch.full(shape, float(mask_prob)), generator=gen).bool() & ~special
    to_mask = torch.bernoulli(torch.full(shape, 0.8), generator=gen).bool() & chosen
    to_random = torch.bernoulli(torch.full(shape, 0.5), generator=gen).bool() & chosen & ~to_mask
    random_words = torch.randint(vocab_size, shape, dtype=torch.long, generator=gen)
    targets = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_words, masked)
    return masked, targets


def _padded(enc, pad_id: int):
    """(input_ids, attention_mask, token_type_ids or None, lengths) as padded (N, T_max) tensors."""
    ids = _pad(enc["input_ids"], pad_id)
    attention = _pad(enc["attention_mask"], 0)
    token_types = _pad(enc["token_type_ids"], 0) if "token_type_ids" in enc else None
    lengths = torch.tensor([len(r) for r in enc["input_ids"]], dtype=torch.long)
    return ids, attention, token_types, lengths


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size!r}).")
    return batch_size


def prepare_mlm_eval(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 128,
    mask_prob: float = 0.15,
    seed: int = 42,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> MLMEvalSet:
    """Tokenize ``texts`` once and mask them once (seeded, 80/10/10); batches stay on ``device``.

    Example:
        >>> eval_set = prepare_mlm_eval(tokenizer, load_texts("movie_reviews", split="heldout")[:256])
        >>> evaluate(model, eval_set)["eval_loss"]  # doctest: +SKIP
    """
    _check_batch_size(batch_size)
    if tokenizer.mask_token_id is None:
        raise ValueError(
            "This tokenizer has no mask token; masked-LM evaluation needs one (use a BERT-family "
            "tokenizer, or prepare_causal_eval for a decoder)."
        )
    enc = _tokenize(tokenizer, texts, None, max_length)
    ids, attention, token_types, lengths = _padded(enc, _pad_id(tokenizer))
    special = _pad(enc["special_tokens_mask"], 1).bool() | (attention == 0)
    masked, targets = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer), mask_prob, seed)
    target = best_device(str(device) if device is not None else None)
    if int((targets != IGNORE_INDEX).sum()) == 0:
        raise ValueError("No token was masked: use more or longer texts (or a larger mask_prob).")
    return MLMEvalSet(
        kind="mlm",
        input_ids=masked.to(target),
        attention_mask=attention.to(target),
        token_type_ids=None if token_types is None else token_types.to(target),
        targets=targets.to(target),
        lengths=lengths,
        batch_size=batch_size,
        seed=int(seed),
        max_length=max_length,
        mask_prob=float(mask_prob),
    )


def prepare_causal_eval(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> CausalEvalSet:
    """Tokenize ``texts`` once for next-token loss: target at position t is token t+1 of the same text.

    Example:
        >>> eval_set = prepare_causal_eval(tokenizer, texts, max_length=128)  # doctest: +SKIP
    """
    _check_batch_size(batch_size)
    enc = _tokenize(tokenizer, texts, None, max_length)
    ids, attention, token_types, lengths = _padded(enc, _pad_id(tokenizer))
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, :-1] = torch.where(attention[:, 1:].bool(), ids[:, 1:], torch.full_like(ids[:, 1:], IGNORE_INDEX))
    if int((targets != IGNORE_INDEX).sum()) == 0:
        raise ValueError("No token to predict: every text is a single token; use longer texts.")
    target = best_device(str(device) if device is not None else None)
    return CausalEvalSet(
        kind="causal",
        input_ids=ids.to(target),
        attention_mask=attention.to(target),
        token_type_ids=None,
        targets=targets.to(target),
        lengths=lengths,
        batch_size=batch_size,
        seed=None,
        max_length=max_length,
    )


def prepare_classification_eval(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence,
    task: str,
    *,
    text_pairs: Sequence[str] | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> ClassificationEvalSet:
    """Tokenize (pairs of) texts once with their labels for ``task`` (a key of ``METRIC_FOR_TASK``).

    Example:
        >>> eval_set = prepare_classification_eval(tokenizer, sentences, labels, task="rt")  # doctest: +SKIP
    """
    check_task(task)
    _check_batch_size(batch_size)
    labels = list(labels)
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels.")
    if is_regression(task):
        label_tensor = torch.tensor(np.asarray(labels, dtype=np.float32))
    else:
        label_tensor = torch.tensor(np.asarray(labels, dtype=np.int64))
        bad = sorted({int(l) for l in label_tensor.tolist() if not 0 <= l < NUM_LABELS[task]})
        if bad:
            raise ValueError(f"Labels {bad} are out of range for task {task!r} ({NUM_LABELS[task]} classes).")
    enc = _tokenize(tokenizer, texts, text_pairs, max_length)
    ids, attention, token_types, lengths = _padded(enc, _pad_id(tokenizer))
    target = best_device(str(device) if device is not None else None)
    return ClassificationEvalSet(
        kind="classification",
        input_ids=ids.to(target),
        attention_mask=attention.to(target),
        token_type_ids=None if token_types is None else token_types.to(target),
        targets=label_tensor.to(target),
        lengths=lengths,
        batch_size=batch_size,
        seed=None,
        max_length=max_length,
        task=task,
    )


def prepare_embedding_eval(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> EmbeddingEvalSet:
    """Tokenize ``texts`` once for the embedding-distance objective (no targets: the intact model is the reference).

    Example:
        >>> eval_set = prepare_embedding_eval(tokenizer, load_texts("movie_reviews", split="heldout")[:64])
        ...  # doctest: +SKIP
    """
    _check_batch_size(batch_size)
    enc = _tokenize(tokenizer, texts, None, max_length)
    ids, attention, token_types, lengths = _padded(enc, _pad_id(tokenizer))
    target = best_device(str(device) if device is not None else None)
    targets = torch.full_like(ids, IGNORE_INDEX)
    return EmbeddingEvalSet(
        kind="embedding",
        input_ids=ids.to(target),
        attention_mask=attention.to(target),
        token_type_ids=None if token_types is None else token_types.to(target),
        targets=targets.to(target),
        lengths=lengths,
        batch_size=batch_size,
        seed=None,
        max_length=max_length,
    )
