"""Shared fixtures: the emulators' fixtures live beside the emulators."""

pytest_plugins = [
    "tests.emulators.fixtures_discord",
    "tests.emulators.fixtures_replicate",
]
