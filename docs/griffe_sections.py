"""Griffe extension for `make docs`: the package's `Example:` and
`Reference:` sections.

The docstrings follow Keras' style: `Example:` followed by unindented
`>>>` lines, `Reference:` by an unindented list. Griffe's Google-style
parser wants a section's lines indented, and reads `Example:` as an
admonition (whose `>>>` lines Markdown turns into nested quotes), so this
indents the lines under those titles and renames `Example:` to `Examples:`:
the API pages then show the examples as code and the references as a list.
"""

import griffe

_RENAMED = {"Example:": "Examples:"}
_TITLES = ("Example:", "Examples:", "Reference:", "References:")


def indent_sections(text):
    lines = text.split("\n")
    inside = False
    for i, line in enumerate(lines):
        if line in _TITLES:
            lines[i] = _RENAMED.get(line, line)
            inside = True
        elif not line.strip():
            inside = False
        elif inside and not line.startswith(" "):
            lines[i] = "    " + line
    return "\n".join(lines)


class IndentSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = indent_sections(obj.docstring.value)
