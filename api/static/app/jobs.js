// The recent jobs: kind, status, device and run time, with a Cancel button for unfinished ones; refreshed while any is.

import { cancelJob, getJson } from "./api.js";

const REFRESH_MS = 3000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export const shortId = (id) => id.slice(0, 8);

/** How long the job has run (so far, while it runs), from its timestamps; "" before it starts. */
export function runTime(job) {
  if (!job.started_at) return "";
  const ms = (job.finished_at ? Date.parse(job.finished_at) : Date.now()) - Date.parse(job.started_at);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export class JobList {
  /** Fill `rows` (a <tbody>) from GET /v1/jobs; say in `message` when there are none or listing fails. */
  constructor(rows, message) {
    this.rows = rows;
    this.message = message;
    this.timer = null;
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      const { jobs } = await getJson("/v1/jobs?limit=20");
      const focused = this.rows.contains(document.activeElement) ? document.activeElement.dataset.job : null;
      this.rows.replaceChildren(...jobs.map((job) => this.row(job)));
      if (focused) (this.rows.querySelector(`[data-job="${focused}"]`) ?? this.rows.closest("table")).focus();
      this.message.textContent = jobs.length ? "" : "No jobs yet.";
      clearTimeout(this.timer); // another refresh may have finished meanwhile
      if (jobs.some((job) => !FINISHED.has(job.status))) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
    } catch (error) {
      this.message.textContent = `Could not list the jobs: ${error.message}`;
    }
  }

  row(job) {
    const row = document.createElement("tr");
    const id = Object.assign(document.createElement("code"), { textContent: shortId(job.id), title: job.id });
    const { status, progress } = job;
    const shown = status === "running" && progress ? `running, epoch ${progress.epoch} of ${progress.epochs}` : status;
    const device = job.device ?? `${job.queue} queue`; // where it ran; before it starts, the workers it waits for
    const submitted = new Date(job.created_at).toLocaleTimeString();
    const cells = [id, job.kind.replace("_", " "), shown, device, submitted, runTime(job)];
    for (const content of cells) row.insertCell().append(content);
    row.cells[2].className = `job-status ${status}`;
    const action = row.insertCell();
    if (!FINISHED.has(status)) {
      const cancel = Object.assign(document.createElement("button"), { type: "button", textContent: "Cancel" });
      cancel.className = "secondary";
      cancel.dataset.job = job.id; // to keep the keyboard focus on it across refreshes
      cancel.setAttribute("aria-label", `Cancel job ${shortId(job.id)}`);
      cancel.addEventListener("click", async () => {
        const failure = await cancelJob(job.id).then(
          () => "",
          (error) => `Could not cancel job ${shortId(job.id)}: ${error.message}`,
        );
        await this.refresh();
        if (failure) this.message.textContent = failure;
      });
      action.append(cancel);
    }
    return row;
  }
}
