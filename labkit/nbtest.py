"""pytest-notebook post-processor: drop widget state, which would embed ~5 MB of plotly.js in each result."""

from __future__ import annotations


def strip_widget_state(notebook, resources):
    notebook.metadata.pop("widgets", None)
    return notebook, resources
