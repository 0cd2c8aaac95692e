"""The shared data model: every package exchanges these types, never bare dicts."""
