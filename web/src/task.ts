// One task followed from submit to its pictures: a progress bar with the ETA and the live
// preview from /tasks/{id}/progress, a cancel button, then each picture with its infotext.
import { call, TERMINAL, type TaskAccepted, type TaskProgress, type TaskResult } from "./api";
import { h } from "./dom";
import { statusText, t } from "./i18n";

export interface ResultActions {
  sendToImg2img?: (key: string, url: string) => void;
  upscale?: (key: string) => void;
}

const POLL_MS = 400;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Infotext of picture `n` (the API keeps one per picture in `info.infotexts`). */
export function infotextOf(result: TaskResult, n: number): string {
  const texts = result.info.infotexts;
  if (Array.isArray(texts) && typeof texts[n] === "string") return texts[n];
  return typeof result.info.infotext === "string" ? result.info.infotext : "";
}

export function resultCards(result: TaskResult, actions: ResultActions = {}, labels: string[] = []): HTMLElement {
  return h("div", { class: "results" }, result.urls.map((url, n) => {
    const infotext = infotextOf(result, n);
    const copy = h("button", { type: "button", class: "secondary" }, t("copyParams"));
    copy.addEventListener("click", async () => {
      await navigator.clipboard.writeText(infotext).catch(() => undefined);
      copy.textContent = t("copied");
    });
    const key = result.images[n];
    return h("figure", { class: "result", "data-testid": "result" },
      labels[n] ? h("figcaption", {}, labels[n]) : null,
      h("img", { src: url, alt: t("resultAlt", { n: n + 1 }), width: 192, height: 192 }),
      infotext ? h("pre", { class: "infotext", "data-testid": "infotext" }, infotext) : null,
      h("div", { class: "actions" },
        infotext ? copy : null,
        h("a", { class: "button secondary", href: url, download: `${result.taskId}-${n}.png` }, t("download")),
        actions.sendToImg2img
          ? h("button", { type: "button", class: "secondary", onclick: () => actions.sendToImg2img!(key, url) }, t("sendToImg2img"))
          : null,
        actions.upscale
          ? h("button", { type: "button", class: "secondary", onclick: () => actions.upscale!(key) }, t("upscale"))
          : null,
      ));
  }));
}

/** Follows a submitted task in `host` until it ends; answers its result. */
export async function follow(host: HTMLElement, accepted: TaskAccepted, showPreview = true): Promise<TaskResult> {
  const bar = h("progress", { max: 1, value: 0, "aria-label": t("progressLabel") });
  const text = h("div", { class: "hint", "aria-live": "polite", "data-testid": "progress-text" }, t("queued"));
  const preview = h("img", { class: "preview", alt: t("previewAlt"), hidden: true });
  const cancel = h("button", { type: "button", class: "secondary", "data-testid": "cancel" }, t("cancel"));
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    await call(`/tasks/${encodeURIComponent(accepted.taskId)}/cancellation`, { method: "POST" }).catch(() => undefined);
  });
  const box = h("div", { class: "task", "data-task-id": accepted.taskId }, bar, text, cancel, showPreview ? preview : null);
  host.replaceChildren(box);
  let status = accepted.status;
  while (!TERMINAL.has(status)) {
    await sleep(POLL_MS);
    let p: TaskProgress;
    try {
      p = await call<TaskProgress>(`/tasks/${encodeURIComponent(accepted.taskId)}/progress`, { quiet: true });
    } catch {
      continue; // a dropped poll: the next one tries again
    }
    status = p.status;
    bar.value = p.progress;
    if (status === "running" && p.state.samplingSteps > 0) {
      text.textContent = t("running", {
        step: p.state.samplingStep, steps: p.state.samplingSteps, eta: Math.max(0, Math.round(p.etaRelative)),
      });
    }
    if (p.currentImage) {
      preview.src = p.currentImage.startsWith("data:") ? p.currentImage : `data:image/png;base64,${p.currentImage}`;
      preview.hidden = false;
    }
  }
  const result = await call<TaskResult>(`/tasks/${encodeURIComponent(accepted.taskId)}/result`);
  bar.value = 1;
  cancel.remove();
  text.textContent = result.status === "failed"
    ? t("taskFailed", { error: result.error ?? "" })
    : t("taskEnded", { status: statusText(result.status) });
  text.setAttribute("data-status", result.status);
  return result;
}
