"""Synthetic keyword data in the Speech Commands v2 layout, from many speech engines and voices.

Modules, one job each: :mod:`.engine` (the engine plug-in interface) and one module per engine
(:mod:`.espeak` with espeak-ng and its MBROLA voices, :mod:`.festival`, :mod:`.pico`,
:mod:`.rhvoice`, :mod:`.piper`, :mod:`.flite`), :mod:`.engines` (the registry), :mod:`.voices`
(speakers, splits and the reserved test voices), :mod:`.noise` (background noise and babble),
:mod:`.rooms` (simulated room impulse responses), :mod:`.dataset` (the build) and :mod:`.cli`.

Usage::

    python -m ssamba_training.synth --out data/multi --train-engines espeak,mbrola,festival,pico,piper
"""

from .cli import main
from .common import SynthError
from .dataset import CLIPS_CSV, MANIFEST, NOISE_DIR, SynthConfig, build_dataset

__all__ = ["CLIPS_CSV", "MANIFEST", "NOISE_DIR", "SynthConfig", "SynthError", "build_dataset", "main"]
