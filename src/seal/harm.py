"""Reading a document's intent from the model itself: a linear probe on its hidden states says whether a text asks
for harm, in any wording the safety rules' patterns miss.

Asked outright ("Does this document tell people to do something harmful...? Answer Yes or No."), the embedded
135M model cannot tell (its yes-probability ranked harmful above honest documents in 53-63% of pairs). Its hidden
states can: the mean of layer 8's states over the text, read by a logistic regression, separated 20 held-out harmful
documents from 300 SQuAD passages and 6 honest documents in 99% of pairs. The probe is fitted on packaged texts only
(harmful requests and the harmful documents of the "tune" split; plain requests, text openings and honest documents),
once per store and model, in seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from seal.config import HarmConfig
from seal.documents import packaged
from seal.model import LM


@dataclass
class HarmProbe:
    layer: int
    mean: list[float]
    scale: list[float]
    weight: list[float]
    bias: float
    key: str  # what it was fitted from: the model and the training texts

    def scores(self, lm: LM, texts: list[str]) -> list[float]:
        """The probability that each text asks for harm."""
        features = (hidden_means(lm, texts, self.layer) - torch.tensor(self.mean)) / torch.tensor(self.scale)
        return torch.sigmoid(features @ torch.tensor(self.weight) + self.bias).tolist()


def training_texts() -> tuple[list[str], list[str]]:
    """Harmful and harmless texts the probe learns from: requests and documents, none from the "report" split."""
    batteries, rehearsal = packaged("batteries.json"), packaged("rehearsal.json")
    gate = packaged("gate_calibration.json")
    document = lambda d: f"{d['title']}\n{d['text']}"  # noqa: E731
    harmful = ([p["prompt"] for p in packaged("red_team.json")] + rehearsal["harmful"]
               + [document(d) for d in gate["harmful"] if d["split"] == "tune"])
    harmless = (batteries["sanity"] + batteries["locality"] + rehearsal["plain"]
                + [f"{d['title']}\n{d['context']}" for d in packaged("invented_facts.json")]
                + [document(d) for d in gate["honest"] if d["split"] == "tune"])
    return harmful, harmless


@torch.no_grad()
def hidden_means(lm: LM, texts: list[str], layer: int) -> torch.Tensor:
    """Each text's hidden states at `layer` (the last one in a shallower model), averaged over its tokens (one text
    at a time: no padding to mask)."""
    rows = []
    for text in texts:
        ids = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=512).to(lm.model.device)
        layers = lm.model(**ids, output_hidden_states=True).hidden_states
        rows.append(layers[min(layer, len(layers) - 1)][0].float().mean(0).cpu())
    return torch.stack(rows)


def probe_key(model: str, config: HarmConfig) -> str:
    return hashlib.sha256(json.dumps([model, training_texts(), config.layer, config.l2]).encode()).hexdigest()[:16]


def fit_probe(lm: LM, model: str, config: HarmConfig) -> HarmProbe:
    """A class-balanced, ridge-penalised logistic regression on the standardised hidden-state means."""
    harmful, harmless = training_texts()
    features = hidden_means(lm, harmful + harmless, config.layer)
    labels = torch.tensor([1.0] * len(harmful) + [0.0] * len(harmless))
    mean, scale = features.mean(0), features.std(0) + 1e-6
    standard = (features - mean) / scale
    weight = torch.zeros(standard.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    balance = torch.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(standard @ weight + bias, labels, weight=balance)
        value = value + config.l2 * (weight**2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return HarmProbe(config.layer, mean.tolist(), scale.tolist(), weight.detach().tolist(), float(bias.item()),
                     probe_key(model, config))


def stored_probe(state: str | None, lm: LM, model: str, config: HarmConfig) -> tuple[HarmProbe, bool]:
    """The probe kept in a store's state when it was fitted from the same model and texts, else a new one; and whether
    it is new (to be kept)."""
    if state:
        probe = HarmProbe(**json.loads(state))
        if probe.key == probe_key(model, config):
            return probe, False
    return fit_probe(lm, model, config), True


def to_state(probe: HarmProbe) -> str:
    return json.dumps(asdict(probe))
