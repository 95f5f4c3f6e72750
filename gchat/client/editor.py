"""The interactive line editor's guard for passwords (prompt_toolkit, imported only by
the interactive client): what /register, /password and /drop are given is shown as
stars, while typed and once entered, and such lines are kept out of the history."""

from __future__ import annotations

from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.layout.utils import explode_text_fragments

from .commands import secret_start

__all__ = ["MaskPasswords", "SecretlessHistory"]


class MaskPasswords(Processor):
    """Shows the passwords of a /register, /password or /drop line as stars."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        ti = transformation_input
        start = secret_start(ti.document.lines[ti.lineno])
        if start is None:
            return Transformation(ti.fragments)
        fragments = explode_text_fragments(ti.fragments)  # one character each, as typed
        for i in range(start, len(fragments)):
            fragment = fragments[i]
            fragments[i] = (fragment[0], "*", *fragment[2:])
        return Transformation(fragments)


class SecretlessHistory(InMemoryHistory):
    """The line history (up arrow), without the lines that hold passwords."""

    def append_string(self, string: str) -> None:
        if secret_start(string) is None:
            super().append_string(string)
