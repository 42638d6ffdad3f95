"""Run by tests/test_scan_sharding.py under ``accelerate launch``: a sharded scan of a tiny BERT.

argv: parts folder, output pickle (written by process 0: the merged table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

torch.set_num_threads(1)

from shard_setup import tiny_scan_setup  # noqa: E402

from bertbusters_nb.evaluation.scan import sharded_scan  # noqa: E402

model, eval_set = tiny_scan_setup()
table = sharded_scan(model, eval_set, sys.argv[1], dims=list(range(12)), progress=False, autocast=None)
from accelerate import PartialState  # noqa: E402

if PartialState().is_main_process:
    table.attrs["world"] = PartialState().num_processes
    table.to_pickle(sys.argv[2])  # exact floats and dtypes, read back by the test
