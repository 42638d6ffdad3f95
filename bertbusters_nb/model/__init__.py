"""Layer 2, the model: loading (hub, folder, GGUF, aliases), gguf (GGUF to safetensors), sites (what a norm site
is, its roles, selecting sites), discovery (``find_norm_sites``: find the normalization sites, by dataflow over
tracing, cross-checked by naming), hooks (the one ``Trace`` context), edits (every temporary change to a model
and the one context that undoes it, ``edited``; what "disable" means), ablation (``Condition``,
``disabled_dims``), fingerprint (model identities for caches and checkpoints), architectures (coverage of
transformers' model types).

Import from the submodules: ``from bertbusters_nb.model.hooks import Trace``.
"""
