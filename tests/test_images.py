"""Images through the API: PNG and JPEG uploads as correlation inputs, outputs as PNG, loss curves as SVG and PNG."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from api import pictures
from tests.seed import EDGE_IMAGE, EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import wait_for_job
from tests.test_bad_input import queued_state
from tests.test_jobs_api import correlate, train

pytestmark = pytest.mark.usefixtures("worker")

CORRELATIONS = "/v1/correlations"
EDGE_PIXELS = np.array(EDGE_IMAGE)  # 1 is white, 0 black


def encoded(pixels: np.ndarray, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def upload(client, image: bytes | list[bytes], **fields):
    images = image if isinstance(image, list) else [image]
    form = {name: str(value) for name, value in fields.items()}
    form["image"] = [(io.BytesIO(data), f"picture{index}.png") for index, data in enumerate(images)]
    return client.post(CORRELATIONS, data=form, content_type="multipart/form-data")


def correlate_image(client, image: bytes, **fields) -> dict:
    response = upload(client, image, **fields)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


def test_an_8_bit_png_is_the_seed_edge_image_scaled_to_0_1(client):
    job = correlate_image(client, encoded((EDGE_PIXELS * 255).astype(np.uint8)), kernel="[[1, -1]]")
    assert job["result"] == {"output": EDGES, "shape": [6, 7]}


def test_a_16_bit_png_gives_the_same_numbers_as_an_8_bit_one(client):
    sixteen_bit = (EDGE_PIXELS * 65535).astype(np.uint16)
    assert Image.open(io.BytesIO(encoded(sixteen_bit))).mode.startswith("I")
    job = correlate_image(client, encoded(sixteen_bit), kernel="[[1, -1]]")
    assert job["result"]["output"] == EDGES


def test_a_colour_jpeg_becomes_its_grey_luminance(client):
    grey = np.full((8, 8, 3), 128, dtype=np.uint8)
    job = correlate_image(client, encoded(grey, "JPEG", quality=95), kernel="[[1]]")
    assert np.allclose(job["result"]["output"], 128 / 255, atol=2 / 255)


def test_exif_orientation_turns_the_image_upright(client):
    """A 16 x 8 picture, left half white, stored with orientation 6 (shown turned 90 degrees clockwise)."""
    stored = np.zeros((8, 16), dtype=np.uint8)
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    job = correlate_image(client, encoded(stored, "JPEG", quality=100, exif=exif), kernel="[[1]]")
    upright = np.array(job["result"]["output"])
    assert upright.shape == (16, 8)  # turned: now tall
    assert upright[:6].min() > 0.9 and upright[-6:].max() < 0.1  # the white left half is now on top


def test_options_are_json_fields_and_a_kernel_may_name_a_preset(client):
    image = encoded((EDGE_PIXELS * 255).astype(np.uint8))
    named = correlate_image(client, image, kernel="edge", device="cpu")
    assert named["result"]["output"] == EDGES and named["queue"] == "cpu"
    options = {"kernel": [[1, -1]], "padding": [0, 1], "stride": 2, "bias": 0.5}
    as_json = correlate(client, {"input": EDGE_IMAGE, **options})
    as_form = correlate_image(client, image, **{name: json.dumps(value) for name, value in options.items()})
    assert as_form["result"] == as_json["result"] and as_form["result"]["shape"] == [3, 5]


def test_a_seed_3x3_output_png_spans_the_full_grey_range(client):
    job = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    response = client.get(f"/v1/jobs/{job['id']}/output.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    picture = Image.open(io.BytesIO(response.data))
    assert picture.mode == "L" and picture.size == (2, 2)
    scaled = (np.array(Y_3X3) - 19) / (43 - 19) * 255  # 19, 25, 37, 43 from black to white
    assert np.abs(np.array(picture) - scaled).max() <= 1  # the colour map's 256 steps


def test_a_signed_output_png_is_blue_below_zero_white_at_zero_red_above(client):
    job = correlate(client, {"input": EDGE_IMAGE, "kernel": [[1, -1]], "result_format": "base64"})
    picture = np.array(Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/output.png").data)))
    assert picture.shape == (6, 7, 3)
    red, white, blue = picture[0, 1], picture[0, 0], picture[0, 5]  # outputs 1, 0 and -1
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50 and white.min() > 240


def a_photo() -> np.ndarray:
    """80 x 120, like a photo: a bright sky darkening downwards, three dark objects, a little sensor noise."""
    rows, columns = np.mgrid[0:80, 0:120]
    picture = 0.9 - 0.15 * rows / 80
    picture[20:70, 10:35] = 0.45
    picture[30:70, 50:70] = 0.6
    picture[(rows - 45) ** 2 + (columns - 95) ** 2 < 15**2] = 0.35
    picture += np.random.default_rng(7).normal(0, 0.01, picture.shape)
    return (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)


def test_the_readmes_photo_example_shows_clear_edges_whatever_the_padded_border(client):
    """The README's edge detection ([1, -1], padding [0, 1]): its zero-padded border columns compare the bright
    sky with black and are the largest outputs by far; the colour scale must come from the edges inside."""
    photo = a_photo()
    job = correlate_image(client, encoded(photo), kernel="[[1, -1]]", padding="[0, 1]")
    output = np.array(job["result"]["output"])
    assert output.shape == (80, 121) and abs(output[:, [0, -1]]).min() > 0.7  # the border: sky against black
    picture = np.array(Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/output.png").data))).astype(int)
    ink = 255 - picture.min(axis=2)  # 0 for white (no edge), 255 for full red or full blue
    inside, strength = ink[:, 1:-1], abs(output[:, 1:-1])
    edges, flat = strength > 0.1, strength < 0.05
    print(f"\nink: edges {np.median(inside[edges]):.0f}, flat areas {np.median(inside[flat]):.0f} of 255")
    assert np.median(inside[edges]) >= 200  # clearly coloured (scaled to the border, they were about 130)
    assert np.median(inside[flat]) <= 40  # and the flat areas stay near white


@pytest.mark.parametrize(
    ("input_shape", "kernel_shape", "padding", "stride", "inside"),
    [
        ((6, 8), (1, 2), (0, 1), (1, 1), ((0, 6), (1, 8))),  # the README's: all rows, not the two border columns
        ((10, 10), (3, 3), (1, 1), (2, 2), ((1, 5), (1, 5))),  # output 5 x 5: its first row and column touch padding
        ((3, 3), (2, 2), (0, 0), (1, 1), ((0, 2), (0, 2))),  # no padding: everything
        ((1, 1), (5, 5), (2, 2), (1, 1), ((2, 2), (2, 2))),  # every window touches padding: none
    ],
)
def test_the_colour_scale_leaves_out_exactly_the_outputs_that_touch_padding(
    input_shape, kernel_shape, padding, stride, inside
):
    window = pictures.unpadded(input_shape, kernel_shape, padding, stride)
    assert [(part.start, part.stop) for part in window] == list(inside)


def test_output_channels_stand_side_by_side_on_one_scale(client):
    kernels = [[[[1.0]]], [[[2.0]]]]  # two output channels: the input, and twice the input
    job = correlate(client, {"input": [[0.0, 1.0], [2.0, 4.0]], "kernel": kernels})
    picture = np.array(Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/output.png").data)))
    assert picture.shape == (2, 5)  # 2 + a white column + 2
    assert picture[:, 2].tolist() == [255, 255]
    assert picture[1, 1] < picture[1, 4] == 255 and picture[0, 0] == 0  # one scale: 4 is mid-grey, 8 white


def test_output_png_is_only_for_a_succeeded_correlation(client):
    training = train(client, {"input": EDGE_IMAGE, "target_kernel": [[1, -1]], "epochs": 2})
    response = client.get(f"/v1/jobs/{training['id']}/output.png")
    assert response.status_code == 404 and "only correlations" in response.get_json()["detail"]
    failed = correlate(client, {"input": [[3e38, 3e38]], "kernel": [[3e38, 3e38]]})
    assert failed["status"] == "failed"
    response = client.get(f"/v1/jobs/{failed['id']}/output.png")
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert "is failed" in response.get_json()["detail"]


def test_the_loss_curve_is_drawn_as_svg_or_png_on_a_linear_or_log_scale(client):
    job = train(client, {"input": EDGE_IMAGE, "target_kernel": [[1, -1]], "epochs": 10})
    svg = client.get(f"/v1/jobs/{job['id']}/loss.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"<svg" in svg.data and b"loss over 10 epochs" in svg.data
    assert svg.data == client.get(f"/v1/jobs/{job['id']}/loss.svg").data  # no timestamp: the same bytes
    log = client.get(f"/v1/jobs/{job['id']}/loss.svg?scale=log").data
    assert b"loss (log scale)" in log and b"loss (log scale)" not in svg.data
    png = client.get(f"/v1/jobs/{job['id']}/loss.png")
    assert png.mimetype == "image/png" and Image.open(io.BytesIO(png.data)).size == (640, 360)
    bad = client.get(f"/v1/jobs/{job['id']}/loss.svg?scale=cubic")
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["loc"] == "/scale"
    correlation = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    assert client.get(f"/v1/jobs/{correlation['id']}/loss.svg").status_code == 404


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb as far as a decoder can tell."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


GOOD_PNG = encoded((EDGE_PIXELS * 255).astype(np.uint8))
NOISE_PNG = encoded(np.random.default_rng(0).integers(0, 256, (50, 50), dtype=np.uint8))  # compresses badly
GIF = io.BytesIO()
Image.new("L", (4, 4)).save(GIF, format="GIF")

BAD_UPLOADS = [
    ("not an image", [b"hello"], {"kernel": "[[1]]"}, 422, "/image"),
    ("a GIF", [GIF.getvalue()], {"kernel": "[[1]]"}, 422, "/image"),
    ("a truncated PNG", [NOISE_PNG[: len(NOISE_PNG) // 2]], {"kernel": "[[1]]"}, 422, "/image"),
    ("more pixels than allowed", [encoded(np.zeros((100, 101), np.uint8))], {"kernel": "[[1]]"}, 413, "/image"),
    ("a decompression bomb", [png_claiming(100_000, 100_000)], {"kernel": "[[1]]"}, 413, "/image"),
    ("no image", [], {"kernel": "[[1]]"}, 422, "/image"),
    ("two images", [GOOD_PNG, GOOD_PNG], {"kernel": "[[1]]"}, 422, "/image"),
    ("no kernel", [GOOD_PNG], {}, 422, "/kernel"),
    ("a kernel that is not JSON", [GOOD_PNG], {"kernel": "[[1, -1]"}, 422, "/kernel"),
    ("a kernel that is neither JSON nor a preset", [GOOD_PNG], {"kernel": "sobel"}, 422, "/kernel"),
    ("a ragged kernel", [GOOD_PNG], {"kernel": "[[1, 2], [3]]"}, 422, "/kernel/1"),
    ("negative padding", [GOOD_PNG], {"kernel": "[[1]]", "padding": "[0, -1]"}, 422, "/padding/1"),
    ("an input field beside the image", [GOOD_PNG], {"kernel": "[[1]]", "input": "[[1]]"}, 422, "/input"),
    ("an unknown field", [GOOD_PNG], {"kernel": "[[1]]", "colour": "red"}, 422, "/colour"),
    ("an unknown result_format", [GOOD_PNG], {"kernel": "[[1]]", "result_format": "xml"}, 422, "/result_format"),
    ("an unknown device", [GOOD_PNG], {"kernel": "[[1]]", "device": "tpu"}, 422, "/device"),
]


@pytest.mark.parametrize("name,images,fields,status,location", BAD_UPLOADS, ids=[case[0] for case in BAD_UPLOADS])
def test_a_bad_upload_is_refused_at_its_field_and_changes_nothing(
    client, redis_server, name, images, fields, status, location
):
    redis = redis_server.client()
    before = queued_state(redis)
    response = upload(client, images, **fields)
    assert response.status_code == status and response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert [error["loc"] for error in problem["errors"]] == [location], problem
    assert queued_state(redis) == before


def test_a_json_only_route_names_both_content_types_it_takes(client):
    response = client.post(CORRELATIONS, data=b"x", content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json()["detail"] == (
        "send application/json or multipart/form-data (an image, or .npy files), not text/plain"
    )
