"""Starting tops for a template whose links `canvas_layout.arrange` chases down without end: simulated annealing over
the tops of its nodes, in its columns and groups as `build_workflows.py` sets them, for the lowest layout in which no
two nodes or groups overlap and no link runs under a node.

    python tools/search_tops.py "X-Portrait with core samplers (Guider)" [--iterations 60000] [--seed 1]
        [--from-scratch] [--rise-cost 0.05]

prints the tops to write into that template's `Canvas.tops` in build_workflows.py, which then checks them like any
layout (`arrange`, the tests). It takes minutes: each step lays the graph out and checks every link, as the builder
does. A result with problems left says so; another seed, more iterations or other columns may find one without.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))

import canvas_layout  # noqa: E402
from build_workflows import WORKFLOWS, Canvas, definitions, graph_links, placed_nodes  # noqa: E402

PROBLEM_COST = 400  # graph px of height one problem (an overlap, a link under a node) weighs
LINK_RISE_COST = 0.05  # per graph px that links climb or fall: of two layouts as high, the one with straighter links
# (raised with --rise-cost where a graph's many links should run straighter at the price of some height)
MOVE = 60  # most graph px a step moves a node's top, in MOVE_SHARE of the steps; the others put it anywhere from 0
MOVE_SHARE = 0.8  # to RANGE, out of a corner that small moves cannot leave
RANGE = 1100
START_TEMPERATURE = 200.0


def problems(layout: canvas_layout.Layout, placed: dict[int, canvas_layout.Placed],
             links: list[canvas_layout.Link]) -> int:
    """Overlapping nodes, overlapping groups and (link, node) pairs where a link runs under a node."""
    return (len(canvas_layout.overlapping_nodes(layout.boxes.values())) + len(canvas_layout.overlapping_groups(layout))
            + len(canvas_layout.links_under_nodes(layout, placed, links)))


def cost(canvas: Canvas, placed: dict[int, canvas_layout.Placed], links: list[canvas_layout.Link],
         tops: dict[int, float], rise_cost: float = LINK_RISE_COST) -> tuple[float, int]:
    """(what the search lowers, problems) for the layout `place` makes from these tops."""
    layout = canvas_layout.place(canvas.groups, placed, tops)
    found = problems(layout, placed, links)
    _, _, _, height = canvas_layout.fit_bounds(layout)
    rise = 0.0
    for link in links:
        (_, start_y), (_, end_y) = canvas_layout.link_ends(link, layout, placed)
        rise += abs(start_y - end_y)
    return found * PROBLEM_COST + height + rise_cost * rise, found


def search(canvas: Canvas, iterations: int, seed: int, from_scratch: bool = False,
           rise_cost: float = LINK_RISE_COST) -> tuple[dict[int, int], int]:
    """The best tops found, starting from where the builder places the nodes now (or from no tops), and the problems
    left with them."""
    placed = placed_nodes(canvas, definitions())
    links = graph_links(canvas)
    draw = random.Random(seed)
    node_ids = sorted(placed)
    current: dict[int, float] = {}
    if not from_scratch:  # where the builder puts the nodes now, its settle rounds included
        layout = canvas_layout.arrange(canvas.groups, placed, links, canvas.tops)
        current = {node_id: box.y for node_id, box in layout.boxes.items()}
    current_cost, _ = cost(canvas, placed, links, current, rise_cost)
    best, best_cost = dict(current), current_cost
    for step in range(iterations):
        temperature = START_TEMPERATURE * (1 - step / iterations) + 1
        trial = dict(current)
        node_id = draw.choice(node_ids)
        if draw.random() < MOVE_SHARE:
            trial[node_id] = max(0, trial.get(node_id, 0) + draw.randint(-MOVE, MOVE))
        else:
            trial[node_id] = draw.randrange(0, RANGE, 2)
        trial_cost, _ = cost(canvas, placed, links, trial, rise_cost)
        if trial_cost <= current_cost or draw.random() < math.exp((current_cost - trial_cost) / temperature):
            current, current_cost = trial, trial_cost
            if trial_cost < best_cost:
                best, best_cost = dict(trial), trial_cost
    # the tops as placed: each node where `place` put it, in whole pixels
    layout = canvas_layout.place(canvas.groups, placed, best)
    tops = {node_id: math.ceil(box.y) for node_id, box in layout.boxes.items()}
    return tops, cost(canvas, placed, links, tops)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", choices=sorted(WORKFLOWS), help="the template's name, as in build_workflows.py")
    parser.add_argument("--iterations", type=int, default=60000, help="annealing steps (default: 60000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--from-scratch", action="store_true", help="start from no tops, not from the template's own")
    parser.add_argument("--rise-cost", type=float, default=LINK_RISE_COST,
                        help=f"what one px of links climbing or falling weighs, in px of height "
                             f"(default: {LINK_RISE_COST})")
    arguments = parser.parse_args()
    tops, left = search(WORKFLOWS[arguments.template](), arguments.iterations, arguments.seed, arguments.from_scratch,
                        arguments.rise_cost)
    print(f"tops = {tops}")
    if left:
        print(f"{left} problems left (overlaps or links under nodes): try another seed or more iterations")
        sys.exit(1)


if __name__ == "__main__":
    main()
