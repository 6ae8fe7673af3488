// The public API, as the page calls it: the key from sessionStorage as a Bearer token, and every
// refusal turned into one readable notice (401 signs out, 429 counts down Retry-After).
import { t } from "./i18n";

const KEY = "sd-api-key";
let base = "";

export async function loadConfig(): Promise<void> {
  try {
    const resp = await fetch("/app/config.json", { cache: "no-store" });
    if (resp.ok) base = String((await resp.json()).apiBase ?? "").replace(/\/$/, "");
  } catch {
    base = "";
  }
}

export const session = {
  key: (): string | null => sessionStorage.getItem(KEY),
  signIn: (key: string): void => sessionStorage.setItem(KEY, key),
  signOut: (): void => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(public status: number, message: string, public retryAfter = 0, public body: unknown = null) {
    super(message);
  }
}

type Listener = (error: ApiError) => void;
const listeners: Listener[] = [];
export function onApiError(listener: Listener): void {
  listeners.push(listener);
}
// an accepted change (a submit, a cancel) makes an earlier refusal's message stale
const accepted: (() => void)[] = [];
export function onAccepted(listener: () => void): void {
  accepted.push(listener);
}

function describe(body: unknown, fallback: string): string {
  if (body && typeof body === "object") {
    const b = body as { message?: unknown; detail?: unknown; error?: unknown };
    if (Array.isArray(b.detail)) {
      // one line per message, naming every field it is about (a cap names several)
      const fields = new Map<string, string[]>();
      for (const d of b.detail as { loc?: unknown[]; msg?: string }[]) {
        const list = fields.get(d.msg ?? "") ?? [];
        list.push((d.loc ?? []).slice(1).join("."));
        fields.set(d.msg ?? "", list);
      }
      return [...fields].map(([msg, names]) => `${names.join(", ")}: ${msg}`).join("; ");
    }
    if (typeof b.message === "string") return b.message;
    if (typeof b.detail === "string") return b.detail;
    if (typeof b.error === "string") return b.error;
  }
  return fallback;
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  async?: boolean;
  /** report errors to the page's notice (default) or leave them to the caller only */
  quiet?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A read refused with 429 is tried again after its Retry-After (a few times) before the
 * refusal is shown: the local stack caps the requests one caller has in flight at once. */
export async function call<T>(path: string, opts: CallOptions = {}): Promise<T> {
  const read = (opts.method ?? (opts.body === undefined ? "GET" : "POST")) === "GET";
  for (let attempt = 0; read && attempt < 3; attempt++) {
    try {
      return await send<T>(path, { ...opts, quiet: true });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 429) {
        if (!opts.quiet && error instanceof ApiError) listeners.forEach((l) => l(error));
        throw error;
      }
      await sleep(Math.max(1, error.retryAfter) * 1000);
    }
  }
  return send<T>(path, opts);
}

async function send<T>(path: string, opts: CallOptions): Promise<T> {
  const headers: Record<string, string> = {};
  const key = session.key();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.async) headers["Request-Type"] = "async";
  let resp: Response;
  try {
    resp = await fetch(base + path, {
      method: opts.method ?? (opts.body === undefined ? "GET" : "POST"),
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
    });
  } catch {
    const error = new ApiError(0, t("errNetwork"));
    if (!opts.quiet) listeners.forEach((l) => l(error));
    throw error;
  }
  const text = await resp.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!resp.ok) {
    const retry = Number(resp.headers.get("Retry-After") ?? "0") || 0;
    const error = new ApiError(resp.status, describe(body, resp.statusText), retry, body);
    if (!opts.quiet) listeners.forEach((l) => l(error));
    throw error;
  }
  if ((opts.method ?? (opts.body === undefined ? "GET" : "POST")) !== "GET") accepted.forEach((l) => l());
  return body as T;
}

// --- the API's shapes, as far as the page reads them -----------------------------------------
export interface Account { user: string; role: string }
export interface Timings { createdAt: string | null; startedAt: string | null; finishedAt: string | null }
export interface TaskResult {
  taskId: string; status: string; images: string[]; urls: string[];
  parameters: Record<string, unknown>; info: Record<string, unknown>; error: string | null; timings: Timings;
}
export interface TaskAccepted { taskId: string; status: string }
export interface TaskProgress {
  taskId: string; status: string; progress: number; etaRelative: number;
  state: { samplingStep: number; samplingSteps: number; jobNo: number; jobCount: number };
  currentImage: string | null;
}
export interface TaskSummary {
  taskId: string; kind: string; status: string; model: string; prompt: string; seed: number;
  parameters: Record<string, unknown>; images: string[]; error: string | null; timings: Timings;
}
export interface TaskList { tasks: TaskSummary[]; cursor: string | null }
export interface ModelListing { type: string; name: string; status: string }
export interface Template { name: string; templateType: string; description: string; folder: string; shared: boolean }
export interface BatchView {
  batchId: string; status: string; progress: number;
  tasks: { template: string; taskId: string; status: string }[]; grid: string | null; gridUrl: string | null;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
