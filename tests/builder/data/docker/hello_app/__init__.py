"""A stand-in application package for the docker backend's sample image."""

GREETING = "hello"
