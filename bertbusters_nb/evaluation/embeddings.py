"""Effects of an ablation on an encoder without an MLM head: sentence-embedding drift.

Mean-pooled last-layer embeddings (the sentence-transformers recipe MiniLM was trained
with) are compared with the intact model's by cosine similarity, per sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..model.ablation import Condition
from ..model.discovery import find_norm_sites

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def sentence_embeddings(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
) -> torch.Tensor:
    """Mean-pooled last hidden states, one row per text in the given order (on the CPU, float32).

    Texts of similar length are batched together (sorted by token count, then put back in order), so a batch pads
    to nearly its own length instead of its longest text's; padded positions are masked, so each embedding is the
    one its text gets alone. No gradients are kept.

    Example:
        >>> emb = sentence_embeddings(model, tokenizer, ["a fine film", "a dull film"])  # doctest: +SKIP
    """
    if not texts:
        raise ValueError("No texts given: the dataset is empty.")
    texts = list(texts)
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    pooled: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [texts[i] for i in order[start : start + batch_size]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state if hasattr(model, "base_model") else model(**batch)[0]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
    by_length = torch.cat(pooled)
    out = torch.empty_like(by_length)
    out[torch.tensor(order)] = by_length  # back in the texts' order
    return out


def embedding_drift(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    conditions: Sequence[Condition],
    progress: bool = True,
    batch_size: int = 64,
    max_length: int = 128,
) -> pd.DataFrame:
    """Per condition, the mean (and min) cosine between ablated and intact sentence embeddings.

    Runs on the evaluation engine (``objectives.EmbeddingDistance``): the texts are tokenized once and a condition
    that touches only later layers starts from the intact model's cached layer input (block-output sites of a
    post-LN BERT skip layer 0), in the engine's precision (``device.eval_autocast_dtype``).

    Example:
        >>> embedding_drift(model, tok, texts, [Condition("outliers", dims=(223,))])  # doctest: +SKIP
    """
    from .engine import AblationEngine
    from .sets import prepare_embedding_eval

    texts = list(texts)
    if not texts:
        raise ValueError("No texts given: the dataset is empty.")
    device = next(model.parameters()).device
    eval_set = prepare_embedding_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)
    metrics = AblationEngine(model, eval_set, find_norm_sites(model)).run(list(conditions), progress=progress)
    rows = [
        {
            "condition": condition.name,
            **condition.describe(),
            "cosine_mean": m["cosine_mean"],
            "cosine_min": m["cosine_min"],
            "texts": len(texts),
        }
        for condition, m in zip(conditions, metrics)
    ]
    return pd.DataFrame(rows)


def pair_similarity_auc(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    first: Sequence[str],
    second: Sequence[str],
    positive: Sequence[bool],
    batch_size: int = 64,
) -> float:
    """ROC AUC of cosine(first_i, second_i) separating positive pairs (e.g. SNLI entailment) from the rest."""
    from sklearn.metrics import roc_auc_score

    a = sentence_embeddings(model, tokenizer, first, batch_size)
    b = sentence_embeddings(model, tokenizer, second, batch_size)
    scores = torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()
    return float(roc_auc_score(list(positive), scores))


def snli_pairs(n_pairs: int = 400, seed: int = 0) -> tuple[list[str], list[str], list[bool]]:
    """``n_pairs`` seeded SNLI test pairs labelled entailment or contradiction (neutral left out): premises,
    hypotheses, and whether each pair is an entailment (the cosine probe's positives)."""
    import datasets

    from ..data.assets import snli_files
    from .tasks import sample

    dev = datasets.load_dataset("json", data_files=str(snli_files()["test"]), split="train")
    dev = dev.select_columns(["sentence1", "sentence2", "gold_label"])
    dev = sample(dev.filter(lambda g: g in ("entailment", "contradiction"), input_columns="gold_label"), n_pairs, seed)
    return list(dev["sentence1"]), list(dev["sentence2"]), [label == "entailment" for label in dev["gold_label"]]


def snli_probe_table(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conditions: Sequence[Condition],
    n_pairs: int = 400,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Per condition: embedding cosine to the intact model and the SNLI probe's ROC AUC.

    The probe scores each SNLI dev pair by the cosine of its two sentence embeddings; the AUC
    says how well that separates entailment from contradiction (neutral pairs are left out).
    """
    from sklearn.metrics import roc_auc_score

    premises, hypotheses, positive = snli_pairs(n_pairs, seed)
    sites = find_norm_sites(model)
    intact = sentence_embeddings(model, tokenizer, premises, batch_size)
    rows = []
    for condition in tqdm(conditions, desc="conditions", disable=not progress, leave=False):
        with condition.apply(sites):
            a = sentence_embeddings(model, tokenizer, premises, batch_size)
            b = sentence_embeddings(model, tokenizer, hypotheses, batch_size)
        auc = roc_auc_score(positive, torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy())
        drift = torch.nn.functional.cosine_similarity(intact, a, dim=-1)
        rows.append(
            {
                "condition": condition.name,
                **condition.describe(),
                "cosine_mean": float(drift.mean()),
                "snli_auc": float(auc),
                "pairs": len(premises),
            }
        )
    return pd.DataFrame(rows)
