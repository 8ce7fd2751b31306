"""Named kernels that people reach for: offered by the web page, the CLI and GET /v1/kernels."""

from typing import NamedTuple


class Kernel(NamedTuple):
    label: str
    matrix: list[list[float]]


KERNELS: dict[str, Kernel] = {
    "edge": Kernel("Vertical edges, the seed's [1, -1]", [[1.0, -1.0]]),
    "edge-transposed": Kernel("Horizontal edges, [1, -1] transposed", [[1.0], [-1.0]]),
    "sobel-x": Kernel("Sobel, x gradient", [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]),
    "sobel-y": Kernel("Sobel, y gradient", [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]),
    "laplacian": Kernel("Laplacian", [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
    "box-blur": Kernel("Box blur, 3 x 3", [[1 / 9] * 3 for _ in range(3)]),
}
