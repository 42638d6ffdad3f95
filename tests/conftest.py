"""Shared fixtures: tiny randomly initialised models of each architecture, and the packaged MiniLM."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests state their precision: every engine forward is fp32 (exact-equality and determinism tests need it,
# whatever the CPU); tests of bf16 ask for it explicitly (autocast=torch.bfloat16) or clear this variable.
os.environ.setdefault("BERTBUSTERS_FP32", "1")
# `make test` runs the suite in pytest-xdist workers (TEST_WORKERS, one per core): each worker, and every process it
# starts (notebook kernels, command lines), takes its share of the cores' threads instead of all of them, so that
# two workers never oversubscribe two cores. A plain `pytest` run keeps torch's default.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if WORKERS:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))

import pytest  # noqa: E402 (the environment above must be set before torch is imported)
import torch  # noqa: E402
import transformers as T  # noqa: E402

if WORKERS:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run first (stable order otherwise). `make test` hands the tests to the xdist workers
    with ``--dist worksteal``: each worker starts on a contiguous half and an idle worker takes the end of the
    other's queue, so with the long notebook runs at the front the last tests left to share are short ones, and
    neither worker runs a long test alone at the end (measured: one worker ran the smoke notebooks by itself for
    minutes with the default ``--dist load``)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=120)


def tiny_model(arch: str) -> torch.nn.Module:
    """A randomly initialised model of ``arch`` built offline from its config class (seeded)."""
    torch.manual_seed(0)
    builders = {
        "bert": lambda: T.BertForMaskedLM(T.BertConfig(**TINY)),
        "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**TINY)),
        "distilbert": lambda: T.DistilBertForMaskedLM(
            T.DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, vocab_size=120)
        ),
        "albert": lambda: T.AlbertForMaskedLM(T.AlbertConfig(embedding_size=16, **TINY)),
        "electra": lambda: T.ElectraForMaskedLM(T.ElectraConfig(**TINY)),
        "xlnet": lambda: T.XLNetLMHeadModel(T.XLNetConfig(d_model=32, n_layer=3, n_head=2, d_inner=64, vocab_size=120)),
        "bart": lambda: T.BartForConditionalGeneration(
            T.BartConfig(
                d_model=32,
                encoder_layers=3,
                decoder_layers=2,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                vocab_size=120,
                max_position_embeddings=64,
            )
        ),
        "gpt2": lambda: T.GPT2LMHeadModel(
            T.GPT2Config(n_embd=32, n_layer=3, n_head=2, vocab_size=120, bos_token_id=0, eos_token_id=0)
        ),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**TINY)),
    }
    return builders[arch]().eval()


@pytest.fixture(scope="session")
def minilm():
    from bertbusters_nb import load_model

    return load_model("minilm", device="cpu")


@pytest.fixture()
def one_thread():
    """One torch thread for the test: tiny models run far faster than on two busy cores, and a forked child
    never touches a thread pool. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT encoder (hidden 32) with the bert-base vocabulary, saved as a folder."""
    from bertbusters_nb.data import assets

    tokenizer = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
    torch.manual_seed(0)
    config = T.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    T.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
