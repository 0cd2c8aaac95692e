"""Verifier: independent rebuilds, diffs with causes, binary audit, attestation checks."""
