"""The self-adaptation loop as one readable recipe: read -> screen (safety rules, contradictions, harm probe) ->
generate -> score -> update -> check -> store."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from seal import model as lm_ops
from seal.check import (Contradiction, Probe, answer_nlls, base_reference, cloze_probes, contradicted_claims, hold_out,
                        load_battery, probe_replies, qa_probes, read_probe_file, reference_key, run_gate)
from seal.config import GenerationConfig, HarmConfig, LearnOptions, UpdateConfig
from seal.documents import Document, Passage, read_documents, split_passages
from seal.errors import SealError
from seal.generate import SELF_STUDY, Candidate, resolve_strategy, write_self_edits
from seal.harm import stored_probe, to_state
from seal.prompts import answer_messages
from seal.routing import Router, lineage_modules, lineage_of, taught_words, words_of
from seal.score import (SafetyRule, Judge, Scored, contradictions, flagged, load_safety_rules, score_candidates,
                        within_budget)
from seal.store import BASE_VERSION, ProbeRecord, SelfEditRecord, Store, Version, now
from seal.update import (LINEAGES, QA_KINDS, REHEARSAL_TOKENS, Sequence, attach_trainable_adapter, chat_rehearsal,
                         reply_only, sequence_text, train)

Progress = Callable[[str, int, int, "float | None"], None]  # (stage, done, total, the step's training loss)


@dataclass
class LearnResult:
    version: str
    committed: bool
    reason: str
    kept: int
    rejected: int
    timings: dict[str, float]
    report: dict
    stats: dict
    notes: list[str] = field(default_factory=list)  # what a person should know, e.g. a passage with nothing to quiz


def _refusal(store: Store, options: LearnOptions, docs: list[Document], check: str, reason: str,
             detail: dict) -> LearnResult:
    """A document refused before any training by `check` is still recorded, with why."""
    report = {"passed": False, "checks": [{"name": check, "passed": False, "detail": detail}]}
    version = Version("", store.current_id(), "rolled_back", now(), options.model,
                      _sources(docs), None, report=report, reason=reason)
    vid = store.record(version, [], [], make_current=False)
    return LearnResult(vid, False, reason, 0, 0, {}, report, {})


def _sources(docs: list[Document]) -> list[dict]:
    return [{"source": d.source, "title": d.title, "sha256": d.sha256, "text": d.text} for d in docs]


Refusal = tuple[str, str, dict]  # the check that refused, the reason, its detail


def screen(doc: Document, rules: list[SafetyRule]) -> Refusal | None:
    """The checks a document meets before the model is even loaded: the safety rules, and no self-contradiction."""
    hits = flagged(doc.text, rules)
    if hits:
        return ("safety-rules", f"{doc.source} is flagged by the safety rules ({', '.join(hits)})",
                {"source": doc.source, "rules": hits})
    clashes = contradictions(doc.text)
    if clashes:
        return ("self-contradiction", f"{doc.source} contradicts itself: {clashes[0][0]!r} vs {clashes[0][1]!r}",
                {"source": doc.source, "contradictions": clashes})
    return None


def contradiction_refusal(conflicts: list[Contradiction], against: str) -> Refusal:
    """How a document is refused when it contradicts what version `against` confidently says."""
    first = conflicts[0]
    return ("contradicts-model",
            f"{len(conflicts)} statement(s) contradict what {against} says with confidence, e.g. {first.claim!r} "
            f"where it says {first.expected!r} ({first.confidence:.0%}); --allow-contradiction learns it anyway",
            {"against": against, "contradictions": [asdict(c) for c in conflicts]})


def probe_scores(store: Store, base: lm_ops.LM, passages: list[Passage],
                 options: LearnOptions) -> list[tuple[Passage, float]]:
    """Each passage with how strongly the harm probe reads it as asking for harm; the probe is fitted once per
    store."""
    probe, new = stored_probe(store.get_state("harm_probe"), base, options.model, options.harm)
    if new:
        store.set_state("harm_probe", to_state(probe))
    return list(zip(passages, probe.scores(base, [f"{p.title}\n{p.text}" for p in passages])))


def intent_refusal(scored: list[tuple[Passage, float]], limit: float, reader: str, override: str,
                   detail: dict | None = None) -> Refusal | None:
    """The refusal of passages whose harm score (the probe's or the intent judge's) is above `limit`, if any."""
    harmful = [(passage, score) for passage, score in scored if score > limit]
    if not harmful:
        return None
    passage, score = max(harmful, key=lambda item: item[1])
    return ("harmful-intent", f"{passage.source} reads as a request for harm to {reader} ({score:.2f} > {limit}); "
                              f"{override}",
            {**(detail or {}), "passages": [{"title": p.title, "source": p.source, "score": round(s, 4)}
                                            for p, s in harmful]})


def intent_judge(options: LearnOptions, base: lm_ops.LM) -> Judge | None:
    """The LLM judge of intent the user named (`--intent-judge`), if any."""
    return Judge(options.harm.judge, options.harm.judge_model, base) if options.harm.judge else None


def model_screen(store: Store, parent: Version, base: lm_ops.LM, passages: list[Passage], options: LearnOptions,
                 judge: Judge | None = None) -> tuple[list[Contradiction], Refusal | None]:
    """The checks the model makes of a document before training: its claims against what `parent` confidently says
    (kept with the version when allowed), then its intent by the harm probe, and by the intent judge when there is
    one. Returns the contradictions and the refusal, if any."""
    conflicts = contradictions_with(store, parent, base, passages, options)
    if conflicts and not options.allow_contradiction:
        return conflicts, contradiction_refusal(conflicts, parent.id)
    harm = options.harm
    refused = intent_refusal(probe_scores(store, base, passages, options), harm.max_score, "the model's harm probe",
                             "--harm-max-score 1 turns this check off")
    if refused or judge is None:
        return conflicts, refused
    verdicts = judge.harm([f"{p.title}\n{p.text}" for p in passages])
    return conflicts, intent_refusal(list(zip(passages, verdicts)), harm.judge_max, f"the intent judge {harm.judge}",
                                     "drop --intent-judge to learn it", {"judge": harm.judge})


def reject_harmful_self_edits(scored: list[Scored], judge: Judge, config: HarmConfig) -> None:
    """The intent judge reads every self-edit the evaluator kept: a model may write harm its document never said."""
    kept = [s for s in scored if s.accepted and s.candidate.kind != "passage"]
    for item, verdict in zip(kept, judge.harm([s.candidate.text for s in kept])):
        if verdict > config.judge_max:
            item.accepted, item.score, item.reason = False, 0.0, f"the intent judge reads harm in it ({verdict:.2f})"


def passages_of(lm: lm_ops.LM, docs: list[Document], options: LearnOptions) -> list[Passage]:
    """The documents cut into passages that fit the model's context (`--max-passages` of them at most)."""
    count = lambda text: len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [p for d in docs for p in split_passages(d, count, options.max_passage_tokens, options.max_passages)]


def _replay(store: Store, parent: Version, budget: int, seed: int,
            whole_cloze: bool = UpdateConfig.whole_cloze) -> list[Sequence]:
    """Earlier versions' training texts to rehearse: their question-answer pairs first, taken in turns from every
    earlier version (a pair is what makes a fact answerable, and each version keeps a share), then their passages,
    then their other self-edits."""
    if budget <= 0:
        return []
    rng = random.Random(seed)
    pairs_by_version, passages, others = [], [], []
    for version in store.lineage(parent.id):
        trained = [(e.kind, Sequence(e.train_text, reply_only(e.kind, whole_cloze)))
                   for e in store.self_edits(version.id) if e.accepted and e.train_text]  # not held-out probes
        pairs = [s for kind, s in trained if kind in QA_KINDS]
        rng.shuffle(pairs)
        pairs_by_version.append(pairs)
        passages += [s for kind, s in trained if kind == "passage"]
        others += [s for kind, s in trained if kind != "passage" and kind not in QA_KINDS]
    rng.shuffle(others)
    in_turns = [pairs[i] for i in range(max(map(len, pairs_by_version), default=0))
                for pairs in pairs_by_version if i < len(pairs)]
    return (in_turns + passages + others)[:budget]


def learn(store: Store, paths: list[str], options: LearnOptions, progress: Progress | None = None) -> LearnResult:
    def step(stage: str, done: int, total: int, loss: float | None = None) -> None:
        if progress:
            progress(stage, done, total, loss)

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        timings[stage] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    with store.writer(on_wait=lambda: step("wait for the store", 0, 0)):  # another learn first, then this one
        store.ensure_model(options.model)
        docs = read_documents(paths)
        rules = load_safety_rules(options.safety_rules)
        battery = load_battery(options.gate.red_team)
        resolve_strategy(options.generation)  # a bad strategy, template or policy fails before the model loads
        if options.update.lineage not in LINEAGES:
            raise SealError(f"unknown lineage {options.update.lineage!r}; use {' or '.join(LINEAGES)}")
        if options.policy:
            lm_ops.resolve_model_path(options.policy)
        user_probes = read_probe_file(options.probe_file) if options.probe_file else None
        for doc in docs:
            if len(doc.text) > options.max_passages * options.max_passage_tokens * 8:  # ~4 characters a token
                raise SealError(f"{doc.source} is too long ({len(doc.text)} characters) for --max-passages "
                                f"{options.max_passages}; split it into several documents or raise --max-passages")
            refused = screen(doc, rules)
            if refused:
                return _refusal(store, options, docs, *refused)
        lap("read")

        step("load", 0, 1)
        # The base weights, not the current version's: the new adapter is trained afresh (update.py says why).
        lm = lm_ops.load(options.model, None, options.device)
        store.ensure_model(options.model, pin=True)  # once it loads: a model that does not exist is not pinned
        parent = store.get(store.current_id())  # v0, the base model, until something is committed
        passages = passages_of(lm, docs, options)
        cloze = [cloze_probes([passage], options.gate.probes_per_passage) for passage in passages]
        if user_probes is None and not any(cloze):
            raise SealError("the document has no sentence of six or more words to check the update with; "
                            "pass --probe-file with questions and answers about it")
        lap("load")

        step("screen", 0, 1)
        intent = intent_judge(options, lm)
        conflicts, refused = model_screen(store, parent, lm, passages, options, intent)
        if refused and options.gate.enforce:
            return _refusal(store, options, docs, *refused)
        lap("screen")

        step("generate", 0, len(passages) * options.generation.samples)
        writer = lm_ops.load(options.policy, None, options.device) if options.policy else lm
        candidates, _ = write_self_edits(writer, passages, options.generation)
        lap("generate")

        step("score", 0, len(candidates))
        judge = Judge(options.scoring.judge, options.scoring.judge_model, lm) if options.scoring.judge else None
        scored = score_candidates(candidates, passages, options.scoring, rules, judge)
        if intent:
            reject_harmful_self_edits(scored, intent, options.harm)
        unsafe = [s for s in scored if s.candidate.kind == "passage" and not s.accepted]
        if unsafe:
            return _refusal(store, options, docs, "safety-rules", f"a passage is flagged: {unsafe[0].reason}",
                            {"reason": unsafe[0].reason})
        accepted, held = training_set(scored, options, probe_file=user_probes is not None)
        kept = sum(1 for c in accepted if c.kind != "passage")
        rejected = sum(1 for s in scored if not s.accepted)
        notes = quiz_notes(passages, scored, options.generation)
        if user_probes is not None:
            # The user's probes keep the likelihood test: they may ask what no self-edit covers.
            probes = qa_probes(user_probes, lm, must_answer=False)
        else:  # the held-out quiz pairs; cloze probes for a passage that has none
            quizzed = {c.passage_index for c in held}
            probes = qa_probes([(c.question, c.answer) for c in held], lm, must_answer=True) + [
                p for i, probes_of_passage in enumerate(cloze) if i not in quizzed for p in probes_of_passage]
        lap("score")

        earlier = [(Probe(p.prompt, p.answer, p.label), p.nll_before)
                   for v in store.lineage(parent.id) for p in store.probes(v.id)]
        stored = json.loads(store.get_state("reference") or "{}")
        if stored.get("key") == reference_key(battery, rules, options.gate):
            reference = stored
        else:
            reference = base_reference(lm, battery, rules, options.gate)
            store.set_state("reference", json.dumps(reference))
        nll_before = answer_nlls(lm, probes)
        replies_before = probe_replies(lm, probes, options.gate.generation_tokens)
        lap("checks_before")

        texts = [sequence_text(lm, c.kind, c.text, c.question, c.answer, whole_cloze=options.update.whole_cloze)
                 for c in accepted]
        modular = options.update.lineage == "modules"
        replayed = [] if modular else _replay(store, parent, options.update.replay, options.update.seed,
                                              options.update.whole_cloze)
        # The base model's replies to the rehearsed requests are kept per store, like the checks' reference answers.
        replies_key = f"rehearsal:{lm.name}:{REHEARSAL_TOKENS}"
        known = json.loads(store.get_state(replies_key) or "{}")
        stored_replies = len(known)
        rehearsed = chat_rehearsal(lm, options.update, known)
        if len(known) > stored_replies:
            store.set_state(replies_key, json.dumps(known))
        texts += replayed + rehearsed
        attach_trainable_adapter(lm, options.update)
        losses: list[float | None] = []

        def on_step(done: int, total: int, loss: float) -> None:
            losses.append(round(loss, 4) if math.isfinite(loss) else None)  # kept as JSON, which has no NaN
            step("train", done, total, losses[-1])

        stats = train(lm, texts, options.update, on_step=on_step)
        lap("train")

        step("check", 0, 1)
        whole = lm
        if modular:  # the new module is checked on its own; earlier versions' probes ask the whole new version
            modules = lineage_modules(store, parent)
            lm_ops.attach_modules(lm, {m.name: m.path for m in modules})
            new_words = taught_words([d.title for d in docs], [p.text for p in passages])
            whole = replace(lm, router=router_for(lm, {**{m.name: m.words for m in modules}, NEW_MODULE: new_words}))
            lm.router = Router({}, only=NEW_MODULE)
        report, nll_after, replies_after = run_gate(lm, probes, nll_before, earlier, battery, reference, rules,
                                                    options.gate, whole=whole)
        lap("check")

        train_texts = {id(c): t.text for c, t in zip(accepted, texts)}
        edits = [SelfEditRecord(s.candidate.passage_index, s.candidate.sample, s.candidate.kind, s.candidate.text,
                                s.candidate.question, s.candidate.answer, s.score, s.accepted, s.reason,
                                train_texts.get(id(s.candidate), "")) for s in scored]
        probe_records = [ProbeRecord(p.prompt, p.answer, p.label, *values)
                         for p, *values in zip(probes, nll_before, nll_after, replies_before, replies_after)]
        stats_dict = {**asdict(stats), "losses": losses, "passages": len(passages), "replayed": len(replayed),
                      "rehearsed_chat": len(rehearsed), "timings": dict(timings),  # seconds per stage, to the checks
                      # learned with --allow-contradiction (or the gate off): what it overrode, kept with the version
                      "allowed_contradictions": [asdict(c) for c in conflicts],
                      "notes": notes,
                      "config": {"generation": asdict(options.generation), "update": asdict(options.update),
                                 "policy": options.policy,
                                 "threshold": options.scoring.threshold}}
        keep = report.passed or not options.gate.enforce
        reason = "" if report.passed else f"gate off; it would refuse: {report.reason}" if keep else report.reason
        if refused:  # only reached with the gate off: what the checks before training would have refused
            stats_dict["screen_would_refuse"] = {"check": refused[0], "reason": refused[1]}
            reason = "; ".join(filter(None, [f"gate off; it would refuse before training: {refused[1]}", reason]))
        version = Version("", parent.id, "committed" if keep else "rolled_back", now(),
                          options.model, _sources(docs), None, kept, rejected, stats_dict, report.to_dict(), reason)
        if keep:
            version.adapter_dir = store.stage_adapter(
                lambda folder: lm.model.save_pretrained(str(folder), selected_adapters=[NEW_MODULE]))
        vid = store.record(version, edits, probe_records, make_current=keep)
        lap("commit")
    return LearnResult(vid, keep, version.reason, kept, rejected, timings, report.to_dict(), stats_dict, notes)


def contradictions_with(store: Store, parent: Version, base: lm_ops.LM, passages: list[Passage],
                        options: LearnOptions) -> list[Contradiction]:
    """The passages' claims that the current version (the base model before anything is learned) confidently
    completes otherwise. The current version's adapters are put on `base` for the check and taken off again: one
    copy of the weights in memory."""
    with wearing(store, base, parent):
        routed = base.router
        if routed is None:  # the base model, or a replay version's one adapter
            return contradicted_claims(base, passages, options.gate)
        found = []
        for passage in passages:  # a passage's claims go to the module it is about, or to the base model
            base.router = routed.fixed_for(f"{passage.title}\n{passage.text}")
            found += contradicted_claims(base, [passage], options.gate)
        return found


NEW_MODULE = "default"  # the adapter being trained; peft saves the adapter of this name at the folder's top


def router_for(lm: lm_ops.LM, modules: dict[str, frozenset[str]]) -> Router:
    """A router over these modules that ignores the words every question prompt has (template, instructions)."""
    return Router(modules, scaffolding=words_of(lm.chat_prompt(answer_messages("", topic="-"))))


def version_adapters(store: Store, lm: lm_ops.LM, version: Version,
                     prefix: str = "") -> tuple[dict[str, Path], Router | None]:
    """What `version` is made of: its adapters (name, with `prefix`, -> folder) and, for a version of modules, the
    router that picks one per prompt (None: its one adapter answers every prompt)."""
    if lineage_of(version) == "replay":
        return {prefix + version.id: store.adapter_path(version)}, None
    modules = lineage_modules(store, version)
    return {prefix + m.name: m.path for m in modules}, router_for(lm, {prefix + m.name: m.words for m in modules})


def wear(store: Store, lm: lm_ops.LM, version: Version) -> None:
    """Put `version`'s weights on the base model `lm`: its one adapter, or its modules and their router."""
    if version.adapter_dir is None:
        return
    adapters, router = version_adapters(store, lm, version)
    lm_ops.attach_modules(lm, adapters)
    lm.router = router


@contextmanager
def wearing(store: Store, lm: lm_ops.LM, version: Version) -> Iterator[None]:
    """`version`'s weights on the base model `lm` for a while, then taken off again: one copy of the weights in
    memory, whichever versions are asked."""
    if version.adapter_dir is None:
        yield
        return
    wear(store, lm, version)
    try:
        yield
    finally:
        lm.model = lm.model.unload()  # the LoRA layers removed, nothing merged: the base weights as they were
        lm.router = None


def training_set(scored: list[Scored], options: LearnOptions, probe_file: bool) -> tuple[list[Candidate], list[Candidate]]:
    """What the update trains on, and the quiz pairs held out of it to be the version's probes (none when the user
    gave probes, or when fewer than two could be held out). Held-out and over-budget pairs say so in their reason."""
    pairs = [s.candidate for s in scored if s.accepted and s.candidate.kind == "quiz"]
    held = [] if probe_file else hold_out(pairs, options.gate.quiz_probes)
    held = held if len(held) >= 2 else []
    for item in scored:
        if any(item.candidate is c for c in held):
            item.reason = f"held out as a knowledge probe; {item.reason}"
    accepted = [s.candidate for s in scored if s.accepted and not any(s.candidate is c for c in held)]
    if options.generation.strategy in SELF_STUDY and not options.generation.template:
        accepted = within_budget(accepted, options.generation.budget)
        for item in scored:
            if item.accepted and not any(item.candidate is c for c in accepted + held):
                item.reason = f"over the budget of {options.generation.budget} sequences; {item.reason}"
    return accepted, held


def quiz_notes(passages: list[Passage], scored: list[Scored], generation: GenerationConfig) -> list[str]:
    """Passages the model could not quiz itself on, and why: then the passage, its restatements and the rule-made
    questions train."""
    if generation.strategy not in ("quiz", "study") or generation.samples == 0 or generation.template:
        return []
    notes = []
    for index, passage in enumerate(passages):
        pairs = [s for s in scored if s.candidate.passage_index == index and s.candidate.kind == "quiz"]
        name = Path(passage.source).name  # kept with the version and shown by the server: no path of its disk
        where = f"passage {index + 1} of {name}" if len(passages) > 1 else name
        if not pairs:
            notes.append(f"{where}: no quiz pairs, it has no dates, numbers, names or definitions to ask about "
                         "outside its title")
        elif not any(s.accepted for s in pairs):
            notes.append(f"{where}: no quiz pairs, none of the model's {len(pairs)} questions passed the evaluator")
    return notes


def load_version(store: Store, model: str | None = None, device: str = "auto",
                 version_id: str | None = None) -> tuple[lm_ops.LM, str]:
    """The base model with the current (or a given committed) version's adapter; returns it and the version id."""
    if version_id == BASE_VERSION and not store.has_versions():
        version_id = None  # the base model, asked before anything was learned
    version = store.get(version_id) if version_id else store.current()
    if version is not None and version.status == "rolled_back":
        raise SealError(f"{version.id} was rolled back by its checks and has no weights to load")
    name = model or store.model() or lm_ops.EMBEDDED
    store.ensure_model(name)
    lm = lm_ops.load(name, None, device)
    if version is not None:
        wear(store, lm, version)
    return lm, (version.id if version else "v0")


def ask(store: Store, question: str, model: str | None = None, device: str = "auto", max_new_tokens: int = 64,
        version_id: str | None = None) -> tuple[str, str]:
    """Answer closed-book from the current (or a given) version; returns (version id, answer)."""
    if not question.strip():
        raise SealError("the question is empty")
    lm, vid = load_version(store, model, device, version_id)
    return vid, closed_book(lm, question, max_new_tokens)


def closed_book(lm: lm_ops.LM, question: str, max_new_tokens: int) -> str:
    """The answer `seal ask` gives: the question alone in the prompt, greedy."""
    return lm_ops.generate(lm, [lm.chat_prompt(answer_messages(question))], max_new_tokens)[0]
