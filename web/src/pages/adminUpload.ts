// Model upload from the browser, the flow of the Python client's upload_model
// (local/sdlocal/client.py): the file's SHA-256, POST /admin/models (the same name, type, size
// and SHA-256 answer the upload in progress: resume), GET .../upload for the parts already
// there (a part is skipped when its ETag is the local part's MD5), PUT the others to their
// presigned URLs in parallel with their Content-MD5 (a failed part tried again a few times),
// POST .../complete, then follow the server's verification on GET /admin/models/<name>.
import { ApiError, call } from "../api";
import { field, h, select } from "../dom";
import { type Key, t } from "../i18n";
import { base64, hashBlob, hex, Md5, Sha256 } from "./hashing";

export const MODEL_TYPES = ["checkpoint", "vae", "lora", "embedding", "upscaler", "controlnet", "face_restorer",
  "captioner", "tagger", "segmenter", "preprocessor"];
const PARALLEL = 4;
const RETRIES = 3;

export interface PendingInfo { stage: string; progress: number | null; bytesDone: number; error: string | null; source: string | null }
export interface AdminModel {
  name: string; type: string; status: string; sha256: string; size: number; format: string | null; config: string;
  version: number; details: Record<string, unknown>; error: string | null; pending: PendingInfo | null;
  registeredTime: string | null; lastModificationTime: string | null;
}
interface UploadPlan { name: string; uploadId: string; partSize: number; parts: { partNumber: number; url: string }[] }
interface UploadStatus { uploadId: string; parts: { partNumber: number; etag: string }[] }

export const enc = encodeURIComponent;
const stripEtag = (etag: string): string => etag.trim().replace(/^W\//, "").replace(/"/g, "").toLowerCase();

/** Wait `ms`, or less when `signal` aborts (then throw its reason). */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

class UploadError extends Error {}
/** The server's check refused the file: sending it again will not help. */
class RefusedError extends Error {}

interface Answer { status: number; etag: string | null }

/** One PUT of a part to its presigned URL: XMLHttpRequest, for the bytes-sent progress fetch
 * does not give; status 0 is a network error. No Authorization: the URL carries its own. */
function putOnce(url: string, blob: Blob, md5: string, signal: AbortSignal, onSent: (n: number) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const stop = () => xhr.abort();
    signal.addEventListener("abort", stop, { once: true });
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-MD5", md5);
    xhr.upload.onprogress = (ev) => onSent(ev.loaded);
    xhr.onloadend = () => {
      signal.removeEventListener("abort", stop);
      if (signal.aborted) reject(signal.reason);
      else resolve({ status: xhr.status, etag: xhr.status ? xhr.getResponseHeader("ETag") : null });
    };
    xhr.send(blob);
  });
}

interface Progress { phase: string; text: string; value: number; error?: boolean }

/** Upload `file` as model `name`; `show` is told each step. Resolves with the verified model
 * and how many parts were sent and how many the server already held. */
export async function uploadModel(
  file: File, body: { name: string; type: string; config: string; update: boolean },
  show: (p: Progress) => void, signal: AbortSignal,
): Promise<{ model: AdminModel; sent: number; skipped: number }> {
  const size = file.size;
  let hashed = 0;
  const sha = new Sha256();
  await hashBlob(sha, file, (n) => {
    hashed += n;
    show({ phase: "hash", text: t("upHashing", { pct: pct(hashed / size) }), value: hashed / size });
  }, signal);
  const sha256 = hex(sha.digest());
  show({ phase: "register", text: t("upRegistering"), value: 0 });
  const plan = await call<UploadPlan>("/admin/models", { body: { ...body, size, sha256 } });
  const name = plan.name;
  const received = new Map<number, string>();
  try {
    const status = await call<UploadStatus>(`/admin/models/${enc(name)}/upload`, { quiet: true });
    if (status.uploadId === plan.uploadId) status.parts.forEach((p) => received.set(p.partNumber, p.etag));
  } catch (error) {
    // nothing received yet, or no upload to resume
    if (!(error instanceof ApiError) || (error.status !== 404 && error.status !== 409)) throw error;
  }

  const etags = new Map<number, string>();
  const sending = new Map<number, number>(); // part number -> bytes of it sent so far
  let done = 0;
  let skipped = 0;
  const report = () => {
    const now = done + [...sending.values()].reduce((a, b) => a + b, 0);
    show({
      phase: "parts", value: now / size,
      text: t("upParts", { done: etags.size, total: plan.parts.length, skipped, pct: pct(now / size) }),
    });
  };
  const queue = [...plan.parts];
  // after a failure no other part starts, but those on their way finish (as the Python
  // client's pool does): choosing the file again then sends only what is missing
  const failures: unknown[] = [];

  async function sendPart(part: { partNumber: number; url: string }): Promise<void> {
    const n = part.partNumber;
    const blob = file.slice((n - 1) * plan.partSize, n * plan.partSize);
    const md5 = (await hashBlob(new Md5(), blob, undefined, signal)).digest();
    const have = received.get(n);
    if (have !== undefined && stripEtag(have) === hex(md5)) {
      skipped += 1;
      etags.set(n, have);
    } else {
      for (let attempt = 0; ; attempt++) {
        const answer = await putOnce(part.url, blob, base64(md5), signal, (sent) => { sending.set(n, sent); report(); });
        sending.delete(n);
        if (answer.status >= 200 && answer.status < 300) {
          if (!answer.etag) throw new UploadError(t("upNoEtag", { n }));
          // an S3 part's ETag is its MD5 (with SSE-S3, which the bucket uses)
          const etag = stripEtag(answer.etag);
          if (/^[0-9a-f]{32}$/.test(etag) && etag !== hex(md5)) throw new UploadError(t("upBadEtag", { n }));
          etags.set(n, answer.etag);
          break;
        }
        const why = answer.status ? String(answer.status) : t("upNetwork");
        const retryable = answer.status === 0 || answer.status === 429 || answer.status >= 500;
        if (!retryable || attempt >= RETRIES) throw new UploadError(t("upPartFailed", { n, why }));
        show({ phase: "parts", value: done / size, text: t("upRetry", { n, why, attempt: attempt + 1, max: RETRIES }) });
        await pause(1000 * 2 ** attempt, signal);
      }
    }
    done += blob.size;
    report();
  }

  report();
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    for (let part = queue.shift(); part && !failures.length; part = queue.shift()) {
      try {
        await sendPart(part);
      } catch (error) {
        failures.push(error);
      }
    }
  }));
  if (failures.length) throw failures[0];
  const sent = plan.parts.length - skipped;

  const parts = [...etags].sort((a, b) => a[0] - b[0]).map(([partNumber, etag]) => ({ partNumber, etag }));
  await call<AdminModel>(`/admin/models/${enc(name)}/complete`, { body: { parts } });
  // the server reads the file back (size, SHA-256, format, type) as a job
  for (;;) {
    const model = await call<AdminModel>(`/admin/models/${enc(name)}`);
    const pending = model.pending;
    if (!pending) return { model, sent, skipped };
    if (pending.error) throw new RefusedError(t("upRefused", { error: pending.error }));
    const value = pending.progress ?? 0;
    show({ phase: "verify", value, text: t("upVerifying", { stage: stageText(pending.stage), pct: pct(value) }) });
    await pause(500, signal);
  }
}

const pct = (fraction: number): number => Math.floor(Math.min(1, fraction) * 100);

export function stageText(stage: string): string {
  const keys: Record<string, Key> = { uploading: "stageUploading", verifying: "stageVerifying", importing: "stageImporting" };
  return keys[stage] ? t(keys[stage]) : stage;
}

// One upload at a time; its panel is kept while it runs, so leaving the page and coming back
// shows how it goes.
let running: HTMLElement | null = null;

/** The upload form; `changed` is called when the model list should be read again. */
export function uploadPanel(changed: () => void): HTMLElement {
  if (running) return running;
  const file = h("input", { type: "file", accept: ".safetensors,.tar,.ckpt", required: true, "data-testid": "upload-file" });
  const name = h("input", { type: "text", required: true, maxlength: 128, autocomplete: "off", spellcheck: "false", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}" });
  const type = select(MODEL_TYPES.map((m): [string, string] => [m, m]), "checkpoint");
  const config = h("input", { type: "text", value: "auto", required: true, autocomplete: "off", spellcheck: "false", pattern: "[A-Za-z0-9._\\-]{1,64}" });
  const update = h("input", { type: "checkbox", id: "upload-update" });
  const start = h("button", { type: "submit" }, t("upStart"));
  const abort = h("button", { type: "button", class: "secondary", disabled: true }, t("upAbort"));
  const bar = h("progress", { max: 1, value: 0, "aria-label": t("upProgress"), hidden: true });
  const status = h("p", { "aria-live": "polite", "data-testid": "upload-status" });
  let named = "";
  file.addEventListener("change", () => {
    const chosen = file.files?.[0];
    // the file's name, unless one was typed: the same file again gets the same name (resume)
    if (chosen && (!name.value || name.value === named)) {
      named = chosen.name.replace(/\.(safetensors|tar|ckpt)$/i, "").replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
      name.value = named;
    }
  });
  let controller: AbortController | null = null;
  const show = (p: Progress) => {
    bar.hidden = false;
    bar.value = p.value;
    status.textContent = p.text;
    status.dataset.phase = p.phase;
    status.className = p.error ? "error" : "";
  };
  const form = h("form", { "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, t("upTitle")),
    h("p", { class: "hint" }, t("upHelp")),
    field(t("upFile"), file),
    h("div", { class: "row" },
      field(t("modelName"), name),
      field(t("type"), type),
      field(t("upConfig"), config, t("upConfigHint"))),
    h("div", { class: "field" }, h("label", { class: "inline", for: update.id }, update, t("upUpdate"))),
    h("div", { class: "row" }, start, abort),
    bar,
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen || controller) return;
    controller = new AbortController();
    const mine = controller;
    running = form;
    start.disabled = true;
    abort.disabled = false;
    show({ phase: "hash", text: t("upHashing", { pct: 0 }), value: 0 });
    try {
      const body = { name: name.value.trim(), type: type.value, config: config.value.trim() || "auto", update: update.checked };
      const { model, sent, skipped } = await uploadModel(chosen, body, show, mine.signal);
      show({ phase: "done", value: 1, text: t("upDone", { name: model.name, status: modelStatusText(model.status), sent, skipped }) });
    } catch (error) {
      if (mine.signal.aborted) show({ phase: "aborted", value: 0, text: t("upAborted"), error: true });
      else if (error instanceof RefusedError) show({ phase: "refused", value: bar.value, error: true, text: error.message });
      else show({ phase: "failed", value: bar.value, error: true, text: resumable(error) ? `${describe(error)} ${t("upResume")}` : describe(error) });
    } finally {
      controller = null;
      running = null;
      start.disabled = false;
      abort.disabled = true;
      changed();
    }
  });
  abort.addEventListener("click", async () => {
    const mine = controller;
    if (!mine) return;
    // registered already (past hashing): the server holds an upload to abort
    const registered = status.dataset.phase !== "hash";
    mine.abort(new UploadError(t("upAborted")));
    if (!registered) return;
    try {
      await call<AdminModel>(`/admin/models/${enc(name.value.trim())}/upload`, { method: "DELETE" });
    } catch {
      // the notice says why (e.g. nothing was registered yet)
    }
    changed();
  });
  return form;
}

/** Whether choosing the file again may get further: a part or the network failed, not a refusal. */
function resumable(error: unknown): boolean {
  if (error instanceof ApiError) return error.status === 0 || error.status === 429 || error.status >= 500;
  return error instanceof UploadError;
}

function describe(error: unknown): string {
  if (error instanceof ApiError) return t("upApiFailed", { status: error.status, message: error.message });
  if (error instanceof Error) return error.message;
  return String(error);
}

export function modelStatusText(status: string): string {
  const keys: Record<string, Key> = {
    registering: "msRegistering", loading: "msLoading", loaded: "msLoaded", unloaded: "msUnloaded", deleted: "msDeleted",
  };
  return keys[status] ? t(keys[status]) : status;
}
