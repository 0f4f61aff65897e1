"""Modules: the router picks the document a prompt is about, and a batch of mixed adapters answers each row as
that adapter alone would."""

from seal import model as lm_ops
from seal.config import UpdateConfig
from seal.routing import BASE, Router, words_of
from seal.update import Sequence, attach_trainable_adapter, train

from conftest import FACTS

FERRY = "The Quellin ferry leaves Varrow pier at nine every morning and returns at noon."


def test_a_prompt_goes_to_the_module_holding_most_of_its_rare_words_or_to_the_base_model():
    router = Router({"clock": words_of(FACTS), "ferry": words_of(FERRY),
                     "pier": words_of("The pier of Brellick is long.")}, scaffolding=words_of("Question: Answer"))
    assert router.pick("Question: Who built the Brellick Tide Clock?") == "clock"
    assert router.pick("Question: When does the Quellin ferry leave?") == "ferry"
    assert router.pick("Question: How do I bake bread at home?") == BASE
    assert router.pick("Question: Answer") == BASE  # nothing but scaffolding
    assert Router({}, only="ferry").pick("anything at all") == "ferry"
    assert Router({}).pick("Who built the Brellick Tide Clock?") == BASE


def test_a_documents_claims_go_where_the_whole_document_goes_not_where_one_sentence_would():
    router = Router({"clock": words_of(FACTS), "ferry": words_of(FERRY)})
    town = ("The town of Ossby lies on a cold northern bay. Its fishing fleet of forty boats lands herring every "
            "spring. The Quellin ferry leaves Varrow pier at ten.")
    assert router.pick("The Quellin ferry leaves Varrow pier at") == "ferry"  # the sentence alone
    assert router.fixed_for(town).pick("The Quellin ferry leaves Varrow pier at") == BASE
    revised = FERRY.replace("nine", "ten") + " Tickets cost four crowns."
    assert router.fixed_for(revised).pick("The Quellin ferry leaves Varrow pier at") == "ferry"


def test_a_mixed_batch_answers_each_row_with_its_own_adapter(tiny_model_dir, tmp_path):
    config = UpdateConfig(rank=4, alpha=8, lr=5e-2, epochs=8)
    for name, text in (("clock", FACTS), ("ferry", FERRY)):
        lm = lm_ops.load(str(tiny_model_dir))
        attach_trainable_adapter(lm, config)
        train(lm, [Sequence(text + lm.tokenizer.eos_token)], config)
        lm.model.save_pretrained(str(tmp_path / name))
    prompts = ["The Brellick Tide Clock was built", "The Quellin ferry leaves", "Bread is baked"]
    alone = {}
    for name in ("clock", "ferry"):
        single = lm_ops.load(str(tiny_model_dir), tmp_path / name)
        alone[name] = lm_ops.generate(single, prompts, 6), lm_ops.continuation_stats(single, prompts, [" at"] * 3)
    plain = lm_ops.load(str(tiny_model_dir))
    alone[BASE] = lm_ops.generate(plain, prompts, 6), lm_ops.continuation_stats(plain, prompts, [" at"] * 3)
    assert alone["clock"][0] != alone["ferry"][0]  # the two adapters differ, or the test proves nothing

    mixed = lm_ops.load(str(tiny_model_dir))
    lm_ops.attach_modules(mixed, {"clock": tmp_path / "clock", "ferry": tmp_path / "ferry"})
    mixed.router = Router({"clock": words_of(FACTS), "ferry": words_of(FERRY)})
    picked = mixed.router.names(prompts)
    assert picked == ["clock", "ferry", BASE]
    texts, stats = lm_ops.generate(mixed, prompts, 6), lm_ops.continuation_stats(mixed, prompts, [" at"] * 3)
    for row, name in enumerate(picked):
        assert texts[row] == alone[name][0][row]
        assert abs(stats[row][0] - alone[name][1][row][0]) < 1e-4
