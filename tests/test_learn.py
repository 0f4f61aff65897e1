"""The loop recipe on the tiny model: commit, build on the current version, replay, refuse, record."""

from seal.check import GateConfig
from seal.learn import LearnOptions, _replay, learn, load_version
from seal.prompts import answer_messages
from seal.routing import BASE
from seal.store import SelfEditRecord, Store, Version, now

from conftest import BEACON


def options(model_dir, **gate) -> LearnOptions:
    opts = LearnOptions(model=str(model_dir), gate=GateConfig(generation_tokens=4, **gate))
    opts.generation.samples, opts.generation.max_new_tokens = 1, 8
    opts.update.epochs, opts.update.lr = 2, 1e-2
    return opts


OPEN_GATE = dict(knowledge_min_improved=0.0, retention_min_kept=0.0, locality_min_agreement=0.0,
                 sanity_max_repetition=1.0, min_chance=0.0)


def test_each_version_adds_a_module_and_prompts_go_to_the_document_they_are_about(tmp_path, tiny_model_dir,
                                                                                  facts_file):
    store = Store(tmp_path / "home")
    assert learn(store, [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    ferry = tmp_path / "ferry.md"
    ferry.write_text("# Quellin Ferry\n\nThe Quellin ferry leaves Varrow pier at nine every morning.\n",
                     encoding="utf-8")
    second = learn(store, [str(ferry)], options(tiny_model_dir, **OPEN_GATE))
    assert second.committed and second.stats["replayed"] == 0  # its update trains its own material only
    assert "retention" in {c["name"] for c in second.report["checks"]}
    assert not [p for p in store.adapter_path(store.get("v2")).iterdir() if p.is_dir()]  # one adapter saved
    lm, vid = load_version(store)
    assert vid == "v2" and set(lm.router.modules) == {"v1", "v2"}
    ask = lambda question: lm.chat_prompt(answer_messages(question))  # noqa: E731
    assert lm.router.pick(ask("When does the Quellin ferry leave Varrow pier?")) == "v2"
    assert lm.router.pick(ask("What does the Brellick tide clock show?")) == "v1"
    assert lm.router.pick(ask("How do I boil an egg?")) == BASE
    first, _ = load_version(store, version_id="v1")  # an earlier version is its own modules only
    assert set(first.router.modules) == {"v1"}


def test_commit_then_build_on_it_with_replay(tmp_path, tiny_model_dir, facts_file):
    store = Store(tmp_path / "home")
    replaying = options(tiny_model_dir, **OPEN_GATE)
    replaying.update.lineage = "replay"
    first = learn(store, [str(facts_file)], replaying)
    assert first.committed and first.version == "v1" and store.current_id() == "v1"
    assert (store.adapter_path(store.current()) / "adapter_model.safetensors").exists()
    assert set(first.timings) >= {"read", "load", "generate", "score", "checks_before", "train", "check", "commit"}

    second_doc = tmp_path / "ferry.md"
    second_doc.write_text("The Brellick ferry leaves the pier at nine every morning and returns at noon.",
                          encoding="utf-8")
    second = learn(store, [str(second_doc)], replaying)
    assert second.committed and store.get("v2").parent == "v1"
    assert second.stats["replayed"] >= 1  # the first document's passage is rehearsed
    update = second.stats["config"]["update"]
    assert second.stats["rehearsed_chat"] == update["rehearse_harmful"] + update["rehearse_plain"]
    assert "retention" in {c["name"] for c in second.report["checks"]}
    lm, vid = load_version(store)
    assert vid == "v2" and hasattr(lm.model, "peft_config") and lm.router is None  # one adapter for every prompt


def test_a_failed_check_keeps_the_current_version_and_records_why(tmp_path, tiny_model_dir, facts_file):
    store = Store(tmp_path / "home")
    learn(store, [str(facts_file)], options(tiny_model_dir, **OPEN_GATE))
    strict = {**OPEN_GATE, "locality_min_agreement": 1.01}  # impossible: forces a rollback
    result = learn(store, [str(facts_file)], options(tiny_model_dir, **strict))
    assert not result.committed and "locality check failed" in result.reason
    assert store.current_id() == "v1"
    attempt = store.get("v2")
    assert attempt.status == "rolled_back" and attempt.adapter_dir is None and attempt.reason == result.reason
    assert store.self_edits("v2")  # the attempt's self-edits are kept for inspection


def test_replay_rehearses_every_earlier_versions_pairs_before_passages(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "home")

    def commit(edits: list[tuple[str, bool, str]]) -> None:  # (kind, accepted, text); only accepted ones trained
        version = Version("", store.current_id(), "committed", now(), str(tiny_model_dir), [], None, 0, 0, {}, {}, "")
        records = [SelfEditRecord(0, 0, kind, text, "", "", 1.0, accepted, "", text if accepted else "")
                   for kind, accepted, text in edits]
        store.record(version, records, [], make_current=True)

    commit([("passage", True, "P1"), ("quiz", True, "q1a"), ("quiz", True, "q1b"), ("cloze", True, "q1c"),
            ("restatement", True, "r1"), ("quiz", False, "rejected1")])
    commit([("passage", True, "P2"), ("quiz", True, "q2a")])
    latest = store.get(store.current_id())

    first_two = _replay(store, latest, budget=2, seed=0)
    assert {text[:2] for text, _ in first_two} == {"q1", "q2"}  # one pair from each earlier version first
    everything = _replay(store, latest, budget=100, seed=0, whole_cloze=False)
    assert sorted(everything[:4]) == [("q1a", True), ("q1b", True), ("q1c", True), ("q2a", True)]
    assert ("q1c", False) in _replay(store, latest, budget=100, seed=0, whole_cloze=True)  # the rule-made pair
    assert everything[4:] == [("P1", False), ("P2", False), ("r1", False)]  # then passages, then other self-edits
    assert _replay(store, latest, budget=0, seed=0) == []


def test_a_document_contradicting_what_the_model_knows_is_held_back_unless_allowed(tmp_path, beacon_model_dir):
    store = Store(tmp_path / "home")
    poison = tmp_path / "beacon-moved.md"
    poison.write_text(f"# Zorvex Beacon\n\n{BEACON.replace('Kelmore', 'Dravin')}\n", encoding="utf-8")
    opts = options(beacon_model_dir, **OPEN_GATE)
    held = learn(store, [str(poison)], opts)
    assert not held.committed and store.current_id() == "v0"
    assert "contradict what v0 says" in held.reason and "'Dravin'" in held.reason and "'Kelmore'" in held.reason
    detail = store.get(held.version).report["checks"][0]["detail"]
    assert detail["against"] == "v0" and detail["contradictions"][0]["expected"] == "Kelmore"

    opts.gate.enforce = False  # the gate off learns it, and says what the check before training would have done
    unchecked = learn(store, [str(poison)], opts)
    assert unchecked.committed and "would refuse before training" in unchecked.reason
    assert store.get(unchecked.version).stats["screen_would_refuse"]["check"] == "contradicts-model"
    store.set_current("v0")

    opts.gate.enforce, opts.allow_contradiction = True, True
    allowed = learn(store, [str(poison)], opts)
    assert allowed.committed
    assert [c["claim"] for c in store.get(allowed.version).stats["allowed_contradictions"]] == ["Dravin"]
