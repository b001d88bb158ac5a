"""What pyproject.toml cannot say: the packages found in the checkout, plus the bundled tiny model.

fixtures/tiny-chat/ is the model's only copy (tests, tools and the docs use that path); the wheel carries it
as the data-only package chatstream.tiny_chat, where chatstream.bundled looks first. Everything else about
the build is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["chatstream", "chatstream.*", "pytest_chatstream", "pytest_chatstream.*"]),
              "chatstream.web", "chatstream.tiny_chat"],
    package_dir={"chatstream.tiny_chat": "fixtures/tiny-chat"},
)
