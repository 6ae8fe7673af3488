// Remove people: upload a photo, see the edited photo and the mask that was used.
import { call, type TaskAccepted } from "../api";
import { field, h, num, readFile } from "../dom";
import { t } from "../i18n";
import { follow, resultCards } from "../task";

export async function removePage(main: HTMLElement): Promise<void> {
  const file = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", required: true });
  const prompt = h("input", { type: "text", value: "an empty room" });
  const steps = num(20, 1, 150);
  const dilate = num(16, 0, 256); // the API's defaults: the mask grows 16 px, its edge blurs 8
  const blur = num(8, 0, 64);
  const width = h("input", { type: "number", min: 64, max: 2048, step: 8, inputmode: "numeric" });
  const height = h("input", { type: "number", min: 64, max: 2048, step: 8, inputmode: "numeric" });
  const host = h("div", {});
  const results = h("div", {});
  const submit = h("button", { type: "submit" }, t("removeRun"));
  const form = h("form", {},
    field(t("photo"), file),
    field(t("removePrompt"), prompt),
    h("div", { class: "row" }, field(t("steps"), steps), field(t("width"), width, t("sizeHint")), field(t("height"), height, t("sizeHint"))),
    h("div", { class: "row" }, field(t("dilate"), dilate), field(t("blur"), blur)),
    submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) return;
    submit.disabled = true;
    try {
      const body: Record<string, unknown> = { image: await readFile(chosen), prompt: prompt.value, steps: Number(steps.value),
        dilate: Number(dilate.value), blur: Number(blur.value) };
      if (width.value) body.width = Number(width.value);
      if (height.value) body.height = Number(height.value);
      const accepted = await call<TaskAccepted>("/edits/remove", { body, async: true });
      const result = await follow(host, accepted, false);
      const coverage = Number(result.info.maskCoverage ?? 0);
      results.replaceChildren(
        h("p", { "data-testid": "coverage" }, t("coverage", { pct: (coverage * 100).toFixed(1) })),
        resultCards(result, {}, [t("removeResult"), t("removeMask")]),
      );
    } catch {
      // the notice says why
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(h("h1", {}, t("removeTitle")), form, host, results);
}
