// The convq page: the correlation and kernel-training forms, their results as pictures, the API key and the jobs.

import { ApiError, apiKey, followJob, getBlob, getJson, submit } from "./api.js";
import { clearErrors, json, number, readFields, showApiError, showErrors, text } from "./fields.js";
import { formatNumber, heatmap } from "./heatmap.js";
import { JobList, runTime, shortId } from "./jobs.js";
import { LossChart } from "./losschart.js";

// The seed's edge example: learn [1, -1] back from a 6 x 8 image with a black stripe and its edges.
const SEED_EDGE_EXAMPLE = {
  input: Array.from({ length: 6 }, () => [1, 1, 0, 0, 0, 0, 1, 1]),
  target_kernel: [[1, -1]],
  kernel_size: [1, 2],
  lr: 0.03,
  epochs: 20, // the seed's, the README's and the API's default
};

const jobs = new JobList(document.querySelector("#jobs-panel tbody"), document.querySelector(".jobs-message"));
const correlation = panel("correlation");
const training = panel("training");
const presets = document.getElementById("correlation-preset");
const keyField = document.getElementById("api-key");
let logScale = false; // the loss charts' scale: a choice kept for the next training

/** A form, its status line and results, and the job it follows (one at a time). */
function panel(name) {
  const section = document.getElementById(`${name}-panel`);
  return {
    form: section.querySelector("form"),
    status: section.querySelector(".status"),
    results: section.querySelector(".results"),
    following: new AbortController(),
    urls: [], // object URLs of the pictures shown, revoked when they go
  };
}

/**
 * Submit `body` to `path` from `panel`'s form (unless reading the form gave `errors`) and follow the job to its end:
 * view.start(results) shows what is known once the job is accepted, view.progress(p) each epoch,
 * and view.finish(job, signal) answers the picture of the result.
 */
async function run(panel, errors, path, body, view) {
  panel.following.abort();
  panel.following = new AbortController();
  const { signal } = panel.following;
  panel.urls.forEach((url) => URL.revokeObjectURL(url));
  panel.urls = [];
  panel.results.replaceChildren();
  if (errors.length) {
    panel.status.textContent = "Not submitted.";
    return showErrors(panel.form, errors);
  }
  clearErrors(panel.form);
  panel.status.textContent = "Submitting…";
  let job = null;
  try {
    job = await submit(path, body);
    jobs.refresh();
    panel.status.textContent = `Job ${shortId(job.id)} is ${job.status}.`;
    view.start(panel.results);
    let epochs = 0;
    const finished = await followJob(
      job.id,
      (progress) => {
        if (epochs++ === 0) panel.status.textContent = `Job ${shortId(job.id)} is running.`;
        view.progress(progress);
      },
      signal,
    );
    jobs.refresh();
    const on = finished.device ? ` on ${finished.device}` : "";
    const took = finished.started_at ? ` after ${runTime(finished)}` : "";
    panel.status.textContent = `Job ${shortId(job.id)} ${finished.status}${on}${took}.`;
    if (finished.status === "succeeded") panel.results.append(await view.finish(finished, signal));
    else if (finished.error) showApiError(panel.form, new ApiError(finished.error));
  } catch (error) {
    if (signal.aborted) return;
    panel.status.textContent = job ? `Stopped following job ${shortId(job.id)}.` : "Not submitted.";
    if (error instanceof ApiError) showApiError(panel.form, error);
    else showErrors(panel.form, [], `Could not reach the API: ${error.message}`);
  }
}

correlation.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const { elements } = correlation.form;
  const file = elements.image.files[0];
  const fromImage = elements.source.value === "image";
  const parsers = { kernel: json, padding: json, stride: json, bias: json };
  const { values, errors } = readFields(correlation.form, fromImage ? parsers : { input: json, ...parsers });
  if (fromImage && !file) errors.push({ field: elements.image, msg: "Choose a PNG or JPEG image." });
  const body = fromImage ? multipart(file, values) : values;
  run(correlation, errors, "/v1/correlations", body, {
    start(results) {
      const input = fromImage
        ? picture("Input image", objectUrl(correlation, file))
        : matrixFigure("Input", values.input);
      results.append(input, matrixFigure("Kernel", values.kernel));
    },
    progress() {},
    async finish(job, signal) {
      if (!fromImage) return matrixFigure("Output", job.result.output);
      const output = await getBlob(`/v1/jobs/${job.id}/output.png`, { signal });
      return picture(`Output image, ${job.result.shape.join(" × ")}`, objectUrl(correlation, output));
    },
  });
});

training.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const { elements } = training.form;
  const kind = elements.target_kind.value; // "target_kernel", "target" or "pairs"
  const { values, errors } = readFields(training.form, {
    ...(kind === "pairs" ? { pairs: json, target_kernel: json } : { input: json, [kind]: json }),
    kernel_size: json,
    kernel_shape: json,
    lr: number,
    epochs: number,
    optimizer: text,
    momentum: number,
    loss: text,
    tolerance: number,
    batch_size: number,
    seed: number,
  });
  values.bias = elements.bias.checked;
  values.shuffle = elements.shuffle.checked;
  let chart;
  let progressText;
  run(training, errors, "/v1/kernel-trainings", values, {
    start(results) {
      const figure = document.getElementById("loss-chart").content.firstElementChild.cloneNode(true);
      const [first, of] = values.pairs ? [values.pairs[0], ` of pair 1 of ${values.pairs.length}`] : [values, ""];
      // The target beside the input: given, or made as the worker makes it, from the true kernel.
      const target = first.target ?? correlate(first.input, values.target_kernel);
      results.append(matrixFigure(`Input${of}`, first.input), matrixFigure(`Target output${of}`, target), figure);
      if (values.target_kernel) results.append(matrixFigure("True kernel", values.target_kernel));
      chart = new LossChart(figure.querySelector(".plot"), logScale);
      const scale = figure.querySelector(".log-scale");
      scale.checked = logScale;
      scale.addEventListener("change", () => chart.setLogScale((logScale = scale.checked)));
      progressText = figure.querySelector(".progress");
    },
    progress(progress) {
      chart.add(progress);
      progressText.textContent = `Epoch ${progress.epoch} of ${progress.epochs}, loss ${formatNumber(progress.loss)}`;
    },
    finish(job) {
      const { kernel, bias } = job.result;
      progressText.textContent = ending(job.result, job.progress?.epochs, values.tolerance);
      return matrixFigure(`Learned kernel${biasText(bias)}`, kernel);
    },
  });
});

/**
 * The cross-correlation of `input` (H x W or C x H x W) with `kernel` (kh x kw, C x kh x kw, or O x C x kh x kw):
 * oh x ow, or O x oh x ow. As the worker computes a training's target from its true kernel, for showing it;
 * null when either is not given as nested lists.
 */
function correlate(input, kernel) {
  if (!Array.isArray(input) || !Array.isArray(kernel)) return null;
  const depth = (array) => (Array.isArray(array) ? 1 + depth(array[0]) : 0);
  const channels = depth(input) === 2 ? [input] : input; // C x H x W
  const outputs = (depth(kernel) === 4 ? kernel : [depth(kernel) === 2 ? [kernel] : kernel]).map((taps) => {
    const [kh, kw] = [taps[0].length, taps[0][0].length];
    const [oh, ow] = [channels[0].length - kh + 1, channels[0][0].length - kw + 1];
    return Array.from({ length: oh }, (_, i) =>
      Array.from({ length: ow }, (_, j) => {
        let sum = 0;
        taps.forEach((tap, c) => tap.forEach((row, a) => row.forEach((w, b) => (sum += w * channels[c][i + a][j + b]))));
        return sum;
      }),
    );
  });
  return depth(kernel) === 4 ? outputs : outputs[0];
}

/** How a training ended: its epochs and loss and, with a tolerance, whether the loss fell below it. */
function ending({ loss, epochs_run: run, converged }, epochs, tolerance) {
  const finished = `Finished: ${run} epochs, loss ${formatNumber(loss)}`;
  if (tolerance === undefined) return finished;
  const below = `below tolerance ${formatNumber(tolerance)}`;
  if (!converged) return `${finished}, not ${below}: not converged`;
  if (run < epochs) return `Converged: stopped early at epoch ${run} of ${epochs}: loss ${formatNumber(loss)} ${below}`;
  return `${finished}: converged, ${below}`;
}

/** A learned bias for a title: none, one number, or one per output channel. */
function biasText(bias) {
  if (bias === null) return "";
  return Array.isArray(bias) ? `, biases [${bias.map(formatNumber).join(", ")}]` : `, bias ${formatNumber(bias)}`;
}

document.getElementById("seed-example").addEventListener("click", () => {
  const { elements } = training.form;
  training.form.reset(); // the options too
  elements.input.value = matrixText(SEED_EDGE_EXAMPLE.input);
  elements.target_kernel.value = matrixText(SEED_EDGE_EXAMPLE.target_kernel);
  elements.kernel_size.value = `[${SEED_EDGE_EXAMPLE.kernel_size.join(", ")}]`;
  elements.lr.value = SEED_EDGE_EXAMPLE.lr;
  elements.epochs.value = SEED_EDGE_EXAMPLE.epochs;
  showChosen(training.form, "target_kind", "data-target");
  offerMomentum();
});

/** Show the fields whose `attribute` lists the chosen value of the radio buttons `radios`; hide the others. */
function showChosen(form, radios, attribute) {
  for (const field of form.querySelectorAll(`[${attribute}]`)) {
    field.hidden = !field.getAttribute(attribute).split(" ").includes(form.elements[radios].value);
  }
}

/** The momentum field is for the momentum optimizer only (a disabled field is not sent). */
function offerMomentum() {
  const { optimizer, momentum } = training.form.elements;
  momentum.disabled = optimizer.value !== "momentum";
}

/** The named kernels of GET /v1/kernels as choices that fill in the kernel field. */
async function loadPresets() {
  const hint = document.getElementById("correlation-preset-hint");
  try {
    const { kernels } = await getJson("/v1/kernels");
    presets.replaceChildren(presets.options[0], ...kernels.map((k) => new Option(k.label, matrixText(k.matrix))));
    hint.textContent = "";
  } catch (error) {
    hint.textContent = `The presets could not be loaded: ${error.message}`;
  }
}

function multipart(file, values) {
  const body = new FormData();
  body.append("image", file);
  for (const [name, value] of Object.entries(values)) body.append(name, JSON.stringify(value));
  return body;
}

/** An array as heatmaps; a note when it was given in the API's base64 form, which the page does not draw. */
function matrixFigure(title, matrix) {
  if (Array.isArray(matrix)) return heatmap(title, matrix);
  return Object.assign(document.createElement("p"), { textContent: `${title}: given in base64 form.` });
}

function picture(title, url) {
  const figure = document.createElement("figure");
  figure.className = "picture";
  const image = Object.assign(document.createElement("img"), { src: url, alt: title });
  figure.append(image, Object.assign(document.createElement("figcaption"), { textContent: title }));
  return figure;
}

function objectUrl(panel, blob) {
  const url = URL.createObjectURL(blob);
  panel.urls.push(url);
  return url;
}

/** A matrix as JSON text, one row per line. */
const matrixText = (matrix) => `[${matrix.map((row) => `[${row.join(", ")}]`).join(",\n ")}]`;

for (const [form, radios, attribute] of [
  [correlation.form, "source", "data-source"],
  [training.form, "target_kind", "data-target"],
]) {
  form.addEventListener("change", (event) => event.target.name === radios && showChosen(form, radios, attribute));
  showChosen(form, radios, attribute); // the browser may have restored a choice
}
training.form.elements.optimizer.addEventListener("change", offerMomentum);
offerMomentum(); // the browser may have restored a choice
presets.addEventListener("change", () => {
  if (presets.value) correlation.form.elements.kernel.value = presets.value;
});
correlation.form.elements.kernel.addEventListener("input", () => (presets.value = ""));
keyField.value = apiKey.get();
keyField.addEventListener("change", () => {
  apiKey.set(keyField.value.trim());
  loadPresets();
  jobs.refresh();
});
loadPresets();
jobs.refresh();
