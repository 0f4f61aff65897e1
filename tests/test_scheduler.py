"""Continuous batching (`seal.serve.scheduler`) on the tiny model: batched rows decode exactly as they would alone."""

import time

import pytest

from seal import model as lm_ops
from seal.errors import SealError
from seal.serve.scheduler import Sampling, Scheduler

QUESTIONS = ["What is the capital of France?", "Hi", "Tell me a long story about a dragon that lives in a sea cave.",
             "Count to five."]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return lm_ops.load(str(tiny_model_dir))


@pytest.fixture()
def scheduler():
    running = Scheduler(max_batch=8)
    running.start()
    yield running
    running.stop()


def idle(scheduler: Scheduler) -> bool:
    """Whether the batch empties (the decoding thread counts its rows after each step)."""
    deadline = time.time() + 10
    while scheduler.in_flight and time.time() < deadline:
        time.sleep(0.01)
    return scheduler.in_flight == 0


def prompt_ids(lm, question: str) -> list[int]:
    return lm.tokenizer(lm.chat_prompt([{"role": "user", "content": question}]), add_special_tokens=False)["input_ids"]


def test_batched_rows_decode_greedily_as_each_would_alone(lm, scheduler):
    prompts = [lm.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    alone = lm_ops.generate_tokens(lm, prompts, 20, batch_size=1)  # transformers' own generate, one at a time
    together = [scheduler.submit(lm, prompt_ids(lm, q), Sampling(20)) for q in QUESTIONS]
    assert [g.wait() for g in together] == alone
    joining = []  # each joins a batch already decoding, and the rows that end leave it
    for question, limit in zip(QUESTIONS, (20, 5, 20, 9)):
        joining.append(scheduler.submit(lm, prompt_ids(lm, question), Sampling(limit)))
        time.sleep(0.02)
    assert [g.wait() for g in joining] == [alone[0], alone[1][:5], alone[2], alone[3][:9]]
    assert [g.finish_reason for g in joining] == ["length"] * 4  # the tiny model never ends on its own
    assert idle(scheduler)


def test_sampling_is_per_request_a_seed_repeats_and_no_seed_differs(lm, scheduler):
    ids = prompt_ids(lm, QUESTIONS[0])
    seeded = [scheduler.submit(lm, ids, Sampling(24, temperature=1.0, top_p=0.9, seed=7)) for _ in range(3)]
    fresh = [scheduler.submit(lm, ids, Sampling(24, temperature=1.0)) for _ in range(2)]
    greedy = scheduler.submit(lm, ids, Sampling(24))
    seeded_tokens = [g.wait() for g in seeded]
    assert seeded_tokens[0] == seeded_tokens[1] == seeded_tokens[2]  # in one batch, each with its own generator
    assert fresh[0].wait() != fresh[1].wait()
    assert greedy.wait() == lm_ops.generate_tokens(lm, [lm.tokenizer.decode(ids)], 24)[0]


def test_a_request_given_up_leaves_the_batch(lm, scheduler):
    long = scheduler.submit(lm, prompt_ids(lm, QUESTIONS[2]), Sampling(400))
    other = scheduler.submit(lm, prompt_ids(lm, QUESTIONS[1]), Sampling(30))
    reader = iter(long)
    next(reader), next(reader)
    long.cancel()
    assert len(other.wait()) == 30
    assert idle(scheduler) and long.finish_reason == "cancelled" and len(long.tokens) < 400


def test_requests_on_two_served_models_decode_apart(lm, tiny_model_dir, scheduler):
    """After a swap, requests on the old and the new model are in flight at once; each gets its own model's text."""
    other = lm_ops.load(str(tiny_model_dir))
    with __import__("torch").no_grad():
        for parameter in other.model.parameters():
            parameter.mul_(1.5)
    ids = prompt_ids(lm, QUESTIONS[0])
    old, new = scheduler.submit(lm, ids, Sampling(16)), scheduler.submit(other, ids, Sampling(16))
    assert old.wait() == lm_ops.generate_tokens(lm, [lm.tokenizer.decode(ids)], 16)[0]
    assert new.wait() == lm_ops.generate_tokens(other, [lm.tokenizer.decode(ids)], 16)[0]
    assert old.tokens != new.tokens


def test_a_failing_forward_ends_its_requests_with_an_error_and_decoding_goes_on(lm, scheduler):
    broken = lm_ops.LM(model=None, tokenizer=lm.tokenizer, name="broken", device=lm.device)  # type: ignore[arg-type]
    failed = scheduler.submit(broken, prompt_ids(lm, QUESTIONS[0]), Sampling(8))
    with pytest.raises(SealError, match="generation failed"):
        failed.wait()
    assert len(scheduler.submit(lm, prompt_ids(lm, QUESTIONS[1]), Sampling(8)).wait()) == 8
