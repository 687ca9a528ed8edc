"""The lineage graph as a self-contained SVG: stage runs in rows by depth, upstream at the top.

Hand-written SVG rather than graphviz or a JS library: no extra dependency, no network, and it
shows in the MLflow UI's artifact viewer and inside the HTML report as an image.
"""

from __future__ import annotations

from html import escape

from alignflow.tracking.lineage import LineageGraph, LineageNode

BOX_WIDTH, BOX_HEIGHT = 200, 62
COLUMN_GAP, ROW_GAP, MARGIN = 28, 34, 16
LEGEND_HEIGHT, LEGEND_WIDTH = 30, 600
FILL = {"computed": "#dcefdc", "cached": "#dde7f7"}
STROKE = {"computed": "#3d8b3d", "cached": "#3b6fb6"}


def depths(graph: LineageGraph) -> dict[str, int]:
    """Longest path from a source, per run id (graph.nodes is topological)."""
    depth: dict[str, int] = {}
    for node in graph.nodes:
        sources = [e.source for e in graph.edges if e.target == node.run_id]
        depth[node.run_id] = 1 + max((depth[s] for s in sources), default=-1)
    return depth


def _third_line(node: LineageNode, limit: int = 30) -> str:
    registered = [f"{m.name} v{m.version}" for m in node.models if m.name]
    if registered:
        return registered[0] if len(registered[0]) <= limit else registered[0][:limit - 1] + "…"
    if node.models:
        return "model folder"
    if node.datasets:
        return f"{len(node.datasets)} dataset{'s' if len(node.datasets) > 1 else ''}"
    return ""


def _box(node: LineageNode, x: int, y: int, elsewhere: bool) -> str:
    where = f", pipeline run {node.parent_run_id}" if elsewhere else ""
    dash = ' stroke-dasharray="5,3"' if elsewhere else ""
    lines = [(node.stage, 'font-weight="bold" font-size="14"'),
             (f"{node.status} · run {node.run_id[:8]}", 'font-size="11" fill="#444"'),
             (_third_line(node), 'font-size="11" fill="#444"')]
    texts = "".join(f'<text x="{x + 10}" y="{y + 19 + 17 * i}" {style}>{escape(text)}</text>'
                    for i, (text, style) in enumerate(lines))
    tooltip = f"{node.stage} run {node.run_id} ({node.status}{where})"
    return (f"<g><title>{escape(tooltip)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="7" '
            f'fill="{FILL[node.status]}" stroke="{STROKE[node.status]}" stroke-width="1.5"{dash}/>'
            f"{texts}</g>")


def lineage_svg(graph: LineageGraph) -> str:
    """SVG text of the graph, upstream at the top: one box per stage run (green computed, blue cached,
    dashed when the run belongs to another pipeline run), one arrow per upstream link."""
    depth = depths(graph)
    layers: dict[int, list[LineageNode]] = {}
    for node in graph.nodes:
        layers.setdefault(depth[node.run_id], []).append(node)
    widest = max((len(nodes) for nodes in layers.values()), default=1)
    width = max(MARGIN * 2 + widest * (BOX_WIDTH + COLUMN_GAP) - COLUMN_GAP, LEGEND_WIDTH)
    height = MARGIN * 2 + max(len(layers), 1) * (BOX_HEIGHT + ROW_GAP) - ROW_GAP + LEGEND_HEIGHT
    position: dict[str, tuple[int, int]] = {}
    for row, nodes in layers.items():  # each layer centred, so long edges rarely run straight through a box
        left = (width - len(nodes) * (BOX_WIDTH + COLUMN_GAP) + COLUMN_GAP) // 2
        for i, node in enumerate(nodes):
            position[node.run_id] = (left + i * (BOX_WIDTH + COLUMN_GAP),
                                     MARGIN + row * (BOX_HEIGHT + ROW_GAP))
    arrows = []
    for edge in graph.edges:
        (x1, y1), (x2, y2) = position[edge.source], position[edge.target]
        x1, x2, y1 = x1 + BOX_WIDTH // 2, x2 + BOX_WIDTH // 2, y1 + BOX_HEIGHT
        bend = ROW_GAP * 2.5
        arrows.append(f'<path d="M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2 - 2}" fill="none" '
                      f'stroke="#666" stroke-opacity="0.75" stroke-width="1.2" marker-end="url(#arrow)"/>')
    boxes = [_box(node, *position[node.run_id], elsewhere=node.parent_run_id != graph.parent_run_id)
             for node in graph.nodes]
    legend_y = height - MARGIN - 4
    keys = [(FILL["computed"], STROKE["computed"], "", "computed", 0),
            (FILL["cached"], STROKE["cached"], "", "cached (computed by an earlier run)", 100),
            ("white", "#555", ' stroke-dasharray="4,2"', "belongs to another pipeline run", 340)]
    legend = '<g font-size="11" fill="#333">' + "".join(
        f'<rect x="{MARGIN + x}" y="{legend_y - 10}" width="14" height="12" fill="{fill}" '
        f'stroke="{stroke}"{dash}/><text x="{MARGIN + x + 20}" y="{legend_y}">{label}</text>'
        for fill, stroke, dash, label, x in keys) + "</g>"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>'
            f'<rect width="{width}" height="{height}" fill="white"/>'
            + "".join(arrows) + "".join(boxes) + legend + "</svg>\n")
