"""The model's scoring: teacher-forced probabilities of continuations, batched."""

import torch

from seal import model as lm_ops
from seal.prompts import answer_messages


def test_prompts_that_share_their_first_tokens_score_as_if_each_were_read_whole(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    tok = lm.tokenizer
    asked = [("The old Zorvex beacon stands in which?", "The old Zorvex beacon stands in", " Kelmore harbour"),
             ("It was lit in when?", "It was lit in", " 1890"),
             ("The ferry carries how many?", "The ferry carries", " 80 cars")]
    prompts = [lm.chat_prompt(answer_messages(question)) + lead for question, lead, _ in asked]
    continuations = [answer for _, _, answer in asked]
    heads = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert lm_ops._shared_start(heads) >= lm_ops.SHARED_MIN  # the chat template and instruction are read once
    scored = lm_ops.continuation_choices(lm, prompts, continuations, share_prefix=True)
    for head, continuation, choices in zip(heads, continuations, scored):
        tail = tok(continuation, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            whole = lm.model(input_ids=torch.tensor([head + tail])).logits[0, len(head) - 1 : len(head) - 1 + len(tail)]
        probs = whole.float().softmax(-1)
        assert [c.token for c in choices] == tail
        assert [c.top for c in choices] == probs.argmax(-1).tolist()
        for k, choice in enumerate(choices):
            assert abs(choice.probability - probs[k, tail[k]].item()) < 1e-5
            assert abs(choice.top_probability - probs[k].max().item()) < 1e-5
