#!/usr/bin/env bash
# Regenerate the example caller phrases for the receptionist agent (espeak-ng, 8 kHz mono WAV).
set -euo pipefail
cd "$(dirname "$0")/../examples/audio"
say() { espeak-ng -v en-us -s 155 -w "/tmp/$1.wav" "$2" && sox "/tmp/$1.wav" -r 8000 -c 1 -b 16 "$1.wav" && rm "/tmp/$1.wav"; }
say hours "Hi. What are your opening hours on Saturday?"
say appointment "I would like to book an appointment for a cleaning."
say billing "I have a question about my bill."
say goodbye "Okay, thank you. Goodbye."
