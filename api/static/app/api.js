// Talking to the convq API: fetch with the optional API key, problem+json errors, and a job's Server-Sent Events.

const KEY_STORAGE = "convq.apiKey";
const RECONNECT_MS = 1000; // what the server's `retry:` says too

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) ?? "",
  set: (key) => (key ? sessionStorage.setItem(KEY_STORAGE, key) : sessionStorage.removeItem(KEY_STORAGE)),
};

/** An RFC 9457 problem the API answered: `errors` are [{loc, msg, type}], loc a JSON pointer into the request. */
export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail ?? problem.title);
    this.errors = problem.errors ?? [];
  }
}

async function send(path, { headers = {}, ...options } = {}) {
  const key = apiKey.get();
  const withKey = key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
  const response = await fetch(path, { ...options, headers: withKey });
  if (!response.ok) {
    const isProblem = (response.headers.get("Content-Type") ?? "").includes("json");
    const fallback = { status: response.status, title: `${response.status} ${response.statusText}` };
    throw new ApiError(isProblem ? await response.json() : fallback);
  }
  return response;
}

export const getJson = async (path, options) => (await send(path, options)).json();
export const getBlob = async (path, options) => (await send(path, options)).blob();
export const cancelJob = (id) => getJson(`/v1/jobs/${id}`, { method: "DELETE" });

/** POST a JSON body, or a FormData as multipart/form-data; answers the job (202). */
export function submit(path, body) {
  if (body instanceof FormData) return getJson(path, { method: "POST", body });
  return getJson(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/**
 * Follow a job's events (GET /v1/jobs/<id>/events): call onProgress({epoch, epochs, loss}) per epoch and resolve
 * to the finished job of the `status` event. EventSource cannot send the API key, so this reads the stream with
 * fetch, and reconnects with Last-Event-ID when the stream ends (or the network fails) before the status event.
 */
export async function followJob(id, onProgress, signal) {
  let lastEventId = "";
  for (;;) {
    try {
      const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
      const response = await send(`/v1/jobs/${id}/events`, { headers, signal });
      for await (const event of readEvents(response.body)) {
        lastEventId = event.id;
        if (event.type === "status") return JSON.parse(event.data);
        if (event.type === "progress") onProgress(JSON.parse(event.data));
      }
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // fetch's network errors are TypeErrors: reconnect
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

/** Parse a text/event-stream body into {type, data, id} events (lines end in \n or \r\n). */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", data: [], id: "" };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const lines = (buffer + value).split(/\r?\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) yield { type: event.type, data: event.data.join("\n"), id: event.id };
          event = { type: "message", data: [], id: event.id };
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment, such as the server's keep-alive
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "event") event.type = text;
        else if (field === "id") event.id = text;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // stop the download when the reader leaves early
  }
}
