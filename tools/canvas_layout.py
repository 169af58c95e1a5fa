"""Where the example graphs' nodes go on the canvas, computed from node sizes, and the checks that keep them readable.

A layout is a grid of canvas columns; each titled group holds some of them (groups may sit under one another) and, in
each of its columns, a top-to-bottom list of nodes. Node sizes follow the ComfyUI frontend's own minimum-size rule
(LiteGraph `computeSize` in frontend 1.27.10) plus room for the image or video preview a loader or preview node
shows, so the frontend never has to grow a node (which would push it over its neighbour, or change the file on save).
Columns are as wide as their widest node; a node sits below the one above it, or lower when one of its links should
run straight (`level_with`) or when it must stay under other nodes (`below`). `arrange` then moves down any node a
link would run under, and the lower of two linked nodes in one column until their link turns in the gap between
them, until nothing moves.

The checks measure what the frontend draws: node rectangles with their title bars, and links as the frontend's
cubic splines between slot positions.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# LiteGraph geometry of ComfyUI frontend 1.27.10 (measured in the browser: LiteGraph.NODE_TITLE_HEIGHT etc.).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
SLOT_Y = 0.7 * SLOT_HEIGHT  # a slot's centre below the node's top, for slot row 0
SLOT_INSET = SLOT_HEIGHT // 2  # slots sit this far inside the node's left and right edges
WIDGET_ROW = 24  # height of one widget row
WIDGETS_TOP_MARGIN = 6  # below the last slot row, where widgets start
WIDGET_SLOT_Y = 10  # a linked widget's input slot, below the widget row's top
BODY_PADDING_WITH_WIDGETS = 14
BODY_PADDING_WITHOUT_WIDGETS = 6
MIN_WIDTH = 140  # LiteGraph.NODE_WIDTH
MIN_WIDTH_WITH_WIDGETS = 210  # 1.5 x NODE_WIDTH
# Text as the frontend draws it: titles in 14 px Arial (LiteGraph.NODE_TEXT_SIZE, NODE_FONT), widget labels and values
# in 12 px (NODE_SUBTEXT_SIZE). A title is cut ("SamplerCustomAdva...") when it is wider than the node less two title
# heights (LGraphNode.drawTitleText); a widget's label and value are cut when together with the 5 px gap between them
# they are wider than the node less 85 px (BaseWidget.drawTruncatingText: 2 x 15 px margin + 5 px left padding on the
# left, 2 x 15 px margin + 20 px right padding on the right).
TITLE_FONT_SIZE = 14
WIDGET_FONT_SIZE = 12
TITLE_PADDING = 2 * TITLE_HEIGHT
WIDGET_TEXT_PADDING = 85 + 5
TEXT_SAFETY = 7  # rounding and font hinting: a few pixels more than the advance widths add up to (1.58.1 cut
# the LCM-LoRA file name at 1 px over the advance widths)
# Frontend 1.58.1 draws the same labels up to 3 % wider (measured: "X-Portrait Motion Control" 166 px, Arial's
# advances give 162 px); widths are sized for it too.
TEXT_SLACK = 1.035
# Advance widths of Arial (units per em: 2048) for the characters ' ' to '~'; Chromium on Linux draws "Arial" with
# Liberation Sans, whose metrics are Arial's. Other characters count as the widest lower-case letter.
ARIAL_UNITS_PER_EM = 2048
ARIAL_ADVANCE = (
    569, 569, 727, 1139, 1139, 1821, 1366, 391, 682, 682, 797, 1196, 569, 682, 569, 569, 1139, 1139, 1139, 1139, 1139,
    1139, 1139, 1139, 1139, 1139, 569, 569, 1196, 1196, 1196, 1139, 2079, 1366, 1366, 1479, 1479, 1366, 1251, 1593,
    1479, 569, 1024, 1366, 1139, 1706, 1479, 1593, 1366, 1593, 1479, 1366, 1251, 1479, 1366, 1933, 1366, 1366, 1251,
    569, 569, 569, 961, 1139, 682, 1139, 1139, 1024, 1139, 1139, 569, 1139, 1139, 455, 455, 1024, 455, 1706, 1139, 1139,
    1139, 1139, 682, 1024, 569, 1139, 1024, 1479, 1024, 1024, 1024, 684, 532, 684, 1196)
# Slot labels: the frontend makes a node at least as wide as its longest input label plus its longest output label
# plus a slot's height on each side and 5 px between (LGraphNode.computeSize); its 12 px label font averages 5.8 px
# a character (measured: SamplerCustomAdvanced, "latent_image" and "denoised_output", grows to 202.5 px).
SLOT_LABEL_CHAR_WIDTH = 6
SLOT_LABELS_GAP = 5
# Preview areas the frontend 1.27.10 adds below a node's widgets: an image preview needs at least 220 px, a video
# preview 320 px (measured: LoadImage grows to 314 px, LoadVideo to 394 px once a file is picked; X-Portrait Sampler
# grows by 212 px on its first latent preview with --preview-method auto).
PREVIEW_HEIGHT = {"image": 220, "video": 320}
# Spline links: control points this far along the slot direction (frontend: max(30, distance / 4)).
SPLINE_MIN_CONTROL = 30
SPLINE_CONTROL_FRACTION = 0.25
LINK_SAMPLES = 128
LINK_HALF_WIDTH = 3  # the frontend strokes links 3 px wide plus a 1 px border
# Fit view (frontend command Comfy.Canvas.FitView: fitViewToSelectionAnimated): the bounds of all nodes and groups
# padded by 10 px, fitted at 75 % of the canvas.
FIT_PADDING = 10
FIT_ZOOM = 0.75
# The graph canvas of a 1920 x 1080 and of a 1366 x 768 window in frontend 1.27.10 with its default settings (the
# side bar and the top bar take 40 px each; measured in the browser; 1.58.1's canvas is the whole window).
CANVAS_1080P = (1880, 1040)
CANVAS_768P = (1326, 728)
READABLE_ZOOM = 0.6  # the zoom the templates must open and fit at (the frontend drops text below 8 / 14 = 0.571)
# The minimap (frontend 1.27.10, on by default): 250 x 200 px, 66 px above the canvas's bottom and 44 px left of its
# right edge (measured; 1.58.1 puts it 54 px above the bottom at the right edge of a canvas 40 px larger each way).
MINIMAP_SIZE = (250, 200)
MINIMAP_FROM_CORNER = (44, 66)
MAX_VIEW_STEPS = 40  # a graph too wide for the laptop gives up at most 0.2 of zoom to keep the minimap off
VIEW_MARGIN = 8  # screen pixels kept between the graph and the canvas's top-left edges in the stored view

COLUMN_GAP = 40
# Room to grow: two more nodes, each in a column of its own, as wide as the frontend makes a new core node (measured:
# Upscale Image By and Upscale Image are 270 px wide when added).
NEW_NODE_WIDTH = 270
ROOM_FOR_TWO_NODES = 2 * (NEW_NODE_WIDTH + COLUMN_GAP)
LINK_CLEARANCE = 12  # space kept between a link and the title bar of a node it passes over
MAX_SETTLE_ROUNDS = 400
LOOP_STEP = 2  # how far a settle round moves the lower of two nodes in one column whose link turns under one of them
NODE_GAP = 28  # between a node's bottom and the next node's title bar
GROUP_PADDING = 8
GROUP_TITLE_HEIGHT = 34  # a group title bar at font size 24 is 1.4 x 24 px high
GROUP_GAP = 20


@dataclass(frozen=True)
class Slots:
    """What decides a node's size and slot positions: socket (non-widget) inputs, outputs, widget rows."""

    sockets: tuple[str, ...]
    outputs: tuple[str, ...]
    widgets: tuple[str, ...]  # widget rows in order, including companions (seed control, upload button)

    def min_height(self) -> int:
        rows = max(1, len(self.sockets), len(self.outputs))
        padding = BODY_PADDING_WITH_WIDGETS if self.widgets else BODY_PADDING_WITHOUT_WIDGETS
        return rows * SLOT_HEIGHT + WIDGET_ROW * len(self.widgets) + padding

    def min_width(self, title: str, widget_texts: Sequence[tuple[str, str]] = ()) -> int:
        """The narrowest width at which the frontend keeps this node as it is and cuts none of its text: the title,
        slot labels, and each widget's label with its value (widget_texts)."""
        base = MIN_WIDTH_WITH_WIDGETS if self.widgets else MIN_WIDTH
        inputs = max((len(name) for name in self.sockets), default=0) * SLOT_LABEL_CHAR_WIDTH
        outputs = max((len(name) for name in self.outputs), default=0) * SLOT_LABEL_CHAR_WIDTH
        labels = inputs + outputs + 2 * SLOT_HEIGHT + (SLOT_LABELS_GAP if inputs and outputs else 0)
        title_width = TITLE_PADDING + text_width(title, TITLE_FONT_SIZE) + TEXT_SAFETY
        widgets = max((WIDGET_TEXT_PADDING + text_width(label, WIDGET_FONT_SIZE) + text_width(value, WIDGET_FONT_SIZE)
                       + TEXT_SAFETY for label, value in widget_texts), default=0)
        return math.ceil(max(base, title_width, labels, widgets))

    def input_y(self, name: str) -> float:
        """A linked input's slot centre below the node's top (sockets by row, widgets at their row)."""
        if name in self.sockets:
            return self.sockets.index(name) * SLOT_HEIGHT + SLOT_Y
        rows = max(1, len(self.sockets), len(self.outputs))
        return rows * SLOT_HEIGHT + WIDGETS_TOP_MARGIN + WIDGET_ROW * self.widgets.index(name) + WIDGET_SLOT_Y

    def output_y(self, slot: int) -> float:
        return slot * SLOT_HEIGHT + SLOT_Y


def text_width(text: str, size: int) -> float:
    """Width of `text` in Arial at `size` px, as the browser's measureText gives it."""
    widest = ARIAL_ADVANCE[ord("m") - 32]
    units = sum(ARIAL_ADVANCE[ord(char) - 32] if " " <= char <= "~" else widest for char in text)
    return units * size / ARIAL_UNITS_PER_EM * TEXT_SLACK


@dataclass
class Box:
    """A node on the canvas: pos is the body's top-left corner (the title bar is above it)."""

    node_id: int
    x: float
    y: float
    width: float
    height: float

    @property
    def rect(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) including the title bar."""
        return self.x, self.y - TITLE_HEIGHT, self.x + self.width, self.y + self.height


@dataclass
class Placed:
    """One node's layout inputs: its slots, the preview it will show, and placement hints."""

    node_id: int
    title: str
    slots: Slots
    preview: str | None = None
    width: int | None = None
    height: int | None = None  # for nodes whose content is not widget rows (a Note's text)
    level_with: tuple[str, int, int] | None = None  # (input name, source node id, source output slot)
    below: tuple[int, ...] = ()  # node ids whose bottom this node's title must clear
    widget_texts: tuple[tuple[str, str], ...] = ()  # (label, value as shown) per widget row that shows both

    def size(self) -> tuple[int, int]:
        height = max(self.height or 0, self.slots.min_height() + (PREVIEW_HEIGHT[self.preview] if self.preview else 0))
        width = max(self.width or 0, self.slots.min_width(self.title, self.widget_texts))
        return width, height

    def widgets_bottom(self) -> int:
        """Where the widget rows end below the body's top (a preview, if any, lies below)."""
        return self.height if self.preview is None and self.height else self.slots.min_height()


@dataclass
class Group:
    """A titled group: canvas column index -> its nodes top to bottom. A group starts at the top of the canvas, or
    under the groups named in `below` (which share some of its columns)."""

    title: str
    color: str
    columns: dict[int, list[int]]
    below: tuple[str, ...] = ()


@dataclass
class Layout:
    boxes: dict[int, Box] = field(default_factory=dict)
    # title, colour, (x, y, w, h)
    groups: list[tuple[str, str, tuple[float, float, float, float]]] = field(default_factory=list)


def place(groups: Sequence[Group], nodes: dict[int, Placed], min_y: dict[int, float] | None = None) -> Layout:
    """Canvas columns as wide as their widest node, left to right; each group's nodes top to bottom in its columns.
    min_y: node id -> lowest allowed top of its body (set by `arrange` to clear links)."""
    min_y = min_y or {}
    widths: dict[int, int] = {}
    for group in groups:
        for column, members in group.columns.items():
            widths[column] = max([widths.get(column, 0)] + [nodes[node_id].size()[0] for node_id in members])
    lefts, x = {}, 0.0
    for column in sorted(widths):
        lefts[column], x = x, x + widths[column] + COLUMN_GAP
    layout = Layout()
    bottoms: dict[str, float] = {}
    for group in groups:
        top = 0.0
        if group.below:
            top = (max(bottoms[title] for title in group.below) + GROUP_GAP + GROUP_TITLE_HEIGHT + GROUP_PADDING
                   + TITLE_HEIGHT)
        for column, members in group.columns.items():
            cursor = top
            for node_id in members:
                node = nodes[node_id]
                _, height = node.size()
                y = max(cursor, min_y.get(node_id, cursor))
                if node.level_with is not None:
                    y = max(y, _level_y(node, layout))
                for other in node.below:
                    y = max(y, layout.boxes[other].rect[3] + NODE_GAP + TITLE_HEIGHT)
                y = math.ceil(y)  # the frontend keeps positions as float32: whole pixels survive a save unchanged
                layout.boxes[node_id] = Box(node_id, lefts[column], y, widths[column], height)
                cursor = y + height + NODE_GAP + TITLE_HEIGHT
        bounds = _group_bounds(group, layout)
        bottoms[group.title] = bounds[1] + bounds[3]
        layout.groups.append((group.title, group.color, bounds))
    return layout


def _level_y(node: Placed, layout: Layout) -> float:
    input_name, source, slot = node.level_with
    source_box = layout.boxes[source]
    return source_box.y + SLOT_Y + slot * SLOT_HEIGHT - node.slots.input_y(input_name)


def _group_bounds(group: Group, layout: Layout) -> tuple[float, float, float, float]:
    """(x, y, width, height) around the group's nodes, with padding and the title bar."""
    rects = [layout.boxes[node_id].rect for members in group.columns.values() for node_id in members]
    left = min(r[0] for r in rects) - GROUP_PADDING
    top = min(r[1] for r in rects) - GROUP_PADDING - GROUP_TITLE_HEIGHT
    right = max(r[2] for r in rects) + GROUP_PADDING
    bottom = max(r[3] for r in rects) + GROUP_PADDING
    return left, top, right - left, bottom - top


# ------------------------------------------------------------------------------------------------------ checks
def rects_intersect(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two (left, top, right, bottom) rectangles share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlapping_nodes(boxes: Iterable[Box]) -> list[tuple[int, int]]:
    """Pairs of nodes whose rectangles (title bars included) intersect."""
    boxes = list(boxes)
    pairs = []
    for index, first in enumerate(boxes):
        for second in boxes[index + 1:]:
            if rects_intersect(first.rect, second.rect):
                pairs.append((first.node_id, second.node_id))
    return pairs


@dataclass(frozen=True)
class Link:
    source: int
    slot: int
    target: int
    input_name: str


def link_ends(link: Link, layout: Layout, nodes: dict[int, Placed]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a link leaves its output slot and enters its input slot."""
    source, target = layout.boxes[link.source], layout.boxes[link.target]
    start = (source.x + source.width + 1 - SLOT_INSET, source.y + nodes[link.source].slots.output_y(link.slot))
    end = (target.x + SLOT_INSET, target.y + nodes[link.target].slots.input_y(link.input_name))
    return start, end


def link_points(link: Link, layout: Layout, nodes: dict[int, Placed]) -> list[tuple[float, float]]:
    return spline_points(*link_ends(link, layout, nodes))


def overlapping_groups(layout: Layout) -> list[tuple[str, str]]:
    """Pairs of group titles whose boxes intersect (dragging one would take the other's nodes along)."""
    boxes = [(title, (x, y, x + width, y + height)) for title, _, (x, y, width, height) in layout.groups]
    return [(title, other) for index, (title, first) in enumerate(boxes) for other, second in boxes[index + 1:]
            if rects_intersect(first, second)]


def links_under_nodes(layout: Layout, nodes: dict[int, Placed], links: Iterable[Link]) -> list[tuple[Link, int]]:
    """(link, node) for every link that runs under a node."""
    found = []
    for link in links:
        points = link_points(link, layout, nodes)
        for box in layout.boxes.values():
            if link_under_node(points, box, ends_here=box.node_id in (link.source, link.target)):
                found.append((link, box.node_id))
    return found


def arrange(groups: Sequence[Group], nodes: dict[int, Placed], links: Sequence[Link],
            tops: dict[int, float] | None = None) -> Layout:
    """`place`, then move every node that a link runs under (other than the link's own ends) down until the link
    passes above its title bar; repeated until nothing moves (each round only moves nodes down). tops: node id ->
    lowest top of its body to start from, for graphs whose links the rounds alone would chase down without end."""
    min_y: dict[int, float] = dict(tops or {})
    for _ in range(MAX_SETTLE_ROUNDS):
        layout = place(groups, nodes, min_y)
        moved = False
        for link, node_id in links_under_nodes(layout, nodes, links):
            if node_id in (link.source, link.target):
                # a link between two nodes of one column turns back under one of them: more room between the two
                # lets it turn in the gap (the lower one moves down)
                source, target = layout.boxes[link.source], layout.boxes[link.target]
                if source.x == target.x:
                    lower = max((source, target), key=lambda box: box.y)
                    min_y[lower.node_id], moved = lower.y + LOOP_STEP, True
                continue
            left, _, right, _ = layout.boxes[node_id].rect
            lowest = max(y for x, y in link_points(link, layout, nodes)
                         if left - LINK_CLEARANCE < x < right + LINK_CLEARANCE)
            wanted = lowest + LINK_CLEARANCE + TITLE_HEIGHT
            if wanted > min_y.get(node_id, -math.inf):
                min_y[node_id], moved = wanted, True
        if not moved:
            return layout
    raise ValueError(f"links still run under nodes after {MAX_SETTLE_ROUNDS} rounds of moving nodes down; change the "
                     "columns or the level hints of this graph")


def spline_points(start: tuple[float, float], end: tuple[float, float]) -> list[tuple[float, float]]:
    """Points along the frontend's link from an output slot (leaving right) to an input slot (entering left)."""
    distance = math.dist(start, end)
    control = max(SPLINE_MIN_CONTROL, distance * SPLINE_CONTROL_FRACTION)
    p0, p1, p2, p3 = start, (start[0] + control, start[1]), (end[0] - control, end[1]), end
    points = []
    for index in range(LINK_SAMPLES + 1):
        t = index / LINK_SAMPLES
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return points


def link_under_node(points: Sequence[tuple[float, float]], box: Box, ends_here: bool) -> bool:
    """Whether a link drawn through `points` runs under `box`. A link's own end nodes may hold it within the slot
    margin (slots sit inside the node's edges; tests/ui/ allows 24 px less the stroke, this a little less)."""
    left, top, right, bottom = box.rect
    margin = SLOT_HEIGHT if ends_here else -LINK_HALF_WIDTH
    return any(left + margin < x < right - margin and top - LINK_HALF_WIDTH < y < bottom + LINK_HALF_WIDTH
               for x, y in points)


def fit_bounds(layout: Layout) -> tuple[float, float, float, float]:
    """(left, top, width, height) the frontend fits: nodes with title bars, and groups, padded."""
    rects = [box.rect for box in layout.boxes.values()]
    rects += [(x, y, x + width, y + height) for _, _, (x, y, width, height) in layout.groups]
    left, top = min(r[0] for r in rects) - FIT_PADDING, min(r[1] for r in rects) - FIT_PADDING
    return left, top, max(r[2] for r in rects) + FIT_PADDING - left, max(r[3] for r in rects) + FIT_PADDING - top


def fit_view_zoom(layout: Layout, canvas: tuple[int, int] = CANVAS_1080P, extra_width: float = 0) -> float:
    """The zoom the frontend's "fit view" picks for this layout (made `extra_width` wider) on a canvas of `canvas`
    pixels."""
    _, _, width, height = fit_bounds(layout)
    return min(FIT_ZOOM * canvas[0] / (width + extra_width), FIT_ZOOM * canvas[1] / height)


def widget_areas(layout: Layout, nodes: dict[int, Placed]) -> dict[int, tuple[float, float, float, float]]:
    """(left, top, right, bottom) of each node's title bar and widget rows: what must not hide under the minimap."""
    return {node_id: (box.x, box.y - TITLE_HEIGHT, box.x + box.width, box.y + nodes[node_id].widgets_bottom())
            for node_id, box in layout.boxes.items()}


def widget_areas_on_screen(layout: Layout, nodes: dict[int, Placed], view: dict) -> dict[int, tuple[float, ...]]:
    """`widget_areas` in canvas pixels when the canvas shows `view` (`extra.ds`: scale and offset)."""
    scale, (offset_x, offset_y) = view["scale"], view["offset"]
    return {node_id: ((left + offset_x) * scale, (top + offset_y) * scale, (right + offset_x) * scale,
                      (bottom + offset_y) * scale)
            for node_id, (left, top, right, bottom) in widget_areas(layout, nodes).items()}


def off_canvas(layout: Layout, nodes: dict[int, Placed], view: dict, canvas: tuple[int, int]) -> list[int]:
    """Nodes whose title or widgets reach beyond the canvas when it shows `view` (a pan away)."""
    return [node_id for node_id, (left, top, right, bottom) in widget_areas_on_screen(layout, nodes, view).items()
            if left < 0 or top < 0 or right > canvas[0] or bottom > canvas[1]]


def minimap_rect(canvas: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the minimap in canvas pixels."""
    right, bottom = canvas[0] - MINIMAP_FROM_CORNER[0], canvas[1] - MINIMAP_FROM_CORNER[1]
    return right - MINIMAP_SIZE[0], bottom - MINIMAP_SIZE[1], right, bottom


def under_minimap(layout: Layout, nodes: dict[int, Placed], view: dict, canvas: tuple[int, int]) -> list[int]:
    """Nodes whose title or widgets the minimap covers when the canvas shows `view`."""
    minimap = minimap_rect(canvas)
    return [node_id for node_id, area in widget_areas_on_screen(layout, nodes, view).items()
            if rects_intersect(area, minimap)]


def opening_view(layout: Layout, nodes: dict[int, Placed], canvas: tuple[int, int] = CANVAS_768P) -> dict:
    """The view (`extra.ds`: scale and offset) a template opens at on a laptop's canvas (1366 x 768 window): the graph
    from its top-left corner, at the zoom that shows it whole where that is READABLE_ZOOM or more, else at
    READABLE_ZOOM (what lies lower is a scroll away), and for a graph wider than the canvas at READABLE_ZOOM at the
    zoom that shows its whole width. Of the zooms from there down (to READABLE_ZOOM, or by at most MAX_VIEW_STEPS
    steps of 0.005 for the wide graph), the largest at which the minimap covers no node's title or widgets."""
    left, top, width, height = fit_bounds(layout)
    across = min(1.0, (canvas[0] - 2 * VIEW_MARGIN) / width)
    whole = min(across, (canvas[1] - 2 * VIEW_MARGIN) / height)
    readable = round(READABLE_ZOOM * 1000)
    scale = math.floor(across * 1000) if across < READABLE_ZOOM else max(math.floor(whole * 1000), readable)
    lowest = scale - 5 * MAX_VIEW_STEPS if across < READABLE_ZOOM else readable
    views = []
    for zoom_milli in range(scale, lowest - 1, -5):
        # the frontend keeps the offset as float32: whole pixels and a short scale survive a save unchanged
        zoom = zoom_milli / 1000
        views.append({"scale": zoom, "offset": [round(VIEW_MARGIN / zoom - left), round(VIEW_MARGIN / zoom - top)]})
        if not under_minimap(layout, nodes, views[-1], canvas):
            return views[-1]
    return views[0]
