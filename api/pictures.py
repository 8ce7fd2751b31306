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


# The colour scale spans these percentiles of the outputs that matter: a few extreme elements (a photo's
# strongest edges, a hot pixel) would otherwise squeeze every other one into a few shades; beyond, colours clip.
ROBUST_PERCENTILES = (1.0, 99.0)


def unpadded(
    input_shape: tuple[int, int], kernel_shape: tuple[int, int], padding: tuple[int, int], stride: tuple[int, int]
) -> tuple[slice, slice]:
    """The output rows and columns whose windows lie wholly inside the input, none of their taps on padding.

    Output index i covers padded positions i * step to i * step + kernel - 1; inside the input when
    i * step >= pad and i * step + kernel <= pad + size.
    """
    window = []
    for size, kernel, pad, step in zip(input_shape, kernel_shape, padding, stride, strict=True):
        first, last = -(-pad // step), (pad + size - kernel) // step
        window.append(slice(first, max(first, last + 1)))  # empty when no window fits inside
    return tuple(window)


def output_png(output: np.ndarray, window: tuple[slice, slice] = (slice(None), slice(None))) -> bytes:
    """`output` as a PNG, one pixel per element, its colour scale taken from the elements inside `window`.

    Zero padding gives border elements that compare the image with black (a bright frame around an edge map,
    say); only the elements of `window` (see `unpadded`), or all of them if it is empty, set the scale, from
    their ROBUST_PERCENTILES. The channels of an O x oh x ow output stand side by side on one scale, a white
    column apart.
    """
    inside = output[..., window[0], window[1]]
    sample = inside if inside.size else output
    if output.min() < 0 < output.max():
        bound = _percentile(np.abs(sample), ROBUST_PERCENTILES[1]) or float(np.abs(output).max())
        colours = SIGNED_MAP((np.clip(output / bound, -1, 1) + 1) / 2, bytes=True)[..., :3]
    else:
        low, high = (_percentile(sample, percent) for percent in ROBUST_PERCENTILES)
        if high <= low:
            low, high = float(output.min()), float(output.max())
        span = high - low
        scaled = np.clip((output - low) / span, 0, 1) if span > 0 else np.zeros_like(output)
        colours = UNSIGNED_MAP(scaled, bytes=True)[..., 0]  # grey: one channel holds it all
    if output.ndim == 3:
        separator = np.full((colours.shape[1], 1, *colours.shape[3:]), 255, dtype=np.uint8)
        colours = np.concatenate([part for channel in colours for part in (channel, separator)][:-1], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(colours)).save(buffer, format="PNG")
    return buffer.getvalue()


def _percentile(values: np.ndarray, percent: float) -> float:
    """An element of `values` at that percentile (min and max for a handful of them: none is made up)."""
    return float(np.percentile(values, percent, method="closest_observation"))


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
