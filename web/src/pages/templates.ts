// Templates: run one with a prompt, or run several as a batch and see its comparison grid.
import { call, TERMINAL, type BatchView, type TaskAccepted, type Template } from "../api";
import { field, h } from "../dom";
import { statusText, t } from "../i18n";
import { follow, resultCards } from "../task";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function templatesPage(main: HTMLElement): Promise<void> {
  const templates = await call<Template[]>("/templates");
  const prompt = h("textarea", { name: "prompt" }, "a red circle");
  const host = h("div", {});
  const results = h("div", {});
  const boxes: { name: string; box: HTMLInputElement }[] = [];
  const rows = templates.map((tpl) => {
    const box = h("input", { type: "checkbox", "aria-label": t("batchOf", { name: tpl.name }) });
    boxes.push({ name: tpl.name, box });
    const run = h("button", { type: "button", "aria-label": `${t("runTemplate")}: ${tpl.name}` }, t("runTemplate"));
    run.addEventListener("click", async () => {
      try {
        const accepted = await call<TaskAccepted>(`/templates/${encodeURIComponent(tpl.name)}/run`, { body: { prompt: prompt.value }, async: true });
        results.prepend(resultCards(await follow(host, accepted)));
      } catch {
        // the notice says why
      }
    });
    return h("tr", {}, h("td", {}, box), h("td", {}, tpl.name), h("td", {}, tpl.description), h("td", {}, tpl.folder), h("td", {}, run));
  });
  const batch = h("button", { type: "button" }, t("runBatch"));
  batch.addEventListener("click", async () => {
    const names = boxes.filter((b) => b.box.checked).map((b) => b.name);
    if (!names.length) return;
    try {
      let view = await call<BatchView>("/batches", { body: { templates: names, prompt: prompt.value, grid: true } });
      const status = h("p", { "aria-live": "polite" });
      host.replaceChildren(status);
      while (view.status === "running" || (!view.gridUrl && !TERMINAL.has(view.status) && view.status !== "partial")) {
        status.textContent = t("batchStatus", { status: statusText(view.status), pct: Math.round(view.progress * 100) });
        await sleep(500);
        view = await call<BatchView>(`/batches/${encodeURIComponent(view.batchId)}`);
      }
      status.textContent = t("batchStatus", { status: statusText(view.status), pct: Math.round(view.progress * 100) });
      if (view.gridUrl) results.prepend(h("figure", { class: "grid" }, h("figcaption", {}, t("grid")), h("img", { src: view.gridUrl, alt: t("grid") })));
    } catch {
      // the notice says why
    }
  });
  main.replaceChildren(
    h("h1", {}, t("templatesTitle")),
    field(t("prompt"), prompt),
    templates.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["", t("template"), "", "", ""].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))
      : h("p", {}, t("noTemplates")),
    templates.length ? batch : "",
    host,
    results,
  );
}
