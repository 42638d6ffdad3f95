"""Layer 2, the model: loading (hub, folder, GGUF, aliases), gguf (GGUF to safetensors), norms (find the
normalization sites), hooks (the one ``Trace`` context), ablation (``Condition`` and the one "disable"),
fingerprint (model identities for caches and checkpoints), architectures (coverage of transformers' model types).

Import from the submodules: ``from bertbusters_nb.model.hooks import Trace``.
"""
