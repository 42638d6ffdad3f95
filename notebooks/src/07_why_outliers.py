# %% [markdown]
# # 07 · Why the outliers exist, and what they break
#
# **Claims tested (the paper's follow-ups):**
# - Puccetti et al. (2022): the outlier dims are driven by **token frequency** in the pre-training data
#   (the outlier's magnitude on a token correlates with how often the token was seen).
# - Bondarenko et al. (2023): the largest outlier activations sit on **[SEP], "." and ","**; attention heads
#   learn to "do nothing" by attending to them; the outliers make **8-bit quantization** fail.
# - Sun et al. (2024): massive activations act as **attention sinks** on the first token and delimiters.
#
# Models (`models`): `bbmini` (this project's own small BERT: we hold its whole pre-training corpus, so its
# token counts are **exact**, rebuilt and checked against the SHA-1 of its training chunks), the packaged
# MiniLM and SmolLM2-135M. For those two the pre-training data is not here: their counts come from the
# offline corpora, **a proxy**. The dims studied come from the project's one detection rule. Every
# number below is computed in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/07_why_outliers"
device = "auto"
models = ["bbmini", "minilm", "smollm2"]
k = 3.0
corpus = "movie_reviews"
count_corpora = ["movie_reviews", "snli", "kjv"]
proxy_max_texts = 3000
exact_max_texts = 0
n_texts = 48
attention_texts = 12
quant_texts = 16
max_length = 64
batch_size = 16
min_occurrences = 3
n_boot = 500
top_share = 0.01
random_draws = 10
bits = 8
seed = 0

# %%
import pandas as pd
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.analysis import attention_sinks, frequency, quantization
from bertbusters_nb.analysis.activations import text_batches
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.reporting import claims, plots
from bertbusters_nb.studies import why

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
texts = sample_texts(load_texts(corpus, split="heldout", min_words=20), n_texts, seed=seed)
subjects = [
    why.load_subject(
        name,
        device=device,
        k=k,
        corpora=count_corpora,
        proxy_max_texts=proxy_max_texts or None,
        exact_max_texts=exact_max_texts or None,
    )
    for name in models
]
overview = pd.DataFrame(
    [
        {
            "model": s.name,
            "objective": s.kind,
            "layers": s.layers,
            "hidden": s.hidden_size,
            "outlier dims": s.dims,
            "ablation roles": "+".join(s.roles),
            "counts": s.counts.describe(),
        }
        for s in subjects
    ]
)
rec.table(overview, "models")
display(claims.published_dims_table({s.name: s.dims for s in subjects}))
overview

# %% [markdown]
# ## 1 · Token frequency against outlier magnitude
# Per token type seen at least `min_occurrences` times in the held-out texts: its count in the
# pre-training corpus (log) against the mean |h| of the strongest outlier dim on it, at every layer.
# Pearson and Spearman correlations with 95% bootstrap intervals over token types, and partial
# correlations that control for the type's mean position and for special tokens.

# %%
occurrences = {
    s.name: frequency.token_occurrences(s.model, s.tokenizer, texts, s.dims, max_length, batch_size) for s in subjects
}
correlations = pd.concat(
    [
        frequency.layer_correlations(occurrences[s.name], s.counts, s.dims[0], n_boot, seed, min_occurrences).assign(
            model=s.name
        )
        for s in subjects
    ],
    ignore_index=True,
)
rec.table(correlations, "frequency_correlations")
fig = plots.correlation_by_layer(correlations)
rec.figure(fig, "frequency_correlation_by_layer")

# %%
best_layers = correlations[correlations.measure == "partial_spearman"].groupby("model", sort=False).value.idxmax()
scatter = pd.concat(
    [
        frequency.frequency_table(
            occurrences[s.name], s.counts, int(correlations.layer[best_layers[s.name]]), s.dims[0], min_occurrences
        ).assign(model=s.name)
        for s in subjects
    ],
    ignore_index=True,
)
rec.table(scatter, "frequency_by_token")
fig = plots.frequency_scatter(scatter)
rec.figure(fig, "frequency_scatter")

# %%
for s in subjects:
    follows = claims.frequency_drives_magnitude(correlations[correlations.model == s.name], s.counts, s.name)
    rec.finding(*follows)
    display(Markdown(follows.markdown()))

# %% [markdown]
# ### Over pre-training (models trained by this project)
# Does the correlation appear when the outlier does? That needs hidden states at intermediate steps.

# %%
for s in filter(why.has_trajectory, subjects):
    emerged, snapshot_files, steps = frequency.snapshot_availability(bb.model.loading.resolve(s.name), s.dims, k=k)
    rec.table(emerged, f"emergence_{s.name}")
    sentence_snap = claims.snapshot_sentence(emerged, len(snapshot_files), s.name, steps, k)
    over_training = claims.frequency_over_training(s.name, sentence_snap)
    rec.finding(*over_training)
    display(emerged, Markdown(over_training.markdown()))

# %% [markdown]
# ## 2 · Which tokens carry the largest outlier activations
# The top `top_share` of |h| at the strongest outlier dim (all layers after the embeddings): the share on
# special tokens, delimiters (`. , ; : ! ?`) and the first token, against their share of all tokens.

# %%
for s in subjects:
    top_tokens, shares = frequency.top_activation_tokens(occurrences[s.name], s.dims[0], top_share=top_share)
    rec.table(top_tokens.assign(model=s.name), f"top_tokens_{s.name}")
    on_special = claims.top_activations_on_special_tokens(shares, s.name)
    rec.finding(*on_special)
    display(top_tokens, Markdown(on_special.markdown()))

# %% [markdown]
# ## 3 · Attention sinks, and what disabling the outlier dims does to them
# Per head, the attention mass of real query tokens on special tokens, delimiters and the first token
# (their union: the sink score), beside those tokens' share of the keys. Then the same with the outlier
# dims disabled, against `random_draws` random sets of as many dims.

# %%
sinks = pd.concat(
    [
        attention_sinks.sink_under_conditions(
            s.model,
            s.tokenizer,
            texts[:attention_texts],
            why.conditions(s, random_draws, seed),
            s.sites,
            max_length,
            batch_size,
        ).assign(model=s.name)
        for s in subjects
    ],
    ignore_index=True,
)
rec.table(sinks, "attention_sinks")
fig = plots.sink_heatmaps(sinks)
rec.figure(fig, "attention_sinks")

# %%
for s in subjects:
    table_s = sinks[sinks.model == s.name]
    sinking = claims.heads_sink(table_s[table_s.condition == "none"], s.name)
    rec.finding(*sinking)
    removed = claims.sinks_removed_vs_random(attention_sinks.mean_sink(table_s), s.name, s.dims)
    rec.finding(*removed)
    display(Markdown(sinking.markdown()), Markdown(removed.markdown()))

# %% [markdown]
# ## 4 · What the outliers break: simulated 8-bit quantization
# On the first `quant_texts` texts, every linear layer's weight and input fake-quantized to `bits`
# bits per tensor (symmetric, dynamic min-max; the output embedding kept in full precision), against
# fp32; then the same keeping the outlier dims of the inputs that read the normalized residual stream
# in full precision (as LLM.int8 does), against keeping as many random dims. Only the linear layers'
# inputs and weights are quantized: the residual sums and the norms' inputs, where the largest outliers
# live (a post-LN BERT's block output before its LayerNorm; SmolLM2's residual stream), stay in fp32,
# so this is a milder setting than Bondarenko et al.'s full W8A8. Objective: MLM / causal-LM loss on the held-out texts,
# for MiniLM (no LM head) 1 - cosine of its sentence embeddings to the fp32 ones.

# %%
quant = pd.concat(
    [
        quantization.quantization_table(
            s.model,
            s.tokenizer,
            texts[:quant_texts],
            s.kind,
            s.dims,
            why.random_draws(s, random_draws, seed),
            bits,
            max_length,
            batch_size,
            seed,
            sites=s.sites,
        ).assign(model=s.name)
        for s in subjects
    ],
    ignore_index=True,
)
rec.table(quant, "quantization")
fig = plots.quantization_bars(quant)
rec.figure(fig, "quantization")

# %%
for s in subjects:
    rescued = claims.quantization_rescued(quant[quant.model == s.name], s.name, bits)
    rec.finding(*rescued)
    display(Markdown(rescued.markdown()))

# %% [markdown]
# ### Bondarenko's metrics: kurtosis and max infinity norm per layer
# With all dims, without the outlier dims, and without as many random dims (same forwards).

# %%
metrics = pd.concat(
    [
        quantization.outlier_metrics(
            s.model,
            text_batches(s.tokenizer, texts, max_length, batch_size),
            why.random_excluded(s, random_draws, seed),
        ).assign(model=s.name)
        for s in subjects
    ],
    ignore_index=True,
)
rec.table(metrics, "kurtosis")
fig = plots.kurtosis_by_layer(metrics)
rec.figure(fig, "kurtosis")

# %%
for s in subjects:
    tails = claims.heavy_tails(metrics[metrics.model == s.name], s.name)
    rec.finding(*tails)
    display(Markdown(tails.markdown()))

# %% [markdown]
# ## What this run found
# One line per claim and model, from `findings.json` of this run.

# %%
findings = pd.DataFrame(rec.findings())
findings[["claim", "held"]]
