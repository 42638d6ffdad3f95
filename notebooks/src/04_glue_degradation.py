# %% [markdown]
# # 04 · Disabling outlier dimensions after fine-tuning breaks downstream tasks
#
# **Claim tested (Kovaleva et al., 2021, finding 4):** the LayerNorm outlier dimensions of a
# pre-trained encoder still matter after it is fine-tuned on a task. Setting the LayerNorm
# weight and bias at those few dimensions to zero in every layer of the fine-tuned model
# drops its task score sharply (the follow-up reports a ~30% relative drop on MNLI for
# bert-base, 48 parameters zeroed), while zeroing as many random dimensions barely moves it.
# The blog version also disables every dimension alone and plots the score against the
# disabled dimension.
#
# Here each backbone is fine-tuned on each task with HF `Trainer` (cached by model, task,
# seed and settings), then evaluated intact; with each outlier dim disabled alone, all
# together, and all together per layer range; with 20+ random draws of as many dims; and in
# the single-dim scan. The outlier dims are those of the pre-trained backbone; the notebook
# also shows whether fine-tuning keeps them. Offline, the tasks are stand-ins: Rotten
# Tomatoes sentences (`rt`, for SST-2) and SNLI pairs (`snli`, for MNLI). Every number below
# is computed in this run.

# %% tags=["parameters"]
profile = "offline"
out_dir = "figures/offline/04_glue_degradation"
device = "auto"
backbones = ["minilm", "bbmini"]
tasks = ["rt", "snli"]
glue_source = "nyu-mll/glue"
cache_dir = None
epochs = 2.0
learning_rate = 0.0001
backbone_overrides = {"bbmini": {"learning_rate": 0.0003, "max_train_samples": 3000}}
batch_size = 32
max_length = 64
weight_decay = 0.01
warmup_ratio = 0.1
seed = 42
max_train_samples = 2000
max_eval_samples = 300
max_steps = None
group_by_length = True
roles = ["block_output"]
k = 3.0
min_share = 0.5
layer_parts = 3
random_draws = 20
random_seed = 0
scan_tasks = ["rt"]
scan_method = "screen"
scan_samples = 0
scan_every = 1

# %%
from IPython.display import Markdown, display

from bertbusters_nb import RunRecorder, notebook_parameters
from bertbusters_nb.evaluation.tasks import describe_tasks
from bertbusters_nb.finetuning import FinetuneSettings
from bertbusters_nb.reporting import claims
from bertbusters_nb.reporting.plots import downstream as downstream_plots
from bertbusters_nb.studies import downstream

rec = RunRecorder(out_dir, config=notebook_parameters(globals()))
settings = FinetuneSettings(
    epochs=epochs,
    learning_rate=learning_rate,
    batch_size=batch_size,
    max_length=max_length,
    weight_decay=weight_decay,
    warmup_ratio=warmup_ratio,
    seed=seed,
    max_train_samples=max_train_samples,
    max_eval_samples=max_eval_samples,
    max_steps=max_steps,
    group_by_length=group_by_length,
)
usable, missing = downstream.available_backbones(backbones)
study = downstream.DownstreamStudy(
    usable,
    tasks,
    settings,
    roles=roles,
    k=k,
    min_share=min_share,
    device=device,
    cache_dir=cache_dir,
    glue_source=glue_source,
    overrides=backbone_overrides,
)
display(Markdown(claims.backbones_note(usable, missing)))
describe_tasks(tasks)

# %% [markdown]
# The tasks, with their text columns in the Hugging Face `task_to_keys` style, class count,
# headline metric and dev split(s). Backbones that are not built yet are named above and left out.

# %% [markdown]
# ## 1 · The fine-tuned baseline
# Each backbone fine-tuned on each task (or reused from the cache when the same model, task,
# seed and settings were trained before), then evaluated intact on the dev set.

# %%
baseline = study.finetune()
rec.table(baseline, "baseline")
rec.figure(downstream_plots.baseline_bars(baseline), "baseline")
baseline[
    [
        "backbone",
        "task",
        "split",
        "metric",
        "value",
        "chance",
        "train_examples",
        "train_steps",
        "train_seconds",
        "reused_cache",
    ]
]

# %% [markdown]
# The bars are the dev scores of the fine-tuned models; the black ticks are what always
# answering the most frequent class scores. A fine-tune that does not clear that tick is too
# weak for the ablations below to mean much.

# %% [markdown]
# ## 2 · Do the outlier dims survive fine-tuning?
# The project's one rule (`bb.detect`: LayerNorm parameters and hidden-state magnitudes) on the pre-trained
# backbone (`before`: the dims every ablation below disables) and on each fine-tuned model (`after`). Beside
# them, labelled as the different criterion they are, the block-output parameters alone (`params_before`,
# `params_after`: weight or bias beyond `k` sigma in most block-output layers); the figure plots that
# criterion's z-scores per dim.

# %%
outliers = study.outliers()
outlier_sets = study.outlier_sets()
rec.table(outliers, "outliers_before_after")
rec.table(outlier_sets, "outlier_sets")
rec.figure(downstream_plots.outliers_before_after(outliers), "outliers_before_after")
display(claims.published_dims_table(dict(zip(outlier_sets.backbone, outlier_sets.before.str.split()))))
outlier_sets

# %% [markdown]
# Each point is a dim that the block-output parameter criterion flagged somewhere; a point on the dotted
# diagonal kept its outlier strength through fine-tuning. The dims disabled below are the rule's on the
# pre-trained backbone (`before`); the table above sets them beside the published dims where there are some.

# %% [markdown]
# ## 3 · Disabling the outlier dims after fine-tuning
# Weight and bias set to 0 at each outlier dim alone, at all of them together (every layer),
# and at all of them in one layer range at a time.

# %%
ablations = study.ablate(layer_parts=layer_parts)
rec.table(ablations, "ablations")
ablations[["backbone", "task", "split", "condition", "dims", "layers", "n_sites", "value", "relative_change"]]

# %% [markdown]
# One row per condition: `value` is the headline metric, `relative_change` the change against
# the intact fine-tuned model.

# %% [markdown]
# ## 4 · Against random dimensions
# The same number of random dims (outliers excluded), disabled in every layer, drawn
# `random_draws` times.

# %%
random = study.random_baseline(draws=random_draws, seed=random_seed)
rec.table(random, "random_draws")
rec.figure(downstream_plots.conditions_vs_random(ablations, random), "conditions_vs_random")

# %% [markdown]
# Red bars are the outlier conditions; the grey box and points on the right of each panel
# are the random draws, so the spread of a random ablation is visible next to the outlier one.

# %%
summary = study.summary()
rec.table(summary, "summary")
rec.figure(downstream_plots.relative_change_strip(summary, random), "relative_change_vs_random")
display(Markdown(claims.downstream_versus_random(summary, random)))
display(Markdown(claims.published_drops_note(summary)))

# %% [markdown]
# Relative change of the dev score per pair: each grey point is one random draw, the red
# diamond the outlier dims; the text gives where the outlier result falls among the draws.

# %% [markdown]
# ## 5 · Every dim disabled alone (the paper's scan)
# Each hidden dim disabled alone in every layer, for the tasks in `scan_tasks`, on `scan_samples` dev examples
# (0: every dev example the ablations use). `scan_method = "screen"` (the default here) estimates every dim's effect
# on the dev loss at once from one forward and one backward pass (`bertbusters_nb.evaluation.screen`), then
# evaluates exactly, with every metric, the first 16 dims of its check order and the outlier dims; estimated rows
# have a loss but no score, and only exact rows are ranked. Notebook 02 checks the detection rule against the
# exhaustive scan, and `benchmarks/RESULTS.md` measures how often the screen finds the exhaustive scan's top dims.
# `scan_method = "exact"` (the paper profile) is one dev pass per dim (`scan_every` > 1 scans every n-th dim plus
# the outlier dims: a quick look, not the paper's scan).

# %%
scan = study.scan(
    tasks=scan_tasks, max_samples=scan_samples, every=scan_every, checkpoint_dir=out_dir, method=scan_method
)
rec.table(scan, "scan")
rec.figure(downstream_plots.scan_grid(scan), "scan")

# %% [markdown]
# The x axis is the disabled dimension; top: the score (dashed: the intact model on the same
# examples), bottom: the dev loss, which also moves when no prediction flips. Red points are
# the outlier dims; in a screened scan, grey is estimated and blue points are evaluated exactly.

# %% [markdown]
# ## 6 · One table per task and backbone

# %%
summary = study.summary()
rec.table(summary, "summary")
summary

# %% [markdown]
# `intact` vs `outliers_disabled` (all outlier dims, every layer) vs the random draws
# (`random_mean`, `random_std`, `random_min`); `worse_than_every_draw` is the verdict per pair;
# the scan columns give the most damaging single dim (largest rise in dev loss) and the damage
# ranks of the outlier dims (1 = most damaging).

# %%
findings = claims.downstream_findings(summary, outlier_sets)
for f in findings:
    rec.finding(*f)
display(Markdown(claims.findings_markdown(findings)))

# %% [markdown]
# ## What this run found

# %%
display(Markdown(claims.downstream_describe(summary)))
