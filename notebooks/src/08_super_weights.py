# %% [markdown]
# # 08 · Where an outlier dim comes from, down to single weights
#
# **Claims tested:**
# - Yu et al. (2024, "The Super Weight in Large Language Models"): a single scalar `W[j, k]` of an FFN output
#   projection writes a **massive activation** into hidden dim `j` (a large input `x_k` times it); zeroing that one
#   scalar destroys the model, far beyond zeroing random scalars or the largest-|w| scalars of the same matrix;
#   restoring the super activation alone (the weight still zeroed) recovers most of the damage.
# - Sun et al. (2024): massive activations sit in a few fixed dims and act as attention sinks.
# - The chain to the paper's outlier dims: are the massive-activation dims the dims the project's one detection
#   rule names? A post-LN model damps them *inside* its LayerNorm, so its input shows them and its output not.
#
# The package finds each block's residual writer (Llama `down_proj`, BERT `output.dense`, GPT-2 `c_proj`, ...) by
# tracing, measures every writer's largest output and input channel over several prompts against the median
# channel, ranks the scalars by their contribution `|x_k * W[j, k]|` to each spike, and verifies each candidate by
# zeroing it (the project's one edit context, restored bit-exactly) against `controls` random and `controls`
# largest-|w| scalars of the same matrix (a verified scalar beats all of them; a candidate is rejected at the first
# control that `control_factor` times matches it, so `controls_measured` can be fewer for a rejected one). Several
# spikes or none are normal answers. Every number below is computed in this run.
#
# The smoke profile runs on `planted:llama` and `planted:bert` (`bertbusters_nb.model.planted`): tiny random
# models, a pre-LN decoder and a post-LN encoder, each with one super weight planted by the package (an FFN channel
# lifted by a bias, and one scalar of the output projection that writes it into one hidden dim). A random model has
# no super weight of its own, so there the finder must name the planted scalar, and the note after each verdict
# says whether it did; what the chain shows there is what a super weight looks like, not a finding about a model.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/08_super_weights"
device = "auto"
device_map = ""
models = ["smollm2", "minilm", "bbmini"]
corpus = "movie_reviews"
extra_prompts = ["Apple Inc. is a worldwide tech company."]
n_prompts = 8
n_eval = 8
max_length = 32
batch_size = 8
spike_ratio = 50.0
spikes_per_layer = 2
candidates = 2
min_share = 0.2
controls = 20
control_factor = 5.0
min_effect = 0.01
draws = 3
sink_texts = 4
similarity_pairs = 200
seed = 0

# %%
import pandas as pd
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.analysis import super_weights as sw
from bertbusters_nb.analysis.similarity import cosine_shares, separation_table
from bertbusters_nb.data import load_texts, sample_texts
from bertbusters_nb.evaluation.conditions import random_dims
from bertbusters_nb.evaluation.embeddings import sentence_embeddings, snli_pairs
from bertbusters_nb.model.writers import writers_table
from bertbusters_nb.reporting import claims
from bertbusters_nb.reporting.plots.super_weights import chain_figure
from bertbusters_nb.studies import super_weights as chain_study

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
held_out = sample_texts(load_texts(corpus, split="heldout", min_words=20), n_prompts + n_eval, seed=seed)
prompts, eval_texts = list(extra_prompts) + held_out[:n_prompts], held_out[n_prompts:]
rule = sw.SuperWeightRule(spike_ratio, spikes_per_layer, candidates, min_share, controls, control_factor, min_effect)
chains = [
    chain_study.load_chain(
        name, prompts, eval_texts, rule, device=device, device_map=device_map or None,
        max_length=max_length, batch_size=batch_size, seed=seed,
    )
    for name in models
]  # fmt: skip
writers = pd.concat([writers_table(c.report.writers).assign(model=c.name) for c in chains], ignore_index=True)
rec.table(writers, "residual_writers")
writers.groupby("model", sort=False).head(2)

# %% [markdown]
# ## 1 · Spikes: which writer puts a massive value into which dim
# Per layer, each writer's largest output channels (max |y| over the prompts' real tokens, over the layer's median
# channel), its largest input channel, and the stream norm's input and output at that dim. A channel at least
# `spike_ratio` times the median spikes.

# %%
massive = pd.concat([chain_study.massive_dims(c) for c in chains], ignore_index=True)
rec.table(massive, "spikes")
display(massive[massive.spike][["model", "layer", "channel", "out_max", "out_ratio", "in_channel", "in_max",
                                "norm_in_ratio", "norm_out_ratio", "rule_dim"]])  # fmt: skip
for c in chains:
    for finding in (
        claims.massive_dims_are_rule_dims(c.name, massive[massive.model == c.name], c.dims),
        claims.norm_damps_massive_activation(c.name, massive[massive.model == c.name]),
    ):
        rec.finding(*finding)
        display(Markdown(finding.markdown()))

# %% [markdown]
# ## 2 · The scalars behind each spike, verified by zeroing them
# Candidates: the scalars with the largest contribution `|x_k * W[j, k]|` at the spiking token. Each is zeroed alone
# and the model's own objective measured (causal-LM or masked-LM loss; for MiniLM, which has no LM head, 1 - cosine
# of its sentence embeddings to the intact ones), against the controls of the same matrix.

# %%
verdicts = pd.concat([c.report.verdicts.assign(model=c.name) for c in chains], ignore_index=True)
rec.table(verdicts, "candidates_verified")
found = pd.concat([sw.super_weight_table(c.report, c.name) for c in chains], ignore_index=True)
rec.table(found, "super_weights")
display(found)
for c in chains:
    finding = claims.super_weights_found(
        c.name, found[found.model == c.name], c.report.spikes, verdicts[verdicts.model == c.name]
    )
    rec.finding(*finding)
    display(
        Markdown(finding.markdown() + " " + claims.published_super_weights_note(c.name, found[found.model == c.name]))
    )

# %% [markdown]
# ## 3 · The effect: super weight zeroed, outlier dims disabled, both, against random draws
# The rule's dims are disabled on the model's ablation roles (as in notebooks 00-07); random dims are `draws` sets of
# as many dims; random scalars are the verification's controls.

# %%
effects = pd.concat([chain_study.chain_effects(c, draws, seed) for c in chains], ignore_index=True)
rec.table(effects, "effects")
display(effects.groupby(["model", "group"], sort=False).delta.agg(["mean", "min", "max", "count"]))
for c in chains:
    fig = chain_figure(massive[massive.model == c.name], effects[effects.model == c.name], c.name)
    rec.figure(fig, f"chain_{c.name}".replace(":", "-"))

# %% [markdown]
# ## 4 · Restoring the super activation alone (Yu et al.'s check), and attention sinks
# With the super weight zeroed, its contribution is added back only at the tokens where it is massive (at least
# `spike_ratio` times the writer's median channel); then the mean attention mass on sink tokens (special tokens,
# delimiters, the first token) per layer, intact and with the super weight zeroed.

# %%
restored = pd.concat([chain_study.restoration(c) for c in chains], ignore_index=True)
rec.table(restored, "restoration")
sink_table = pd.concat(
    [chain_study.sink_change(c, eval_texts[:sink_texts], max_length, batch_size) for c in chains if sink_texts],
    ignore_index=True,
)
rec.table(sink_table, "sink_mass")
for c in chains:
    finding = claims.restoring_super_activation_recovers(c.name, restored[restored.model == c.name])
    rec.finding(*finding)
    display(Markdown(finding.markdown()))
sink_table

# %% [markdown]
# ## 5 · What the chain breaks beyond loss: embedding similarity (Timkey & van Schijndel 2021)
# For the models scored by their sentence embeddings (MiniLM): each dim's share of the mean cosine over
# `similarity_pairs` SNLI pairs, and how well the cosine separates entailment from contradiction (ROC AUC, the
# probe notebook 03 uses) raw and with dims standardised: all, the rule's dims alone, or `draws` random sets alone.

# %%
embedders = [c for c in chains if c.kind == "embedding"] if similarity_pairs else []
premises, hypotheses, positive = snli_pairs(similarity_pairs, seed) if embedders else ([], [], [])
similarity = []
for c in embedders:
    a = sentence_embeddings(c.model, c.tokenizer, premises, batch_size, max_length)
    b = sentence_embeddings(c.model, c.tokenizer, hypotheses, batch_size, max_length)
    shares = cosine_shares(a, b).assign(model=c.name)
    separation = separation_table(
        a, b, positive, c.dims, random_dims(a.shape[1], len(c.dims), draws, exclude=c.dims, seed=seed)
    ).assign(model=c.name)
    rec.table(shares, f"cosine_shares_{c.name}")
    rec.table(separation, f"snli_separation_{c.name}")
    finding = claims.rogue_dims_dominate_similarity(c.name, shares, separation, c.dims)
    rec.finding(*finding)
    display(shares.head(5), separation, Markdown(finding.markdown()))

# %% [markdown]
# ## Summary
# One row per model: the verified super weights, the spiking dims and layers, the rule's dims, and the objective
# change with the super weight zeroed against the largest random-scalar change.

# %%
summary = pd.DataFrame(
    [chain_study.summary_row(c, effects[effects.model == c.name], restored[restored.model == c.name]) for c in chains]
)
rec.table(summary, "summary")
summary
