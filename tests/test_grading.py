import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from seal.errors import SealError
from seal.grading import (RemoteJudge, bootstrap, contains, exact_match, grade, normalize, paired, rule_judge,
                          token_f1, wilson)


def test_normalize_follows_squad():
    assert normalize("The  Denver Broncos!") == "denver broncos"
    assert normalize("An apple, a day.") == "apple day"


@pytest.mark.parametrize("prediction, gold, em, f1", [
    ("Denver Broncos", "the Denver Broncos", True, 1.0),
    ("Broncos", "Denver Broncos", False, 2 / 3),
    ("The Carolina Panthers", "Denver Broncos", False, 0.0),
    ("It was built in 1893 by Oswin Tarrow.", "1893", False, 2 * (1 / 8) / (1 / 8 + 1)),  # 8 words, 1 right
])
def test_exact_match_and_f1(prediction, gold, em, f1):
    assert exact_match(prediction, gold) is em
    assert token_f1(prediction, gold) == pytest.approx(f1)


@pytest.mark.parametrize("prediction, gold, contained, judged", [
    ("The Orvane K7 weighs 842 grams.", "842 grams", True, True),
    ("It launched on September 3, 2026.", "September 3, 2026", True, True),
    ("It costs 2,349 dollars", "2349 dollars", True, True),
    ("Designed by Idris Holloway-Penn.", "Idris Holloway-Penn", True, True),
    ("The answer is 84 grams.", "842 grams", False, False),
    ("It was built in 1893 by Oswin Tarrow.", "1893", True, True),
    ("It was built in 1839.", "1893", False, False),  # numbers must match exactly
    ("The clock was made by the clockmaker Tarrow, Oswin.", "Oswin Tarrow", False, True),  # order is free
    ("The invasion of Britain was planned.", "invasion", True, True),
    ("He governed the colonies.", "governor", False, True),  # same 5-character stem
    ("The storm bent its hands.", "1962", False, False),
    ("Tarrow", "Oswin Tarrow", False, False),  # half of the answer is not the answer
    ("I do not know.", "", False, False),
])
def test_containment_and_local_judge(prediction, gold, contained, judged):
    assert contains(prediction, gold) is contained
    assert rule_judge(prediction, gold) is judged


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_data():
    small = bootstrap([0.0, 1.0] * 5, resamples=2000)
    large = bootstrap([0.0, 1.0] * 200, resamples=2000)
    assert small.mean == large.mean == 0.5
    assert small.low < 0.5 < small.high
    assert (large.high - large.low) < (small.high - small.low) / 3
    assert bootstrap([0.4] * 7).low == bootstrap([0.4] * 7).high == pytest.approx(0.4)
    assert bootstrap([0.1, 0.9, 0.3], seed=3) == bootstrap([0.1, 0.9, 0.3], seed=3)


def test_paired_difference_sees_a_consistent_small_gain_that_unpaired_intervals_miss():
    base = {i: v for i, v in enumerate([0.0, 0.2, 0.4, 0.6, 0.8, 1.0] * 3)}
    better = {i: min(1.0, v + 0.1) for i, v in base.items()}
    diff = paired(base, better)
    assert diff.excludes_zero() and diff.low > 0
    first, second = bootstrap(list(base.values())), bootstrap(list(better.values()))
    assert first.high > second.low  # the per-condition intervals overlap
    assert not paired(base, base).excludes_zero()
    with pytest.raises(ValueError):
        paired({0: 1.0}, {1: 1.0})


class GradingJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge on loopback: 'Yes' when the student answer names Tarrow."""

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        student = body["messages"][0]["content"].split("Student answer:")[1].split("\n")[0]
        reply = json.dumps({"choices": [{"message": {"content": "Yes." if "Tarrow" in student else "No"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_remote_judge_decides_the_judge_verdict_and_fails_clearly():
    server = HTTPServer(("127.0.0.1", 0), GradingJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = RemoteJudge(f"http://127.0.0.1:{server.server_port}/v1", "any")
        assert grade("The clockmaker Tarrow built it.", "Oswin Tarrow", judge, "Who built it?").judge is True
        assert grade("Oswin built it.", "Oswin Tarrow", judge, "Who built it?").judge is False
    finally:
        server.shutdown()
    with pytest.raises(SealError, match="judge at http://127.0.0.1:9/v1 failed"):
        RemoteJudge("http://127.0.0.1:9/v1", "any").verdict("q", "a", "b")


def test_wilson_interval_is_sound_at_the_edges():
    all_right = wilson(6, 6)
    assert all_right.mean == 1.0 and all_right.high == 1.0 and 0.5 < all_right.low < 0.7  # 6 of 6: about 61% or more
    half = wilson(50, 100)
    assert abs(half.low - 0.404) < 0.002 and abs(half.high - 0.596) < 0.002
