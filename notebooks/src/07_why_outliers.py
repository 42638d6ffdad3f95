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
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.reporting import claims, plots
from bertbusters_nb.studies import why

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
texts = sample_texts(load_texts(corpus, split="heldout", min_words=20), n_texts, seed=seed)
subjects = why.load_subjects(
    models,
    k=k,
    device=device,
    corpora=count_corpora,
    proxy_max_texts=proxy_max_texts or None,
    exact_max_texts=exact_max_texts or None,
)
settings = why.WhySettings(
    k=k,
    max_length=max_length,
    batch_size=batch_size,
    min_occurrences=min_occurrences,
    n_boot=n_boot,
    top_share=top_share,
    attention_texts=attention_texts,
    quant_texts=quant_texts,
    random_draws=random_draws,
    bits=bits,
    seed=seed,
)
result = why.run_study(subjects, texts, settings)
rec.tables(result.tables())
display(claims.published_dims_table(dict(zip(result.overview.model, result.overview["outlier dims"]))))
result.overview

# %% [markdown]
# `why.run_study` measures everything below on every model (tidy tables, one `model` column each); the
# sections plot them and state what they show. The table above sets the dims beside the published ones where
# there are some.

# %% [markdown]
# ## 1 · Token frequency against outlier magnitude
# Per token type seen at least `min_occurrences` times in the held-out texts: its count in the
# pre-training corpus (log) against the mean |h| of the strongest outlier dim on it, at every layer.
# Pearson and Spearman correlations with 95% bootstrap intervals over token types, and partial
# correlations that control for the type's mean position and for special tokens.

# %%
rec.figure(plots.correlation_by_layer(result.correlations), "frequency_correlation_by_layer")
rec.figure(plots.frequency_scatter(result.scatter), "frequency_scatter")
frequency_findings = rec.record(claims.frequency_findings(result))
display(Markdown(claims.findings_markdown(frequency_findings)))

# %% [markdown]
# ### Over pre-training (models trained by this project)
# Does the correlation appear when the outlier does? That needs hidden states at intermediate steps.

# %%
over_training = rec.record(claims.over_training_findings(result))
display(result.emergence, Markdown(claims.findings_markdown(over_training)))

# %% [markdown]
# ## 2 · Which tokens carry the largest outlier activations
# The top `top_share` of |h| at the strongest outlier dim (all layers after the embeddings): the share on
# special tokens, delimiters (`. , ; : ! ?`) and the first token, against their share of all tokens.

# %%
on_special = rec.record(claims.top_token_findings(result))
display(result.top_tokens, Markdown(claims.findings_markdown(on_special)))

# %% [markdown]
# ## 3 · Attention sinks, and what disabling the outlier dims does to them
# Per head, the attention mass of real query tokens on special tokens, delimiters and the first token
# (their union: the sink score), beside those tokens' share of the keys. Then the same with the outlier
# dims disabled, against `random_draws` random sets of as many dims.

# %%
rec.figure(plots.sink_heatmaps(result.sinks), "attention_sinks")
sinking = rec.record(claims.sink_findings(result))
display(Markdown(claims.findings_markdown(sinking)))

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
rec.figure(plots.quantization_bars(result.quantization), "quantization")
rescued = rec.record(claims.quantization_findings(result))
display(Markdown(claims.findings_markdown(rescued)))

# %% [markdown]
# ### Bondarenko's metrics: kurtosis and max infinity norm per layer
# With all dims, without the outlier dims, and without as many random dims (same forwards).

# %%
rec.figure(plots.kurtosis_by_layer(result.kurtosis), "kurtosis")
tails = rec.record(claims.kurtosis_findings(result))
display(Markdown(claims.findings_markdown(tails)))

# %% [markdown]
# ## What this run found
# One line per claim and model: held, beyond every random draw but small, did not hold, or inconclusive.

# %%
claims.findings_table([*frequency_findings, *over_training, *on_special, *sinking, *rescued, *tails])
