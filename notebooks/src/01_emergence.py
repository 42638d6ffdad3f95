# %% [markdown]
# # 01 · Outliers emerge during pre-training
#
# **Claim tested (Kovaleva et al., 2021, finding 1):** the outlier LayerNorm dimensions appear
# early in pre-training. In the authors' BERT-medium the output-LayerNorm weights and biases
# diverged from their initialisation after roughly 50k steps, about when training loss and
# evaluation perplexity started to improve.
#
# Offline default: `bbmini`, this project's own post-LN BERT (4 layers, hidden 256) pre-trained
# from scratch on the offline corpora (movie reviews, SNLI sentences, King James Bible) with this
# package's trainer; the run recorded every LayerNorm at each log point, and the ablation effect
# at each snapshot. Paper profile: any list of checkpoints (e.g. MultiBERTs intermediate
# checkpoints `google/multiberts-seed_0-step_{k}k`), read into the same structures. Then a short
# live pre-training in this run lets the reader watch the parameters move. Every number below
# is computed from these records in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/01_emergence"
device = "auto"
model_name = "bbmini"
checkpoints = []
checkpoint_steps = []
roles = ["block_output"]
k = 3.0
middle_layer = 2
live_seconds = 90.0
live_texts = 20000
live_hidden = 128
live_layers = 4
live_draws = 20
seed = 0

# %%
from IPython.display import Markdown, display

import bertbusters_nb as bb
from bertbusters_nb.analysis import emergence
from bertbusters_nb.analysis.trajectory import ablation_trajectory
from bertbusters_nb.reporting import claims, plots

rec = bb.RunRecorder(out_dir, config=bb.notebook_parameters(globals()))
record = emergence.load_record(model_name, checkpoints, checkpoint_steps)
record.describe()

# %% [markdown]
# ## Losses over training
# Training and held-out MLM loss on the same axis; the dashed line is the unigram entropy of the
# same tokenizer on the same text (the loss of a model that ignores context).

# %%
fig = plots.loss_curves(record.log, plateau=record.plateau, title=f"{record.name}: MLM loss over pre-training")
rec.figure(fig, "losses")
breakout = emergence.loss_breakout_step(record.log, record.plateau) if record.plateau is not None else None
print("eval loss 1 nat below the unigram entropy (off the context-free plateau) at step:", breakout)

# %% [markdown]
# ## A middle layer's LayerNorm over training (the paper's figure)

# %%
snapshots = emergence.middle_layer_snapshots(record.trajectory, middle_layer, roles[0])
fig = plots.parameters_over_steps(snapshots, title=f"{record.name}: {roles[0]} LayerNorm of layer {middle_layer}")
rec.figure(fig, "middle_layer_over_steps")

# %% [markdown]
# Each panel is one checkpoint: weight (top) and bias (bottom) over all dims. Outlier dims show as
# spikes that grow out of the initialisation (weight 1, bias 0).

# %% [markdown]
# ## Outlier z-scores over steps, and when each dim first stands out in most layers

# %%
flags = emergence.flags_over_steps(record.trajectory, roles, k)
final_dims = emergence.final_outlier_dims(flags)
emerged = emergence.emergence_steps(flags, final_dims)
rec.table(flags[flags.dim.isin(final_dims)], "flags_over_steps")
rec.table(emerged, "emergence_steps")
fig = plots.plot_flags_over_steps(
    flags, final_dims, breakout=breakout, title=f"{record.name}: sites beyond {k:g} sigma"
)
rec.figure(fig, "flags_over_steps")
display(Markdown(claims.published_dims_note(checkpoints[-1] if checkpoints else model_name, final_dims)))
emerged

# %%
early = claims.emerges_early(emerged, record.trajectory.steps[-1], breakout, record.plateau)
rec.finding(*early)
display(Markdown(early.sentence))

# %% [markdown]
# ## Does disabling them matter at each checkpoint?
# The outlier dims zeroed in every block-output LayerNorm vs 20 random draws of the same count,
# at each snapshot (recorded by the pre-training run with this package's `ablation_trajectory`).

# %%
ablation = record.ablation
rec.table(ablation, "ablation_over_steps")
fig = plots.ablation_over_steps(ablation, title=f"{record.name}: MLM loss rise when the outlier dims are zeroed")
rec.figure(fig, "ablation_over_steps")
at_the_end = claims.matters_at_the_end(ablation)
rec.finding(*at_the_end)
display(Markdown(at_the_end.sentence))

# %% [markdown]
# ## Live: a short pre-training in this run
# A small BERT (`live_hidden`, `live_layers`) trained for `live_seconds` on a sample of the
# corpora, on this machine, with the same trainer. On two CPU cores a few minutes stay on the
# plateau (a previous measurement put the breakout at ~20 minutes for hidden 128); the point here
# is to watch the LayerNorm parameters move, and to see whether any dim stands out yet.

# %%
live = emergence.live_pretraining(
    f"{out_dir}/live",
    live_seconds,
    n_texts=live_texts,
    hidden=live_hidden,
    layers=live_layers,
    seed=seed,
    device=device,
)
live_record = emergence.load_record(str(live.out_dir))
fig = plots.loss_curves(live_record.log, plateau=live_record.plateau, title="live run: MLM loss")
rec.figure(fig, "live_losses")
print(f"{live.step} steps, {live.tokens_per_s:,.0f} tokens/s")

# %%
live_flags = emergence.flags_over_steps(live_record.trajectory, roles, k)
live_top = emergence.final_outlier_dims(live_flags, fallback=2)
fig = plots.plot_flags_over_steps(live_flags, live_top, title="live run: sites beyond the threshold")
rec.figure(fig, "live_flags_over_steps")
live_ablation = ablation_trajectory(live.out_dir, dims=live_top, draws=live_draws, max_sequences=64, device=device)
rec.table(live_ablation, "live_ablation_over_steps")
fig = plots.ablation_over_steps(live_ablation, title="live run: loss rise when the top LayerNorm dims are zeroed")
rec.figure(fig, "live_ablation_over_steps")
live_text = claims.emergence_live_summary(live_record, live_flags, live_top, live_ablation)
display(Markdown(live_text))

# %% [markdown]
# ## What this run found

# %%
display(Markdown(claims.emergence_summary(early, at_the_end, live_text)))
