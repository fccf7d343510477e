"""Shared test setup: fixtures live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.openai_server",
    "tests.fixtures.s3",
]
