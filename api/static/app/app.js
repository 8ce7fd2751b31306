// The convq page: the correlation and kernel-training forms, their results as pictures, the API key and the jobs.

import { ApiError, apiKey, followJob, getBlob, getJson, submit } from "./api.js";
import { clearErrors, json, number, readFields, showApiError, showErrors } from "./fields.js";
import { formatNumber, heatmap } from "./heatmap.js";
import { JobList, runTime, shortId } from "./jobs.js";
import { LossChart } from "./losschart.js";

// The seed's edge example: learn [1, -1] back from a 6 x 8 image with a black stripe and its edges.
const SEED_EDGE_EXAMPLE = {
  input: Array.from({ length: 6 }, () => [1, 1, 0, 0, 0, 0, 1, 1]),
  target_kernel: [[1, -1]],
  kernel_size: [1, 2],
  lr: 0.03,
  epochs: 10,
};

const jobs = new JobList(document.querySelector("#jobs-panel tbody"), document.querySelector(".jobs-message"));
const correlation = panel("correlation");
const training = panel("training");
const presets = document.getElementById("correlation-preset");
const keyField = document.getElementById("api-key");

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
    const took = finished.started_at ? ` after ${runTime(finished)}` : "";
    panel.status.textContent = `Job ${shortId(job.id)} ${finished.status}${took}.`;
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
  const parsers = { kernel: json, padding: json, stride: json, bias: number };
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
  const target = elements.target_kind.value; // "target_kernel" or "target"
  const parsers = { input: json, [target]: json, kernel_size: json, lr: number, epochs: number, seed: number };
  const { values, errors } = readFields(training.form, parsers);
  values.bias = elements.bias.checked;
  let chart;
  let progressText;
  run(training, errors, "/v1/kernel-trainings", values, {
    start(results) {
      const figure = document.getElementById("loss-chart").content.firstElementChild.cloneNode(true);
      const truth = target === "target_kernel" ? "True kernel" : "Target output";
      results.append(matrixFigure("Input", values.input), figure, matrixFigure(truth, values[target]));
      chart = new LossChart(figure.querySelector(".plot"));
      figure.querySelector(".log-scale").addEventListener("change", (e) => chart.setLogScale(e.target.checked));
      progressText = figure.querySelector(".progress");
    },
    progress(progress) {
      chart.add(progress);
      progressText.textContent = `Epoch ${progress.epoch} of ${progress.epochs}, loss ${formatNumber(progress.loss)}`;
    },
    finish(job) {
      const { kernel, bias, loss, epochs_run: epochs } = job.result;
      progressText.textContent = `Finished: ${epochs} epochs, loss ${formatNumber(loss)}`;
      return matrixFigure(bias === null ? "Learned kernel" : `Learned kernel, bias ${formatNumber(bias)}`, kernel);
    },
  });
});

document.getElementById("seed-example").addEventListener("click", () => {
  const { elements } = training.form;
  elements.target_kind.value = "target_kernel";
  showChosen(training.form, "target_kind", "data-target");
  elements.input.value = matrixText(SEED_EDGE_EXAMPLE.input);
  elements.target_kernel.value = matrixText(SEED_EDGE_EXAMPLE.target_kernel);
  elements.kernel_size.value = `[${SEED_EDGE_EXAMPLE.kernel_size.join(", ")}]`;
  elements.lr.value = SEED_EDGE_EXAMPLE.lr;
  elements.epochs.value = SEED_EDGE_EXAMPLE.epochs;
  elements.bias.checked = false;
  elements.seed.value = 0;
});

/** Show the fields whose `attribute` names the chosen value of the radio buttons `radios`; hide the others. */
function showChosen(form, radios, attribute) {
  for (const field of form.querySelectorAll(`[${attribute}]`)) {
    field.hidden = field.getAttribute(attribute) !== form.elements[radios].value;
  }
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

/** A matrix as a heatmap; a note when it was given in the API's base64 form, which the page does not draw. */
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
