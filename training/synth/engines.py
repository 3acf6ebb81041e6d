"""The engine registry: every speech engine the data set can use, by name."""

from __future__ import annotations

from .engine import Engine
from .espeak import EspeakEngine, MbrolaEngine
from .festival import FestivalEngine
from .flite import FliteEngine
from .kokoro import KokoroEngine, KokoroExtrapolatedEngine
from .pico import PicoEngine
from .piper import PiperEngine
from .rhvoice import RhvoiceEngine

ENGINES: dict[str, type[Engine]] = {
    cls.name: cls
    for cls in (
        EspeakEngine,
        MbrolaEngine,
        FestivalEngine,
        PicoEngine,
        RhvoiceEngine,
        PiperEngine,
        KokoroEngine,
        KokoroExtrapolatedEngine,
        FliteEngine,
    )
}
