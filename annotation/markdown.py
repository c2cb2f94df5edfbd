"""Project guidelines as HTML: Markdown rendered, then sanitised by nh3.

Guidelines are written by admins but shown to every annotator, so the rendered HTML
keeps only nh3's default allow-list: no script, style, iframe or event handler
survives, and links get rel="noopener noreferrer".
"""

from __future__ import annotations

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe


def render_guidelines(text: str) -> SafeString:
    """Return the Markdown `text` as sanitised HTML, safe to insert in a page."""
    html = markdown_lib.markdown(
        text or "", extensions=["sane_lists", "fenced_code", "tables"]
    )
    return mark_safe(nh3.clean(html, link_rel="noopener noreferrer"))
