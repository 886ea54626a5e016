"""The model cards are generated from the manifests and must be current; the shipped
detector's manifest carries the figures the card promises."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / 'models' / 'weights'

# `make test-fast` runs this file (seconds per test).
pytestmark = pytest.mark.fast


def test_cards_match_the_manifests():
    res = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'model_card.py'), '--check'],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_detector_manifest_has_in_distribution_cross_renderer_and_colour_swap_figures():
    m = json.loads((WEIGHTS / 'detector.json').read_text())
    keys = set(m['evaluation'])
    assert 'flex/f32/320x240' in keys, keys
    assert any(k.startswith('cross_renderer:') for k in keys), keys
    assert any(k.startswith('colour_swap:') for k in keys), keys
    assert m['monitoring'] and m['known_limits'] and m['intended_use'] and m['latency']
    card = (WEIGHTS / 'detector.md').read_text()
    assert m['sha256'] in card and 'cross_renderer' in card


def test_llm_manifest_is_the_file_fetch_weights_installs():
    m = json.loads((WEIGHTS / 'smollm2.json').read_text())
    gguf = ROOT / '.cache' / 'llm' / m['file']
    assert gguf.stat().st_size == m['bytes']
    assert m['sha256'] in (WEIGHTS / 'smollm2.md').read_text()
