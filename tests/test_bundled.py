"""The bundled default model, as a user meets it right after install.

examples/keywords.wav was built by training/stream_builder.py from the synthetic data set's test
voices (espeak-ng speakers the bundled model never heard in training), with its ground truth in
examples/keywords.csv. `ssamba-stream file examples/keywords.wav --task kws` must print every
keyword with the right label at the right time, and nothing else.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssamba_stream.evaluation import DEFAULT_TOLERANCE, match_events, read_ground_truth
from ssamba_stream.kws import Event
from ssamba_stream.runtime.spec import load_spec
from ssamba_stream.spotter import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "keywords.wav"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def test_bundled_model_is_a_small_12_class_streaming_kws_model():
    spec = load_spec(DEFAULT_MODEL)
    assert spec.task == "kws"
    assert spec.labels == (*KEYWORDS, "_silence_", "_unknown_")
    assert spec.sample_rate == 16000 and spec.block_tokens == 8
    assert spec.extra["batch"] is None  # one session serves any number of streams (ssamba_stream.serving)
    size = DEFAULT_MODEL.stat().st_size + DEFAULT_MODEL.with_suffix(".json").stat().st_size
    assert size < 5 * 2**20


def test_example_recording_gives_the_right_keywords_at_the_right_times():
    result = subprocess.run(
        [sys.executable, "-m", "ssamba_stream.cli", "file", str(EXAMPLE), "--task", "kws", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    events = [Event(**json.loads(line)) for line in result.stdout.splitlines()]
    truth = [o for o in read_ground_truth(EXAMPLE.with_suffix(".csv")) if o.label in KEYWORDS]
    assert len(truth) >= 5
    matching = match_events(events, truth, DEFAULT_TOLERANCE)
    said = [(o.label, round(o.start, 2)) for o in truth]
    heard = [(e.label, e.time) for e in events]
    assert matching.hits == len(truth), f"missed keywords: said {said}, heard {heard}"
    assert matching.false_accepts == 0, f"false accepts: said {said}, heard {heard}"


def test_committed_checkpoint_is_the_source_of_the_bundled_model():
    # training/checkpoints/kws12 is what later training stages start from (model.init_from): it must
    # stream to the bundled graph's logits, or fine-tuning would start from another model.
    pytest.importorskip("torch")
    from ssamba_export.verify import max_logit_difference, test_signal

    checkpoint = ROOT / "training" / "checkpoints" / "kws12"
    difference, blocks = max_logit_difference(DEFAULT_MODEL, checkpoint, test_signal(10.0))
    assert blocks >= 60 and difference <= 1e-4
