"""The lineage graph of the registry: each policy linked to the policy it was trained from.

Laid out as columns by generation (a root policy is generation 0) and drawn as SVG
text on the server; every label is escaped.
"""

from __future__ import annotations

from html import escape

from django.utils.safestring import SafeString, mark_safe

from inference.models import Policy

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 34, 50, 14, 10
KIND_FILL = {"policy": "#e8f0fe", "reward_model": "#fef7e0", "imported": "#f1f3f4"}


def generations(policies: list[Policy]) -> dict[int, int]:
    """Return each policy's generation: the number of parents above it in the list."""
    by_id = {p.pk: p for p in policies}
    depth: dict[int, int] = {}

    def of(policy: Policy, seen: frozenset = frozenset()) -> int:
        if policy.pk in depth:
            return depth[policy.pk]
        parent = by_id.get(policy.parent_id)
        if parent is None or parent.pk in seen:
            value = 0
        else:
            value = of(parent, seen | {policy.pk}) + 1
        depth[policy.pk] = value
        return value

    for policy in policies:
        of(policy)
    return depth


def lineage_svg(policies: list[Policy], current_ids: set[int]) -> SafeString:
    """Return the lineage graph as SVG; current policies get a thick border."""
    if not policies:
        return mark_safe("")
    depth = generations(policies)
    rows: dict[int, int] = {}
    position: dict[int, tuple[float, float]] = {}
    for policy in policies:  # oldest first, so children sit at or below their parent
        column = depth[policy.pk]
        row = rows.get(column, 0)
        rows[column] = row + 1
        position[policy.pk] = (
            PAD + column * (NODE_W + GAP_X),
            PAD + row * (NODE_H + GAP_Y),
        )
    width = PAD * 2 + (max(depth.values()) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="Lineage graph of {len(policies)} models" class="lineage">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for policy in policies:
        if policy.parent_id in position:
            px, py = position[policy.parent_id]
            x, y = position[policy.pk]
            parts.append(
                f'<line x1="{px + NODE_W}" y1="{py + NODE_H / 2}" x2="{x}" y2="{y + NODE_H / 2}" '
                'stroke="#555" marker-end="url(#arrow)"/>'
            )
    for policy in policies:
        x, y = position[policy.pk]
        fill = KIND_FILL.get(policy.kind, "#fff")
        stroke = 3 if policy.pk in current_ids else 1
        name = policy.name if len(policy.name) <= 26 else policy.name[:25] + "…"
        parts.append(
            f'<a href="#policy-{policy.pk}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" '
            f'fill="{fill}" stroke="#333" stroke-width="{stroke}"/>'
            f'<text x="{x + 8}" y="{y + 15}" font-size="12">{escape(name)}</text>'
            f'<text x="{x + 8}" y="{y + 28}" font-size="10" fill="#555">'
            f"{escape(policy.get_kind_display())}{' · current' if policy.pk in current_ids else ''}</text></a>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))
