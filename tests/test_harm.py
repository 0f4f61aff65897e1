"""The harm probe: fitted on packaged texts, kept per store and model, and refusing what it reads as harmful."""

from dataclasses import replace

from seal import model as lm_ops
from seal.config import HarmConfig
from seal.harm import stored_probe, to_state, training_texts
from seal.learn import learn
from seal.store import Store

from test_learn import OPEN_GATE, options


def test_the_probe_is_fitted_once_and_refitted_when_what_it_learns_from_changes(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    config = HarmConfig()
    probe, new = stored_probe(None, lm, str(tiny_model_dir), config)
    assert new and len(probe.weight) == len(probe.mean) == lm.model.config.hidden_size
    kept, new = stored_probe(to_state(probe), lm, str(tiny_model_dir), config)
    assert not new and kept == probe
    _, new = stored_probe(to_state(probe), lm, str(tiny_model_dir), replace(config, layer=1))
    assert new


def test_the_probe_separates_the_texts_it_was_fitted_on(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    probe, _ = stored_probe(None, lm, str(tiny_model_dir), HarmConfig(layer=2))
    harmful, harmless = training_texts()
    assert len(harmful) >= 150 and len(harmless) >= 100
    high, low = probe.scores(lm, harmful[:40]), probe.scores(lm, harmless[:40])
    assert all(0.0 <= s <= 1.0 for s in high + low)
    assert sum(high) / len(high) > 0.5 > sum(low) / len(low)


def test_a_passage_the_probe_scores_above_the_threshold_is_refused_before_training(tmp_path, tiny_model_dir,
                                                                                   facts_file):
    store = Store(tmp_path / "home")
    strict = options(tiny_model_dir, **OPEN_GATE)
    strict.harm.max_score = 0.0  # every passage is above it
    refused = learn(store, [str(facts_file)], strict)
    assert not refused.committed and store.current_id() == "v0"
    check = refused.report["checks"][0]
    assert check["name"] == "harmful-intent" and check["detail"]["passages"][0]["score"] > 0.0
    assert store.get_state("harm_probe")  # fitted once, kept for the next document
    off = options(tiny_model_dir, **OPEN_GATE)
    off.harm.max_score = 1.0
    assert learn(store, [str(facts_file)], off).committed
