"""The explorer's one claim and its sentence, from the numbers the explorer computed (notebook 05).

Kept apart from the computing so that the words live in one place (``reporting.claims`` holds every other
notebook's claims; this one moves there when that module takes it). ``explorer_finding`` applies the
claim's test (the ablated view hurts: loss up, or embeddings moved; and the intact model came back bit for
bit) and builds the evidence sentence.

Example:
    >>> claim, held, evidence = explorer_finding("mlm", view, restored=True, n_texts=16, top_k=5)  # doctest: +SKIP
"""

from __future__ import annotations

from .render import LM_LABELS


def explorer_finding(kind: str, view: dict, restored: bool, n_texts: int, top_k: int) -> tuple[str, bool, str]:
    """(claim, held, evidence) for ``RunRecorder.finding`` from an ablated ``view`` (``Explorer.compute_view``)
    of a model of ``kind`` ('mlm', 'causal', 'embeddings'), ``restored``: the intact results recomputed
    afterwards were identical; ``n_texts``: eval texts; ``top_k``: predictions per blank."""
    dims = " ".join(map(str, view["state"].dims))
    if kind in LM_LABELS:
        loss_name, scored = LM_LABELS[kind]
        table = view["predictions"]
        where = f"{table.blank.nunique()} blank(s)" if kind == "mlm" else "the next token"
        guesses = (
            ("no [MASK] in the sentence" if kind == "mlm" else "no text to continue")
            if table is None
            else f"{view['changed_predictions']} of the {len(table)} top-{top_k} guesses for {where} changed"
        )
        claim = (
            f"Switching the top outlier dims off raises the {loss_name}; switching them on again restores it exactly"
        )
        held = bool(view["loss_delta"] is not None and view["loss_delta"] > 0 and restored)
        evidence = (
            f"dims {dims} off in {view['n_sites']} norm modules: {loss_name} {view['loss_intact']:.4f} -> "
            f"{view['loss']:.4f} ({view['loss_delta']:+.4f}) on {view['tokens']} {scored} of "
            f"{n_texts} texts; {guesses}; intact loss and predictions recomputed afterwards "
            f"identical: {restored}."
        )
    else:
        claim = (
            "Switching the top outlier dims off moves sentence embeddings; switching them on again restores them "
            "exactly"
        )
        held = bool(view["cosine_mean"] is not None and view["cosine_mean"] < 1.0 and restored)
        evidence = (
            f"dims {dims} off in {view['n_sites']} norm modules: mean cosine to the intact embeddings "
            f"{view['cosine_mean']:.4f} (min {view['cosine_min']:.4f}) over {n_texts} texts; "
            f"intact embeddings recomputed afterwards identical: {restored}."
        )
    return claim, held, evidence


__all__ = ["explorer_finding"]
