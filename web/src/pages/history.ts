// History: the caller's tasks, newest first, a page at a time by the API's cursor, with a
// status filter and a detail view.
import { call, type TaskList, type TaskResult, type TaskSummary } from "../api";
import { field, h, select } from "../dom";
import { language, statusText, t } from "../i18n";
import { resultCards } from "../task";
import { sendToImg2img } from "./generate";

const PAGE = 10;
const state = { status: "", cursors: [] as (string | null)[], shown: 0 };

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString(language() === "zh" ? "zh-CN" : "en-GB") : "–";
}

function seconds(a: string | null, b: string | null): string {
  if (!a || !b) return "–";
  return `${((Date.parse(b) - Date.parse(a)) / 1000).toFixed(1)} s`;
}

async function thumbnail(task: TaskSummary, cell: HTMLElement): Promise<void> {
  if (!task.images.length) return;
  try {
    const result = await call<TaskResult>(`/tasks/${encodeURIComponent(task.taskId)}/result`, { quiet: true });
    if (result.urls[0]) cell.append(h("img", { src: result.urls[0], alt: task.prompt || task.taskId, width: 64, height: 64, loading: "lazy" }));
  } catch {
    // no thumbnail: the row still shows the task
  }
}

async function detail(main: HTMLElement, taskId: string): Promise<void> {
  const mine = ++state.shown;
  const result = await call<TaskResult>(`/tasks/${encodeURIComponent(taskId)}/result`);
  if (mine !== state.shown) return; // the user went on meanwhile
  const back = h("button", { type: "button", class: "secondary" }, t("back"));
  back.addEventListener("click", () => void historyPage(main));
  const timings = result.timings;
  main.replaceChildren(
    h("h1", {}, `${t("task")} ${result.taskId}`),
    back,
    h("p", { class: `status-${result.status}`, "data-testid": "detail-status" }, `${t("status")}: ${statusText(result.status)}`),
    result.error ? h("p", { class: "error" }, result.error) : "",
    h("h2", {}, t("timings")),
    h("p", {}, `${t("created")}: ${when(timings.createdAt)} · ${t("took")}: ${seconds(timings.startedAt, timings.finishedAt)}`),
    resultCards(result, { sendToImg2img: (key, url) => sendToImg2img({ value: key, url }) }),
    h("h2", {}, t("parameters")),
    h("pre", { class: "infotext" }, JSON.stringify(result.parameters, null, 2)),
  );
}

export async function historyPage(main: HTMLElement): Promise<void> {
  main.setAttribute("aria-busy", "true");
  try {
    await listPage(main);
  } finally {
    main.removeAttribute("aria-busy");
  }
}

async function listPage(main: HTMLElement): Promise<void> {
  // a slower, earlier listing must not replace the one asked for after it
  const mine = ++state.shown;
  const filter = select([["", t("all")], ...["queued", "running", "succeeded", "failed", "cancelled"].map((s): [string, string] => [s, statusText(s)])], state.status);
  filter.addEventListener("change", () => {
    state.status = filter.value;
    state.cursors = [];
    void historyPage(main);
  });
  const cursor = state.cursors[state.cursors.length - 1] ?? null;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.status) query.set("status", state.status);
  if (cursor) query.set("cursor", cursor);
  const list = await call<TaskList>(`/tasks?${query}`);
  if (mine !== state.shown) return;
  const cells: [TaskSummary, HTMLElement][] = [];
  const rows = list.tasks.map((task) => {
    const cell = h("td", {});
    cells.push([task, cell]);
    const open = h("button", { type: "button", class: "secondary", "aria-label": `${t("details")}: ${task.taskId}` }, t("details"));
    open.addEventListener("click", () => void detail(main, task.taskId));
    return h("tr", { "data-testid": "history-row", "data-task-id": task.taskId },
      cell,
      h("td", {}, task.prompt || task.kind),
      h("td", { class: `status-${task.status}` }, statusText(task.status)),
      h("td", {}, when(task.timings.createdAt)),
      h("td", {}, seconds(task.timings.startedAt, task.timings.finishedAt)),
      h("td", {}, open));
  });
  const first = h("button", { type: "button", class: "secondary", disabled: state.cursors.length === 0 }, t("newer"));
  first.addEventListener("click", () => { state.cursors = []; void historyPage(main); });
  const next = h("button", { type: "button", class: "secondary", disabled: !list.cursor, "data-testid": "next-page" }, t("older"));
  next.addEventListener("click", () => { state.cursors.push(list.cursor); void historyPage(main); });
  main.replaceChildren(
    h("h1", {}, t("historyTitle")),
    h("div", { class: "row" }, field(t("status"), filter)),
    rows.length
      ? h("table", {},
          h("thead", {}, h("tr", {}, [t("image"), t("prompt"), t("status"), t("created"), t("took"), ""].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows))
      : h("p", {}, t("noTasks")),
    h("div", { class: "row" }, first, next),
  );
  // thumbnails one at a time (the API caps a caller's requests in flight)
  for (const [task, cell] of cells) {
    if (mine !== state.shown) return;
    await thumbnail(task, cell);
  }
}
