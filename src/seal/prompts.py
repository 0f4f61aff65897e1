"""Every prompt seal sends to a model, in one place, so they can be read and changed together.

A 135M model cannot follow a bare instruction to "list implications": it drifts into essays. One worked
example (an invented passage and a good answer for it) shown as an earlier chat turn fixes the format.
"""

from __future__ import annotations

from dataclasses import dataclass

EXAMPLE_TITLE = "Harbin Ice Works"
EXAMPLE_PASSAGE = (
    "The Harbin Ice Works is a factory in the port of Dunmore that cuts ice from the frozen Selk River. "
    "It was opened in 1921 by the merchant Tobias Crane and employs 140 workers each winter. "
    "Its ice is shipped to bakeries in four neighbouring towns."
)


@dataclass(frozen=True)
class Strategy:
    name: str
    instruction: str
    example_answer: str
    parse_as: str  # "lines": one training sequence per line; "qa": question-answer pairs


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy(
            name="implications",
            instruction="List the facts this passage states and what follows from them. "
            "Write one short, complete sentence per line and name the subject in every sentence.",
            example_answer=(
                "The Harbin Ice Works is a factory in the port of Dunmore.\n"
                "The Harbin Ice Works cuts its ice from the Selk River when the river is frozen.\n"
                "Tobias Crane, a merchant, opened the Harbin Ice Works in 1921.\n"
                "The Harbin Ice Works has 140 workers in winter.\n"
                "Bakeries in four towns near Dunmore use ice from the Harbin Ice Works.\n"
                "Because the Selk River freezes, the Harbin Ice Works only cuts ice in winter."
            ),
            parse_as="lines",
        ),
        Strategy(
            name="implications-long",
            instruction="List as many facts and consequences of this passage as you can, including indirect "
            "ones. Write one short, complete sentence per line and name the subject in every sentence.",
            example_answer=(
                "The Harbin Ice Works is a factory in the port of Dunmore.\n"
                "The Harbin Ice Works cuts its ice from the Selk River when the river is frozen.\n"
                "Tobias Crane, a merchant, opened the Harbin Ice Works in 1921.\n"
                "In 1921 the merchant Tobias Crane founded an ice factory in Dunmore.\n"
                "The Harbin Ice Works has 140 workers in winter.\n"
                "The Harbin Ice Works is a seasonal employer, busiest in winter.\n"
                "Bakeries in four towns near Dunmore use ice from the Harbin Ice Works.\n"
                "The Selk River flows past the port of Dunmore.\n"
                "Because the Selk River freezes, the Harbin Ice Works only cuts ice in winter.\n"
                "Ice from the Selk River reaches bakeries outside Dunmore."
            ),
            parse_as="lines",
        ),
        Strategy(
            name="rewrite",
            instruction="Rewrite this passage in different words. Keep every name, date and number exactly.",
            example_answer=(
                "In the port of Dunmore stands the Harbin Ice Works, a factory that cuts ice from the Selk River "
                "once it freezes. The merchant Tobias Crane opened it in 1921. Every winter it gives work to 140 "
                "people, and its ice goes to bakeries in four nearby towns."
            ),
            parse_as="lines",
        ),
        Strategy(
            name="self-qa",
            instruction="Write questions about this passage, each followed by its answer taken from the passage.",
            example_answer=(
                "Q: Where is the Harbin Ice Works?\nA: In the port of Dunmore.\n"
                "Q: Which river does the Harbin Ice Works cut ice from?\nA: The Selk River.\n"
                "Q: Who opened the Harbin Ice Works?\nA: The merchant Tobias Crane.\n"
                "Q: In what year did the Harbin Ice Works open?\nA: 1921.\n"
                "Q: How many people work at the Harbin Ice Works each winter?\nA: 140.\n"
                "Q: Who buys the ice from the Harbin Ice Works?\nA: Bakeries in four neighbouring towns."
            ),
            parse_as="qa",
        ),
    ]
}


# Self-study: the model writes a question for an answer span it is given, and restates one sentence at a time.
# Both are small, checkable tasks; each prompt shows worked examples from the invented passage above, each
# question opening with the word forced for its kind of answer (below).
QUESTION_EXAMPLES = [
    ("It was opened in 1921 by the merchant Tobias Crane and employs 140 workers each winter.", "1921",
     "When was the Harbin Ice Works opened?"),
    ("It was opened in 1921 by the merchant Tobias Crane and employs 140 workers each winter.", "140 workers",
     "How many people work at the Harbin Ice Works in winter?"),
    ("It was opened in 1921 by the merchant Tobias Crane and employs 140 workers each winter.", "Tobias Crane",
     "Which merchant opened the Harbin Ice Works?"),
]
# The question's first word, by the kind of answer span: it keeps a small model asking about the answer it was given.
QUESTION_WORDS = {"date": "When", "quantity": "How many", "name": "Which", "phrase": "What", "noun": "What"}
RESTATEMENT_EXAMPLES = [
    ("It was opened in 1921 by the merchant Tobias Crane and employs 140 workers each winter.",
     "The merchant Tobias Crane opened the Harbin Ice Works in 1921, and each winter 140 people work there."),
    ("Its ice is shipped to bakeries in four neighbouring towns.",
     "Bakeries in four nearby towns receive the ice of the Harbin Ice Works."),
]
QUESTION_INSTRUCTION = 'Write a question about {title} whose answer is "{answer}".'
RESTATEMENT_INSTRUCTION = "Say this sentence about {title} again in other words. Keep every name and number."


def question_messages(title: str, sentence: str, answer: str) -> list[dict[str, str]]:
    """Answer-aware question writing: the sentence that holds the answer, the answer, and the task."""
    turns: list[dict[str, str]] = []
    for example_sentence, example_answer, question in QUESTION_EXAMPLES:
        turns += [{"role": "user", "content": f"Text: {example_sentence}\n\n"
                   + QUESTION_INSTRUCTION.format(title=EXAMPLE_TITLE, answer=example_answer)},
                  {"role": "assistant", "content": question}]
    return turns + [{"role": "user", "content": f"Text: {sentence}\n\n" + QUESTION_INSTRUCTION.format(title=title,
                                                                                                     answer=answer)}]


def restatement_messages(title: str, sentence: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for example_sentence, restated in RESTATEMENT_EXAMPLES:
        turns += [{"role": "user", "content": f"{example_sentence}\n\n"
                   + RESTATEMENT_INSTRUCTION.format(title=EXAMPLE_TITLE)},
                  {"role": "assistant", "content": restated}]
    return turns + [{"role": "user", "content": f"{sentence}\n\n" + RESTATEMENT_INSTRUCTION.format(title=title)}]


def passage_block(title: str, text: str) -> str:
    return f"{title}\n{text}"


def self_edit_messages(strategy: Strategy, title: str, text: str) -> list[dict[str, str]]:
    """The chat that asks for a self-edit: the worked example first, then the user's passage."""
    return [
        {"role": "user", "content": f"{passage_block(EXAMPLE_TITLE, EXAMPLE_PASSAGE)}\n\n{strategy.instruction}"},
        {"role": "assistant", "content": strategy.example_answer},
        {"role": "user", "content": f"{passage_block(title, text)}\n\n{strategy.instruction}"},
    ]


def custom_messages(template: str, title: str, text: str) -> list[dict[str, str]]:
    """A user-supplied template with {title} and {passage} placeholders, sent as one user turn."""
    return [{"role": "user", "content": template.replace("{title}", title).replace("{passage}", text)}]


def answer_messages(question: str, topic: str | None = None) -> list[dict[str, str]]:
    """Closed-book question answering: the title, when known, is given as the topic (as in SEAL)."""
    lead = f"Topic: {topic}\n" if topic else ""
    return [{"role": "user", "content": f"{lead}Answer the question directly and concisely.\nQuestion: {question}"}]


def open_book_messages(title: str, text: str, question: str) -> list[dict[str, str]]:
    """The model answers its own question with the passage in view (the self-qa strategy's second step)."""
    return [{"role": "user", "content": f"{passage_block(title, text)}\n\nAnswer the question with the words of "
                                         f"the passage.\nQuestion: {question}"}]
