"""The web page at /, in a real browser (the system's Chromium, driven by Playwright) against the live stack.

Each scenario keeps a full-page screenshot in test-artifacts/screenshots/, and fails on any console error
(a script error, a refused Content-Security-Policy, a file that did not load) it did not expect.
"""

import json
import re
import shutil
from dataclasses import dataclass, field

import pytest
import requests
import torch
import torch.nn.functional as F
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route, expect, sync_playwright

from tests.seed import EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import REPO, wait_until

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The chapter's two-channel example (its output is [[56, 72], [104, 120]]), and a 3 x 2 x 2 x 2 kernel of three
# output channels: its kernel, then +1 and +2.
TWO_CHANNEL_INPUT = [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
TWO_CHANNEL_KERNEL = [[[0, 1], [2, 3]], [[1, 2], [3, 4]]]
THREE_OUTPUT_KERNEL = [[[[v + k for v in row] for row in channel] for channel in TWO_CHANNEL_KERNEL] for k in range(3)]
# Enough epochs that the training lasts a second or more: its events then stream in over many chunks.
EPOCHS = 10_000  # MAX_EPOCHS: 5,000 ran in about half a second on a fast day, too quick for three redraws
# Records every point count the loss chart shows, in the page, so the test sees each step of its growth.
RECORD_POINT_COUNTS = """() => {
  window.pointCounts = [];
  new MutationObserver((changes) => {
    for (const change of changes) window.pointCounts.push(Number(change.target.dataset.points));
  }).observe(document.body, { subtree: true, attributeFilter: ["data-points"] });
}"""
# Form controls without a <label> (hidden ones too: a choice shows them), and buttons without a name.
UNLABELLED_CONTROLS = """() => [
  ...[...document.querySelectorAll("input, select, textarea")].filter((control) => control.labels.length === 0),
  ...[...document.querySelectorAll("button")].filter((button) => !button.textContent.trim()),
].map((control) => control.outerHTML)"""


@dataclass
class Visit:
    """The page, open at /, and what went wrong in it: console errors, uncaught exceptions, static files not loaded."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def section(self, name: str):
        return self.page.get_by_role("region", name=name, exact=True)

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)

    def assert_no_problems(self, expected: str | None = None) -> None:
        """No problem but those matching the regular expression `expected`."""
        unexpected = [problem for problem in self.problems if expected is None or not re.search(expected, problem)]
        assert unexpected == []


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    assert executable, "the browser tests drive the system's Chromium: run bin/install-chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def visit(browser: Browser, live_stack):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 1280, "height": 900})
    opened = Visit(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.problems.append(f"console: {message.text}")

    def on_response(response: Response) -> None:
        if "/static/" in response.url and response.status not in (200, 304):  # 304: revalidated on a reload
            opened.problems.append(f"{response.status} for {response.url}")

    opened.page.on("console", on_console)
    opened.page.on("pageerror", lambda error: opened.problems.append(f"uncaught: {error}"))
    opened.page.on("response", on_response)
    opened.page.goto("/")
    yield opened
    context.close()


def test_the_page_is_served_with_a_strict_content_security_policy(live_stack):
    response = requests.get(f"{live_stack.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "style-src 'self'" in policy and "unsafe" not in policy
    assert "<script>" not in response.text  # every script is a module file: no inline code


def test_the_page_loads_every_file_it_needs(visit):
    loaded = {request.split("/static/", 1)[1] for request in _static_requests(visit.page)}
    modules = {f"app/{name}.js" for name in ("app", "api", "fields", "heatmap", "jobs", "losschart")}
    styles = {"app/style.css", "vendor/uplot-1.6.32/uPlot.min.css"}
    assert modules | styles | {"vendor/uplot-1.6.32/uPlot.esm.js"} <= loaded
    # The presets of GET /v1/kernels are offered, so the modules ran against the API.
    expect(visit.page.get_by_label("Kernel preset").locator("option")).to_have_count(7)
    unlabelled = visit.page.evaluate(UNLABELLED_CONTROLS)
    assert unlabelled == []
    visit.screenshot("page")
    visit.assert_no_problems()


# WCAG's contrast ratio between every visible text element's colour and the background it sits on (the nearest
# ancestor with an opaque background): how many elements were checked, and those below 4.5:1, the level AA asks of
# normal text.
LOW_CONTRAST = """() => {
  const channels = (colour) => colour.match(/[\\d.]+/g).map(Number);
  const luminance = (colour) => {
    const [r, g, b] = channels(colour).slice(0, 3).map((value) => {
      const c = value / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = getComputedStyle(node).backgroundColor;
      if (channels(colour)[3] !== 0) return colour;
    }
    return "rgb(255, 255, 255)";
  };
  const texts = [...document.querySelectorAll("body *")].filter((element) =>
    [...element.childNodes].some((node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim())
    && element.checkVisibility() && !element.closest("td, .legend, .uplot"));
  const low = texts.map((element) => {
    const [light, dark] = [luminance(getComputedStyle(element).color), luminance(background(element))]
      .sort((a, b) => b - a);
    return { text: element.textContent.trim().slice(0, 40), ratio: (light + 0.05) / (dark + 0.05) };
  }).filter(({ ratio }) => ratio < 4.5);
  return { checked: texts.length, low };
}"""


def test_every_text_on_the_page_has_aa_contrast(visit):
    """Heatmap cells (numbers on their own colour scale) and the chart's canvas text are left out."""
    contrast = visit.page.evaluate(LOW_CONTRAST)
    assert contrast["checked"] > 30 and contrast["low"] == []  # headings, labels, hints, buttons, the jobs table
    visit.assert_no_problems()


def test_the_correlation_form_works_from_the_keyboard_alone(visit):
    """Tab from field to field, type the seed's 3 x 3 example, and run it with Enter on the button."""
    page = visit.page
    visit.section("Correlation").get_by_label("Input matrix").focus()
    typed, focused = {"Input matrix": str(X_3X3), "Kernel": str(K_2X2)}, []
    for _ in range(20):
        label = page.evaluate("() => document.activeElement.labels?.[0]?.textContent.trim() ?? ''")
        name = page.evaluate("() => document.activeElement.textContent.trim()")
        focused.append(label or name)
        if label in typed:
            page.keyboard.press("Control+A")
            page.keyboard.type(typed.pop(label))
        if name == "Run correlation":
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid"  # the focus is visible
            page.keyboard.press("Enter")
            break
        page.keyboard.press("Tab")
    assert typed == {} and focused[-1] == "Run correlation", focused
    output = visit.section("Correlation").locator("figure", has_text="Output")
    expect(output.locator("td")).to_have_text([f"{value:g}" for row in Y_3X3 for value in row])
    visit.assert_no_problems()


def test_runs_the_seed_3x3_example_and_shows_the_output_heatmap(visit):
    correlation = visit.section("Correlation")
    correlation.get_by_label("Input matrix").fill(str(X_3X3))
    correlation.get_by_label("Kernel", exact=True).fill(str(K_2X2))
    correlation.get_by_role("button", name="Run correlation").click()
    output = correlation.locator("figure", has_text="Output")
    expect(output.locator("td")).to_have_text([f"{value:g}" for row in Y_3X3 for value in row])
    expect(output).to_contain_text("min 19")
    expect(output).to_contain_text("max 43")
    expect(output.locator("td").first).to_have_attribute("title", "row 0, column 0: 19")
    expect(correlation.get_by_role("status")).to_contain_text("succeeded")
    visit.screenshot("seed-3x3-correlation")
    visit.assert_no_problems()


def test_correlates_the_chapters_two_channel_example_with_a_heatmap_per_channel(visit):
    correlation = visit.section("Correlation")
    correlation.get_by_label("Input matrix").fill(json.dumps(TWO_CHANNEL_INPUT))
    correlation.get_by_label("Kernel", exact=True).fill(json.dumps(TWO_CHANNEL_KERNEL))
    correlation.get_by_role("button", name="Run correlation").click()
    output = correlation.locator("figure.heatmap", has_text="Output")
    expect(output.locator("td")).to_have_text(["56", "72", "104", "120"])
    expect(output.locator("figure.channel")).to_have_count(0)  # one output: a plain matrix
    for title, shape in (("Input", "2 × 3 × 3"), ("Kernel", "2 × 2 × 2")):
        array = correlation.locator("figure.heatmap", has_text=title)
        expect(array.locator("figcaption").first).to_have_text(f"{title}, {shape}")
        expect(array.locator("figure.channel figcaption")).to_have_text(["channel 0", "channel 1"])
        expect(array.locator(".legend")).to_have_count(1)  # one colour scale for both channels
    inputs = correlation.locator("figure.heatmap", has_text="Input")
    expect(inputs.locator(".legend")).to_have_text(re.compile("min 0.*max 9"))
    one_in_channel_0 = inputs.locator("figure.channel", has_text="channel 0").locator("td").nth(1)
    one_in_channel_1 = inputs.locator("figure.channel", has_text="channel 1").locator("td").first
    expect(one_in_channel_1).to_have_attribute("title", "channel 1, row 0, column 0: 1")
    for cell in (one_in_channel_0, one_in_channel_1):
        expect(cell).to_have_text("1")
    colours = [
        cell.evaluate("cell => getComputedStyle(cell).backgroundColor") for cell in (one_in_channel_0, one_in_channel_1)
    ]
    assert colours[0] == colours[1]
    visit.screenshot("two-channel-correlation")
    visit.assert_no_problems()


def test_correlates_with_three_output_channels_and_a_bias_each(visit):
    expected = F.conv2d(
        torch.tensor([TWO_CHANNEL_INPUT], dtype=torch.float64),
        torch.tensor(THREE_OUTPUT_KERNEL, dtype=torch.float64),
        torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64),
    )[0]
    correlation = visit.section("Correlation")
    correlation.get_by_label("Input matrix").fill(json.dumps(TWO_CHANNEL_INPUT))
    correlation.get_by_label("Kernel", exact=True).fill(json.dumps(THREE_OUTPUT_KERNEL))
    correlation.get_by_label("Bias").fill("[1, 0, -1]")
    correlation.get_by_role("button", name="Run correlation").click()
    output = correlation.locator("figure.heatmap", has_text="Output")
    expect(output.locator("figcaption").first).to_have_text("Output, 3 × 2 × 2")
    channels = output.locator("figure.channel")
    expect(channels.locator("figcaption")).to_have_text(["channel 0", "channel 1", "channel 2"])
    expect(channels.first.locator("td")).to_have_text(["57", "73", "105", "121"])
    for index, values in enumerate(expected.tolist()):
        expect(channels.nth(index).locator("td")).to_have_text([f"{value:g}" for row in values for value in row])
    kernel = correlation.locator("figure.heatmap", has_text="Kernel")
    expect(kernel.locator(".channels")).to_have_count(3)  # a row of input channels per output channel
    captions = [f"out {out}, in {c}" for out in range(3) for c in range(2)]
    expect(kernel.locator("figure.channel figcaption")).to_have_text(captions)
    expect(kernel.locator("td").last).to_have_attribute("title", "out 2, in 1, row 1, column 1: 6")
    visit.screenshot("three-output-correlation")
    visit.assert_no_problems()


def test_trains_the_seed_edge_kernel_with_a_growing_loss_curve(visit):
    training = visit.section("Kernel training")
    training.get_by_role("button", name="Seed's edge example").click()
    training.get_by_label("Epochs").fill(str(EPOCHS))
    visit.page.evaluate(RECORD_POINT_COUNTS)
    training.get_by_role("button", name="Train kernel").click()
    learned = training.locator("figure", has_text="Learned kernel")
    expect(learned).to_be_visible(timeout=60_000)
    expect(training.locator(".plot")).to_have_attribute("data-points", str(EPOCHS))
    counts = visit.page.evaluate("window.pointCounts")
    assert counts == sorted(counts) and counts[-1] == EPOCHS
    assert len({count for count in counts if 0 < count < EPOCHS}) >= 3, f"the curve did not grow: {counts}"
    assert [float(cell) for cell in learned.locator("td").all_text_contents()] == pytest.approx([1, -1], abs=0.05)
    expect(training.locator("figure", has_text="True kernel").locator("td")).to_have_text(["1", "-1"])
    expect(training.locator(".progress")).to_contain_text(f"Finished: {EPOCHS} epochs, loss")
    final_loss = training.locator(".progress").text_content().rsplit(" ", 1)[1]
    # The legend shows the latest epoch and its loss without hovering (uPlot's own says "--" until hovered).
    expect(training.locator(".u-legend .u-value")).to_have_text([str(EPOCHS), final_loss])
    # The target the worker made from the true kernel, beside the input.
    target, given = (
        training.locator("figure.heatmap", has_text="Target output, 6 × 7"),
        training.locator("figure.heatmap", has_text="Input, 6 × 8"),
    )
    assert [float(cell) for cell in target.locator("td").all_text_contents()] == [v for row in EDGES for v in row]
    assert target.bounding_box()["y"] == given.bounding_box()["y"] < training.locator(".plot").bounding_box()["y"]
    expect(training.locator(".plot")).to_have_attribute("data-scale", "linear")
    training.get_by_label("Log scale").check()
    expect(training.locator(".plot")).to_have_attribute("data-scale", "log")
    expect(training.locator(".plot")).to_have_attribute("data-points", str(EPOCHS))
    expect(training.locator(".plot .u-axis")).not_to_have_count(0)
    visit.screenshot("seed-edge-training")

    training.get_by_label("Epochs").fill("20")  # the next training keeps the scale chosen
    training.get_by_role("button", name="Train kernel").click()
    expect(training.locator(".progress")).to_contain_text("Finished: 20 epochs, loss")
    expect(training.get_by_label("Log scale")).to_be_checked()
    expect(training.locator(".plot")).to_have_attribute("data-scale", "log")
    visit.screenshot("seed-edge-training-again-log-scale")
    visit.assert_no_problems()


def test_the_seed_example_trains_the_seeds_20_epochs(visit):
    training = visit.section("Kernel training")
    training.get_by_role("button", name="Seed's edge example").click()
    expect(training.get_by_label("Epochs")).to_have_value("20")
    expect(training.get_by_label("Learning rate")).to_have_value("0.03")


@pytest.mark.parametrize(
    ("device", "viewport", "least_margin"),
    [("desktop-1280", {"width": 1280, "height": 900}, 48), ("phone", {"width": 390, "height": 844}, 16)],
)
def test_the_page_reads_well_at_1280_px_and_on_a_phone(browser, live_stack, device, viewport, least_margin):
    context = browser.new_context(base_url=live_stack.url, viewport=viewport)
    page = context.new_page()
    page.goto("/")
    training = page.get_by_role("region", name="Kernel training", exact=True)
    training.get_by_role("button", name="Seed's edge example").click()
    training.get_by_role("button", name="Train kernel").click()
    expect(training.locator("figure", has_text="Learned kernel")).to_be_visible(timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"layout-{device}.png", full_page=True)
    width = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] == width[1], f"the page scrolls sideways: {width}"
    content = page.locator("main").bounding_box()
    assert content["x"] >= least_margin and viewport["width"] - (content["x"] + content["width"]) >= least_margin
    form, results = training.locator("form").bounding_box(), training.locator(".results").bounding_box()
    if viewport["width"] >= 1000:
        assert results["x"] >= form["x"] + form["width"]  # the results beside the form
    else:
        assert results["y"] >= form["y"] + form["height"]  # below it, each as wide as the phone allows
    context.close()


def test_trains_on_several_pairs_with_adam_until_the_tolerance(visit):
    true_kernel = torch.tensor([[[[1, -1], [0.5, 0]], [[0, 2], [-0.5, 1]]]], dtype=torch.float64)
    inputs = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).round(decimals=1)
    targets = F.conv2d(inputs, true_kernel).round(decimals=2)  # exact: tenths times halves
    pairs = [{"input": x.tolist(), "target": y.tolist()} for x, y in zip(inputs, targets, strict=True)]
    training = visit.section("Kernel training")
    training.get_by_label("Several pairs").check()
    expect(training.get_by_label("Input matrix")).to_be_hidden()
    training.get_by_label("Pairs", exact=True).fill(json.dumps(pairs))
    training.get_by_label("Kernel size").fill("[2, 2]")
    training.get_by_label("Learning rate").fill("0.05")
    training.get_by_label("Epochs").fill("2000")
    training.get_by_label("Optimizer").select_option("adam")
    expect(training.get_by_label("Momentum")).to_be_disabled()  # for the momentum optimizer only
    training.get_by_label("Loss", exact=True).select_option("mean")
    training.get_by_label("Tolerance").fill("1e-6")
    training.get_by_role("button", name="Train kernel").click()
    learned = training.locator("figure.heatmap", has_text="Learned kernel")
    expect(learned).to_be_visible(timeout=60_000)
    expect(learned.locator("figcaption").first).to_have_text("Learned kernel, 1 × 2 × 2 × 2")
    expect(learned.locator("figure.channel figcaption")).to_have_text(["out 0, in 0", "out 0, in 1"])
    cells = [float(cell) for cell in learned.locator("td").all_text_contents()]
    assert cells == pytest.approx(true_kernel.flatten().tolist(), abs=0.02)
    progress = training.locator(".progress")
    expect(progress).to_contain_text(re.compile(r"^Converged: stopped early at epoch \d+ of 2000: loss \S+ below"))
    stopped_at = re.search(r"epoch (\d+)", progress.text_content()).group(1)
    expect(training.locator(".plot")).to_have_attribute("data-points", stopped_at)  # the curve of every epoch run
    expect(training.locator("figure.heatmap", has_text="Input of pair 1 of 4").locator("figure.channel")).to_have_count(
        2
    )
    expect(training.locator("figure.heatmap", has_text="Target output of pair 1 of 4")).to_contain_text("1 × 5 × 5")
    expect(training.get_by_role("status")).to_contain_text(re.compile(r"succeeded on cpu after"))
    expect(visit.section("Recent jobs").locator("tbody tr").first.locator("td").nth(3)).to_have_text("cpu")
    visit.screenshot("pairs-training")
    visit.assert_no_problems()


def test_correlates_an_uploaded_png_and_shows_the_output_image(visit, tmp_path):
    square = tmp_path / "square.png"
    image = Image.new("L", (40, 30), 0)
    image.paste(255, (12, 8, 28, 22))  # a white square on black
    image.save(square)
    correlation = visit.section("Correlation")
    correlation.get_by_label("Image (PNG or JPEG)").check()
    correlation.get_by_label("Image", exact=True).set_input_files(square)
    correlation.get_by_label("Kernel preset").select_option(label="Vertical edges, the seed's [1, -1]")
    expect(correlation.get_by_label("Kernel", exact=True)).to_have_value("[[1, -1]]")
    correlation.get_by_role("button", name="Run correlation").click()
    output = correlation.get_by_role("img", name=re.compile("^Output image"))
    expect(output).to_be_visible(timeout=30_000)
    expect(output).to_have_accessible_name("Output image, 30 × 39")
    for picture in (output, correlation.get_by_role("img", name="Input image")):
        picture.evaluate("image => image.decode()")
        assert picture.evaluate("image => image.naturalWidth") > 0
    visit.screenshot("image-correlation")
    visit.assert_no_problems()


def test_shows_the_api_error_for_a_ragged_matrix_at_the_input_field(visit, live_stack):
    ragged = [[1, 2], [3]]
    refusal = requests.post(f"{live_stack.url}/v1/correlations", json={"input": ragged, "kernel": [[1]]}, timeout=10)
    assert refusal.status_code == 422
    (error,) = refusal.json()["errors"]
    assert error["loc"] == "/input/1"
    correlation = visit.section("Correlation")
    matrix = correlation.get_by_label("Input matrix")
    matrix.fill(str(ragged))
    correlation.get_by_label("Kernel", exact=True).fill("[[1]]")
    correlation.get_by_role("button", name="Run correlation").click()
    expect(matrix).to_have_attribute("aria-invalid", "true")
    expect(matrix).to_have_accessible_description(re.compile(re.escape(error["msg"])))
    described_by = matrix.get_attribute("aria-describedby").split()
    messages = [visit.page.locator(f"#{id}").text_content() for id in described_by]
    assert any(error["msg"] in message for message in messages)
    expect(visit.page.locator(f"#{described_by[-1]}")).to_have_attribute("role", "alert")
    expect(matrix).to_be_focused()
    visit.screenshot("ragged-input-error")
    visit.assert_no_problems(expected="status of 422")  # the browser logs the refused request


def test_shows_the_api_errors_of_a_pair_and_of_an_option_at_their_fields(visit, live_stack):
    pairs = [{"input": [[1, 2, 3], [4, 5, 6]]}, {"input": [[1, 2], [3, 4]]}]
    body = {"pairs": pairs, "target_kernel": [[1, -1]]}
    refusal = requests.post(f"{live_stack.url}/v1/kernel-trainings", json=body, timeout=10)
    assert refusal.status_code == 422
    (error,) = refusal.json()["errors"]
    assert error["loc"] == "/pairs/1/input"
    training = visit.section("Kernel training")
    training.get_by_label("Several pairs").check()
    field = training.get_by_label("Pairs", exact=True)
    field.fill(json.dumps(pairs))
    training.get_by_label("True kernel", exact=True).fill("[[1, -1]]")
    training.get_by_role("button", name="Train kernel").click()
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_accessible_description(re.compile(re.escape(f"{error['msg']} (at /pairs/1/input)")))
    expect(field).to_be_focused()
    visit.screenshot("pairs-error")
    field.fill(json.dumps(pairs[:1]))
    training.get_by_label("Optimizer").select_option("momentum")
    momentum = training.get_by_label("Momentum")
    momentum.fill("1")  # must be below 1
    training.get_by_role("button", name="Train kernel").click()
    expect(momentum).to_have_attribute("aria-invalid", "true")
    expect(momentum).to_have_accessible_description(re.compile("less than 1"))
    expect(field).not_to_have_attribute("aria-invalid", "true")
    visit.assert_no_problems(expected="status of 422")  # the browser logs the refused requests


def test_shows_a_json_syntax_error_at_its_field_without_sending_it(visit):
    sent = []
    visit.page.on(
        "request", lambda request: sent.append(request.url) if "/v1/kernel-trainings" in request.url else None
    )
    training = visit.section("Kernel training")
    training.get_by_role("button", name="Seed's edge example").click()
    kernel = training.get_by_label("True kernel", exact=True)
    kernel.fill("[[1, -1]")
    training.get_by_role("button", name="Train kernel").click()
    expect(kernel).to_have_accessible_description(re.compile("not valid JSON"))
    expect(kernel).to_have_attribute("aria-invalid", "true")
    assert sent == []
    visit.screenshot("json-syntax-error")
    kernel.fill("[[1, -1]]")
    training.get_by_role("button", name="Train kernel").click()
    expect(training.get_by_role("status")).to_contain_text("succeeded")
    expect(kernel).not_to_have_attribute("aria-invalid", "true")
    assert len(sent) == 1
    visit.assert_no_problems()


def test_resumes_a_cut_event_stream_from_its_last_event_id(visit):
    resumed_after = []

    def cut_the_first_stream(route: Route) -> None:
        if resumed_after:
            resumed_after.append(route.request.header_value("Last-Event-ID"))
            route.continue_()
            return
        resumed_after.append(None)
        whole = route.fetch().text()  # the job is short: its stream ends with the status event at once
        first_events = "\n\n".join(whole.split("\n\n")[:4]) + "\n\n"  # `retry:`, then epochs 1 to 3
        route.fulfill(status=200, content_type="text/event-stream", body=first_events)

    visit.page.route("**/v1/jobs/*/events", cut_the_first_stream)
    training = visit.section("Kernel training")
    training.get_by_role("button", name="Seed's edge example").click()
    training.get_by_role("button", name="Train kernel").click()
    expect(training.locator("figure", has_text="Learned kernel")).to_be_visible()
    assert resumed_after == [None, "3-0"]
    expect(training.locator(".plot")).to_have_attribute("data-points", "20")  # every epoch once: none lost or doubled
    visit.assert_no_problems()


def test_sends_the_api_key_as_a_bearer_token_and_keeps_it_for_the_tab(visit):
    key = visit.page.get_by_label("API key (optional)")
    key.fill("a-test-key")
    key.press("Tab")
    sent = {}

    def record(request: Request) -> None:
        if "/v1/" in request.url:
            sent[f"{request.method} {request.url.split('/v1/', 1)[1]}"] = request.header_value("Authorization")

    visit.page.on("request", record)
    visit.section("Correlation").get_by_role("button", name="Run correlation").click()
    expect(visit.section("Correlation").get_by_role("status")).to_contain_text("succeeded")
    # The job list is asked for again after the status shows (one run checked before it was).

    def list_asked_for() -> bool:
        visit.page.wait_for_timeout(50)  # the page's events reach `record` only while Playwright is called
        return "GET jobs?limit=20" in sent

    wait_until(list_asked_for, 10, "the job list to be asked for", interval=0)
    assert {"POST correlations", "GET jobs?limit=20"} <= set(sent)
    assert any(request.endswith("/events") for request in sent)  # the stream too: why it is not an EventSource
    assert set(sent.values()) == {"Bearer a-test-key"}
    visit.page.reload()
    expect(key).to_have_value("a-test-key")
    visit.assert_no_problems()


def test_cancels_a_running_training_from_the_job_list(visit):
    training = visit.section("Kernel training")
    training.get_by_role("button", name="Seed's edge example").click()
    training.get_by_label("Epochs").fill("10000")  # seconds of work: time to cancel it
    training.get_by_role("button", name="Train kernel").click()
    cancel = visit.section("Recent jobs").get_by_role("button", name=re.compile("^Cancel job"))
    cancel.first.click()
    expect(training.get_by_role("status")).to_contain_text("cancelled")
    expect(visit.section("Recent jobs").locator("tbody tr").first).to_contain_text("cancelled")
    expect(cancel).to_have_count(0)
    visit.screenshot("cancelled-training")
    visit.assert_no_problems()


def _static_requests(page: Page) -> list[str]:
    """The static files the page loaded (from the browser's resource timing)."""
    entries = page.evaluate("performance.getEntriesByType('resource').map((entry) => entry.name)")
    return [entry for entry in entries if "/static/" in entry]


def test_the_page_is_served_only_with_its_policy(live_stack):
    assert requests.get(f"{live_stack.url}/static/app/index.html", timeout=10).status_code == 404
