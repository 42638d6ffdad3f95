# %% [markdown]
# # 05 · Explorer: switch dimensions off yourself and watch the model break
#
# **What this notebook shows (Kovaleva et al., 2021, findings 2 and 3, hands-on):** a handful of
# LayerNorm dimensions carry a large share of what a pre-trained encoder does. Below, the
# model's strongest LayerNorm dims are toggle buttons; switch them off (weight and bias set to 0,
# or to the layer's mean) in a range of layers and in chosen norm sites, and every view updates:
# the masked-LM loss on a small fixed set of held-out reviews and its change from the intact
# model, the top guesses for the blanks of your own sentence (intact vs ablated, side by side),
# and the per-layer LayerNorm parameters with the disabled dims marked. For an encoder without an
# MLM head (the packaged MiniLM) the view shows how far sentence embeddings move instead. For a
# causal LM (`model_name = "smollm2"`) the view shows the causal-LM loss and the next tokens of your
# text, and one more row offers the model's super weights (Yu et al. 2024, notebook 08): single
# weight scalars that the package's finder verified on a few of the texts, each a toggle that sets
# it to 0 (restored exactly when switched off); where none is verified, the row says so.
# The toggle "suggest dims from the screen" (off at start) ranks every dim by the screened scan
# (`bertbusters_nb.evaluation.screen`: estimated from one backward pass, the top ones and the
# rule's dims checked exactly) and shows the most harmful as buttons that switch them off.
#
# Opened in JupyterLab the explorer is live; a headless run (papermill, the batch runner) shows a
# static view of the same state. Every number is computed in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/05_explorer"
device = "auto"
model_name = "bbmini"
corpus = "movie_reviews"
split = "heldout"
n_texts = 16
max_length = 64
sentence = "the movie was [MASK] and the acting was [MASK] ."
roles = ["block_output"]
n_top_dims = 6
top_k = 5
k = 3.0
seed = 42
debounce_s = 0.15
cpu_threads = 1

# %%
from IPython.display import HTML, Markdown, display

import bertbusters_nb as bb
from bertbusters_nb import widgets
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.reporting import claims

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
model, tokenizer = widgets.load_for_explorer(model_name, device=device)
texts = sample_texts(load_texts(corpus, split=split), n_texts, seed=seed)
bb.model.loading.model_summary(model)

# %% [markdown]
# The model is loaded with its masked-LM head when the checkpoint has one, and `n_texts` held-out
# texts form the fixed eval set (15% of their tokens masked once, with a fixed seed).

# %%
explorer = widgets.Explorer(
    model,
    tokenizer,
    texts,
    sentence=sentence,
    roles=roles,
    n_top_dims=n_top_dims,
    top_k=top_k,
    max_length=max_length,
    k=k,
    seed=seed,
    debounce_s=debounce_s,
    cpu_threads=cpu_threads,
)
display(Markdown(claims.published_dims_note(model_name, explorer.outlier_dims)))
explorer

# %% [markdown]
# Each change is computed after `debounce_s` seconds of quiet, for the latest state only (`cpu_threads`
# torch threads while it computes: on a small shared CPU one thread is the fastest).
#
# **Try it:** switch the first dim off, then drag the left end of the layer slider to the right to
# spare the early layers, tick other site roles, or type your own sentence with `[MASK]` and press
# Enter. Switching every dim on again brings back the intact numbers exactly: each ablation runs in
# a context that restores the touched parameters on exit.

# %% [markdown]
# ## A fixed view for the record
# The model's outlier dims (3-sigma in most layers, or its two strongest candidates) switched off
# in every layer of the chosen roles: the same view the explorer shows for that state.

# %%
state = explorer.state_with(dims=explorer.outlier_dims)
view = explorer.compute_view(state)
rec.table(widgets.view_table(view), "explorer_view")
rec.figure(explorer.figure(state), "explorer_outliers_off")
display(HTML(explorer.static_html(state)))

# %% [markdown]
# Crimson bands mark the disabled dims in the layers where they are off (a cross at the value
# they are set to); the table compares the intact and the ablated model's guesses.

# %%
summary = explorer.summarize(view)
rec.finding(*summary)
display(Markdown(summary.headline()))

# %% [markdown]
# The intact loss and predictions were recomputed after all the ablations above and compared bit
# for bit with those computed at the start.
