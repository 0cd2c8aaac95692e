"""Reports: audit report model rendering and the KMS key-policy gate."""
