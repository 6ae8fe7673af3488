// Generate: txt2img, img2img and inpainting (a mask painted on a canvas), the hires fix, LoRAs
// and a VAE from the registry, then extras' upscale of a result.
import { call, type ModelListing, type TaskAccepted, type TaskResult } from "../api";
import { field, h, num, readFile, select } from "../dom";
import { t } from "../i18n";
import { follow, resultCards } from "../task";

interface Source { value: string; url: string }

// what "send to img2img" hands over from another page (History)
let pending: Source | null = null;
export function sendToImg2img(source: Source): void {
  pending = source;
  location.hash = "#/generate";
}

let lastSeed: number | null = null;

async function listing<T>(path: string, fallback: T): Promise<T> {
  try {
    return await call<T>(path, { quiet: true });
  } catch {
    return fallback;
  }
}

export async function generatePage(main: HTMLElement): Promise<void> {
  // one after another: the API caps how many requests a caller has in flight at once
  const models = await listing<ModelListing[]>("/models", []);
  const samplers = await listing<{ name: string }[]>("/sdapi/v1/samplers", [{ name: "Euler" }]);
  const schedulers = await listing<{ name: string; label: string }[]>("/sdapi/v1/schedulers", [{ name: "automatic", label: "Automatic" }]);
  const usable = models.filter((m) => m.status !== "deleted" && m.status !== "registering");
  const of = (type: string) => usable.filter((m) => m.type === type).map((m) => m.name);

  const prompt = h("textarea", { name: "prompt", required: true }, "a red circle on a white background");
  const negative = h("textarea", { name: "negative_prompt" });
  const model = select([["", t("modelDefault")], ...of("checkpoint").map((n): [string, string] => [n, n])]);
  const sampler = select(samplers.map((s): [string, string] => [s.name, s.name]), "Euler");
  const schedule = select(schedulers.map((s): [string, string] => [s.name, s.label ?? s.name]), "automatic");
  const steps = num(20, 1, 150, 1, { name: "steps" });
  const cfg = num(7, 1, 30, 0.5, { name: "cfg_scale" });
  // empty: the checkpoint's own size (64 for the demo, 512 or 1024 for real ones)
  const width = h("input", { type: "number", min: 64, max: 2048, step: 8, inputmode: "numeric", name: "width" });
  const height = h("input", { type: "number", min: 64, max: 2048, step: 8, inputmode: "numeric", name: "height" });
  const seed = num(-1, -1, 4294967295, 1, { name: "seed" });
  const reuse = h("button", { type: "button", class: "secondary" }, t("reuseSeed"));
  reuse.addEventListener("click", () => { if (lastSeed !== null) seed.value = String(lastSeed); });
  const random = h("button", { type: "button", class: "secondary" }, t("randomSeed"));
  random.addEventListener("click", () => { seed.value = "-1"; });
  const nIter = num(1, 1, 16, 1, { name: "n_iter" });
  const batchSize = num(1, 1, 8, 1, { name: "batch_size" });
  const hires = h("input", { type: "checkbox", name: "enable_hr", id: "enable_hr" });
  const hrScale = num(2, 1, 4, 0.25, { name: "hr_scale" });
  const denoising = num(0.7, 0, 1, 0.05, { name: "denoising_strength" });
  const vae = select([["", t("vaeDefault")], ...of("vae").map((n): [string, string] => [n, n])]);
  const loraRows = of("lora").map((name) => {
    const box = h("input", { type: "checkbox", value: name, id: `lora-${name}` });
    const weight = num(1, -2, 2, 0.05, { "aria-label": t("loraWeight", { name }) });
    return { name, box, weight, row: h("div", { class: "inline" }, box, h("label", { for: box.id, class: "inline" }, name), weight) };
  });

  // img2img source and inpainting mask
  let source: Source | null = pending;
  pending = null;
  const file = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp" });
  const sourceImg = h("img", { alt: t("source") });
  const canvas = h("canvas", { "aria-label": t("mask"), tabindex: 0 });
  const brush = num(6, 1, 64, 1);
  let painted = false;
  const paintBox = h("div", { class: "paint" }, sourceImg, canvas);
  const clearMask = h("button", { type: "button", class: "secondary" }, t("clearMask"));
  const clearImage = h("button", { type: "button", class: "secondary" }, t("clearImage"));
  const sourcePanel = h("div", { hidden: true }, h("p", { class: "hint" }, t("mask")), paintBox,
    h("div", { class: "row" }, field(t("brush"), brush), clearMask, clearImage));
  function showSource(): void {
    sourcePanel.hidden = !source;
    if (!source) return;
    sourceImg.src = source.url;
    painted = false;
  }
  sourceImg.addEventListener("load", () => {
    canvas.width = sourceImg.naturalWidth;
    canvas.height = sourceImg.naturalHeight;
    width.value = String(sourceImg.naturalWidth - (sourceImg.naturalWidth % 8));
    height.value = String(sourceImg.naturalHeight - (sourceImg.naturalHeight % 8));
  });
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    if (!chosen) return;
    const data = await readFile(chosen);
    source = { value: data, url: data };
    showSource();
  });
  clearImage.addEventListener("click", () => { source = null; file.value = ""; showSource(); });
  clearMask.addEventListener("click", () => {
    canvas.getContext("2d")!.clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
  });
  let drawing = false;
  const paint = (ev: PointerEvent) => {
    const rect = canvas.getBoundingClientRect();
    const x = ((ev.clientX - rect.left) / rect.width) * canvas.width;
    const y = ((ev.clientY - rect.top) / rect.height) * canvas.height;
    const ctx = canvas.getContext("2d")!;
    ctx.fillStyle = "#ffffff";
    ctx.beginPath();
    ctx.arc(x, y, Number(brush.value) / 2, 0, Math.PI * 2);
    ctx.fill();
    painted = true;
  };
  canvas.addEventListener("pointerdown", (ev) => { drawing = true; canvas.setPointerCapture(ev.pointerId); paint(ev); });
  canvas.addEventListener("pointermove", (ev) => { if (drawing) paint(ev); });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  function maskDataUrl(): string {
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const ctx = out.getContext("2d")!;
    ctx.fillStyle = "#000000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(canvas, 0, 0);
    return out.toDataURL("image/png");
  }

  const taskHost = h("div", { "data-testid": "task" });
  const resultsHost = h("div", { "data-testid": "results" });
  const submit = h("button", { type: "submit" }, t("generate"));

  function body(): Record<string, unknown> {
    const loras = loraRows.filter((r) => r.box.checked).map((r) => `<lora:${r.name}:${r.weight.value}>`);
    const b: Record<string, unknown> = {
      prompt: [prompt.value, ...loras].filter(Boolean).join(" "),
      negative_prompt: negative.value,
      sampler_name: sampler.value,
      scheduler: schedule.value,
      steps: Number(steps.value),
      cfg_scale: Number(cfg.value),
      seed: Number(seed.value),
      n_iter: Number(nIter.value),
      batch_size: Number(batchSize.value),
    };
    if (width.value) b.width = Number(width.value);
    if (height.value) b.height = Number(height.value);
    if (model.value) b.stable_diffusion_model = model.value;
    if (vae.value) b.sd_vae = vae.value;
    if (source) {
      b.init_images = [source.value];
      b.denoising_strength = Number(denoising.value);
      if (painted) b.mask = maskDataUrl();
    } else if (hires.checked) {
      Object.assign(b, { enable_hr: true, hr_scale: Number(hrScale.value), denoising_strength: Number(denoising.value) });
    }
    return b;
  }

  async function run(route: string, payload: Record<string, unknown>): Promise<void> {
    submit.disabled = true;
    try {
      const accepted = await call<TaskAccepted>(route, { body: payload, async: true });
      const result: TaskResult = await follow(taskHost, accepted);
      const seedUsed = Number(result.info.seed ?? result.parameters.seed);
      if (Number.isFinite(seedUsed) && seedUsed >= 0) lastSeed = seedUsed;
      resultsHost.prepend(resultCards(result, {
        sendToImg2img: (key, url) => { source = { value: key, url }; showSource(); prompt.focus(); },
        upscale: (key) => void run("/extra_images", { image: key, upscaling_resize: 2, upscaler_1: "Lanczos" }),
      }));
    } catch {
      // the notice says why
    } finally {
      submit.disabled = false;
    }
  }

  const form = h("form", { "aria-labelledby": "gen-title", novalidate: true },
    field(t("prompt"), prompt),
    field(t("negativePrompt"), negative),
    h("div", { class: "row" }, field(t("model"), model), field(t("vae"), vae)),
    h("div", { class: "row" }, field(t("sampler"), sampler), field(t("schedule"), schedule)),
    h("div", { class: "row" }, field(t("steps"), steps), field(t("cfg"), cfg), field(t("width"), width, t("modelSize")), field(t("height"), height, t("modelSize"))),
    h("div", { class: "row" }, field(t("seed"), seed, t("seedHint")), reuse, random),
    h("div", { class: "row" }, field(t("batchCount"), nIter), field(t("batchSize"), batchSize)),
    h("fieldset", {}, h("legend", {}, t("hires")),
      h("div", { class: "row" }, h("label", { for: "enable_hr", class: "inline" }, hires, t("hires")),
        field(t("hiresScale"), hrScale), field(t("denoising"), denoising))),
    h("fieldset", {}, h("legend", {}, t("loras")), loraRows.length ? loraRows.map((r) => r.row) : h("p", { class: "hint" }, t("noLoras"))),
    h("fieldset", {}, h("legend", {}, t("source")), field(t("source"), file, t("sourceHint")), sourcePanel),
    submit,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void run(source ? "/img2img" : "/txt2img", body());
  });
  main.replaceChildren(
    h("h1", { id: "gen-title" }, t("navGenerate")),
    h("div", { class: "layout" }, form, h("section", { "aria-label": t("results") }, h("h2", {}, t("results")), taskHost, resultsHost)),
  );
  showSource();
}
