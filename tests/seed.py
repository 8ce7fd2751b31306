"""The seed's worked examples as data, shared by the core tests, the API tests and the demo."""

X_3X3 = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
K_2X2 = [[0.0, 1.0], [2.0, 3.0]]
Y_3X3 = [[19.0, 25.0], [37.0, 43.0]]

# A 6 x 8 white image with a black stripe in columns 2..5, and the [1, -1] vertical-edge kernel.
EDGE_IMAGE = [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0] for _ in range(6)]
EDGE_KERNEL = [[1.0, -1.0]]
EDGES = [[0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0] for _ in range(6)]
TRANSPOSED_EDGES = [[0.0] * 5 for _ in range(8)]


def transpose(matrix):
    return [list(column) for column in zip(*matrix, strict=True)]
