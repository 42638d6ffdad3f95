"""The public API names what it takes: every public function's ``model`` and ``tokenizer`` are typed."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bertbusters_nb"


def test_every_public_model_and_tokenizer_argument_is_typed():
    untyped = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg in ("model", "tokenizer") and arg.annotation is None:
                        untyped.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}({arg.arg})")
    assert not untyped, "type these arguments (torch.nn.Module / PreTrainedTokenizerBase):\n" + "\n".join(untyped)
