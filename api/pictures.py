"""Jobs drawn as pictures: a correlation's output as a PNG, a training's loss curve as SVG or PNG.

matplotlib does the drawing (its colour maps, its figures on the Agg canvas,
never pyplot, whose global state is not thread-safe). It costs an API process
about 30 MB and most of a second to import, so the views import this module
only when a picture is asked for.
"""

import io

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from PIL import Image

# Unsigned outputs in grey, black the least and white the most; signed ones blue below zero, white at zero, red above.
UNSIGNED_MAP = colormaps["gray"]
SIGNED_MAP = colormaps["RdBu_r"]


def output_png(output: np.ndarray) -> bytes:
    """`output` as a PNG, one pixel per element, scaled to the full range of its colour map.

    The channels of an O x oh x ow output stand side by side on one scale, a white column apart.
    """
    low, high = float(output.min()), float(output.max())
    if low < 0 < high:
        bound = max(-low, high)
        colours = SIGNED_MAP((output / bound + 1) / 2, bytes=True)[..., :3]
    else:
        span = high - low
        scaled = (output - low) / span if span > 0 else np.zeros_like(output)
        colours = UNSIGNED_MAP(scaled, bytes=True)[..., 0]  # grey: one channel holds it all
    if output.ndim == 3:
        separator = np.full((colours.shape[1], 1, *colours.shape[3:]), 255, dtype=np.uint8)
        colours = np.concatenate([part for channel in colours for part in (channel, separator)][:-1], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(colours)).save(buffer, format="PNG")
    return buffer.getvalue()


def loss_chart(losses: list[float], log_scale: bool, image_format: str) -> bytes:
    """The loss per epoch as an SVG or PNG line chart (log scale: zero losses are left out, as log cannot show them)."""
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.add_subplot()
    epochs = np.arange(1, len(losses) + 1)
    axes.plot(epochs, losses, color="#1f5fa8", linewidth=1.5, marker="." if len(losses) <= 50 else None)
    if log_scale:
        axes.set_yscale("log", nonpositive="mask")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (log scale)" if log_scale else "loss")
    axes.set_title(f"loss over {len(losses)} epoch{'s' if len(losses) != 1 else ''}")
    axes.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    # SVG text as text (smaller, selectable); no date and fixed ids, so the same losses draw the same bytes.
    no_date = {"Date": None} if image_format == "svg" else None
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "convq"}):
        figure.savefig(buffer, format=image_format, dpi=100, metadata=no_date)
    return buffer.getvalue()
