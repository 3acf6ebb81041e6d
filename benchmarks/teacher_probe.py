"""How far does the distillation teacher's embedding carry our keywords to voices it was not fit on?

A linear probe (softmax regression) on the teacher's word embeddings (``python -m
ssamba_training.teacher``) is fit on the training split's clips and scored on the validation and
test splits, which are other engines (RHVoice; the reserved voices). Keywords and the unknown word,
no silence class. Compare with the per-class figures of a run's evaluation (``RUN/eval/*/per_class.csv``).

    python benchmarks/teacher_probe.py --data /work/data/multi_kokoro \
        --embeddings /work/data/multi_kokoro/teacher_speech_embedding.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ssamba_training.data import KWS12_KEYWORDS as KEYWORDS
from ssamba_training.data import UNKNOWN_LABEL
from ssamba_training.teacher import load_embeddings


def split_of(data: Path) -> dict[str, str]:
    """Clip name -> split, from the Speech Commands lists (training: every other clip)."""
    split = {}
    for name, listing in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        split.update(dict.fromkeys((data / listing).read_text().split(), name))
    return split


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int = 60) -> torch.nn.Module:
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(256):
            loss = torch.nn.functional.cross_entropy(probe(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return probe.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    args = parser.parse_args()
    embeddings, split = load_embeddings(args.embeddings), split_of(args.data)
    labels = (*KEYWORDS, UNKNOWN_LABEL)
    sets: dict[str, tuple[list[np.ndarray], list[int]]] = {
        s: ([], []) for s in ("train", "validation", "test")
    }
    for key, vector in embeddings.items():
        word = key.split("/")[0]
        xs, ys = sets[split.get(key, "train")]
        xs.append(vector)
        ys.append(labels.index(word) if word in KEYWORDS else len(KEYWORDS))
    tensors = {s: (torch.from_numpy(np.stack(xs)), torch.tensor(ys)) for s, (xs, ys) in sets.items()}
    probe = fit_probe(*tensors["train"], classes=len(labels))
    print("| split | clips | accuracy | keyword recall |\n|---|---|---|---|")
    for name, (x, y) in tensors.items():
        with torch.no_grad():
            hit = probe(x).argmax(dim=1) == y
        keyword = y < len(KEYWORDS)
        print(f"| {name} | {len(y)} | {hit.float().mean():.3f} | {hit[keyword].float().mean():.3f} |")


if __name__ == "__main__":
    main()
