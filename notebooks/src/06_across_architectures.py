# %% [markdown]
# # 06 · Across architectures: one protocol over encoders and decoders, a real pretrained LLM included
#
# **Claim tested (Kovaleva et al., 2021, abstract):** outlier LayerNorm dimensions that disrupt the model
# when disabled are found in BERT, RoBERTa, BART, XLNet and ELECTRA, "and a similar effect in GPT-2".
#
# One protocol runs over a list of models, each analysed the same way: its normalization sites and
# where they sit (post-LN: a norm on the residual stream after each sub-layer; pre-LN: a norm in front of
# each sub-layer, the key variable), the dims the project's default rule detects, how much those dims
# dominate the hidden states and which tokens carry them, the model's own objective when they are
# disabled against 20+ random draws of as many dims, and zero vs mean replacement. The offline profile
# runs MiniLM (post-LN encoder, no head: embedding cosine), bbmini (post-LN BERT with an MLM head) and
# SmolLM2-135M (a real pretrained pre-LN decoder, from a packaged GGUF file: causal-LM loss); the paper
# profile adds the hub models. Every number below is computed in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/06_across_architectures"
device = "auto"
models = ["minilm", "bbmini", "smollm2"]
corpus = "movie_reviews"
split = "heldout"
min_words = 0
n_texts = 24
max_length = 48
batch_size = 16
activation_texts = 16
random_draws = 20
autocast = "auto"
seed = 0

# %%
import time

from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.reporting import claims
from bertbusters_nb.studies import across_models

started = time.perf_counter()
rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
texts = sample_texts(load_texts(corpus, split=split, min_words=min_words), n_texts, seed=seed)
f"{len(texts)} held-out texts, windows of at most {max_length} tokens"

# %% [markdown]
# ## The protocol, model by model
# Each model is loaded with the head its objective needs (an MLM head where the checkpoint has one, a
# causal-LM head for decoders, else the bare encoder), analysed, and released before the next one.
# An encoder-decoder (BART) is analysed per stack: its encoder's and its decoder's norms apart.

# %%
result = across_models.run_protocol(
    models,
    texts,
    random_draws=random_draws,
    max_length=max_length,
    batch_size=batch_size,
    activation_texts=activation_texts,
    device=device,
    autocast=autocast,
    seed=seed,
)
rec.table(result.table, "across_models")
rec.table(result.draws, "conditions")
rec.table(result.per_layer, "activations_per_layer")
rec.table(result.carriers, "token_carriers")
rec.table(result.sites, "sites")

# %% [markdown]
# ## Sites and norm placement
# Norm modules per role, found by type and position (not by name); `ablated` marks the roles the
# protocol disables: the block-output LayerNorm in a post-LN model, every pre-norm in a pre-LN one.

# %%
result.sites

# %% [markdown]
# ### Which site, in a pre-LN model, and the GPT-2 analogue

# %%
display(Markdown(across_models.PRE_LN_SITE_NOTE))
analogue = across_models.analogue_table(result.table)
rec.table(analogue, "pre_ln_analogue")
analogue

# %% [markdown]
# ## One table across models
# `intact`, `outliers_zero`, `outliers_mean`: the objective intact, with the detected dims zeroed, and set
# to the site's mean; `random_*`: over the random draws of as many dims (zeroed); `dims_ratio_peak`: mean |h|
# at the detected dims over the layer's median dim, at its peak layer; `top_carrier`: the token kind with the
# largest |h| there; `largest_activation_*`: the largest single activation of any layer, its dim, and the
# objective with that dim alone zeroed (a massive activation the parameter rule may miss).

# %%
summary = across_models.summary_table(result.table)
rec.table(summary, "summary")
display(claims.published_dims_table(dict(zip(result.table.model, result.table.dims.str.split()))))
summary

# %%
fig = across_models.figure(result)
rec.figure(fig, "across_models")
fig

# %% [markdown]
# ## Which tokens carry the detected dims
# Mean |h| at the detected dims per token kind, at each model's peak layer: the first token, special tokens
# (delimiters such as `[SEP]`, `</s>`), punctuation, and all other tokens.

# %%
peaks = result.table[["model", "dims_ratio_layer"]].rename(columns={"dims_ratio_layer": "layer"})
result.carriers.merge(peaks, on=["model", "layer"]).round(3)

# %% [markdown]
# ## bf16 against fp32
# The run's precision per model (bf16 autocast where the CPU pays for it, see `bertbusters_nb.device`)
# and the same two conditions recomputed in the other precision: bf16 minus fp32. `bf16_gemms` says how the bf16
# matrix products ran: natively, or (on a CPU without fast bf16) as fp32 products of the bf16 operands rounded back
# to bf16, the arithmetic of a bf16 GEMM with fp32 accumulation at a sixth of the emulated kernel's cost.

# %%
precision = across_models.precision_table(result.table)
rec.table(precision, "precision")
precision

# %% [markdown]
# ## What this run found

# %%
for f in [*claims.across_models_findings(result.table), claims.zero_vs_mean(result.table)]:
    rec.finding(*f)
display(Markdown(claims.across_models_report(result.table)))

# %%
timing = result.timing(time.perf_counter() - started)
rec.table(timing, "seconds")
timing
