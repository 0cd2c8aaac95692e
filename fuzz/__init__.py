"""Fuzz targets for every parser of untrusted bytes, and the runner that drives them.

``python -m fuzz run --seconds 60`` runs each target under atheris (coverage-guided
libFuzzer) for a fixed budget and writes ``out/fuzz/results.json`` plus a markdown
table; ``python -m fuzz corpora`` runs the adversarial (tampered-input) corpora.
The short CI variants are the tests under ``tests/hardening/``.
"""
