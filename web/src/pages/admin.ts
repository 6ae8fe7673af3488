// Admin (an admin key only; the API answers a user key 403 on /admin/*): model upload, the
// model registry with each model's details, rename and delete, the inference functions and
// their batch update, users and their keys. A new key is shown once and never stored.
import { call } from "../api";
import { field, h, select } from "../dom";
import { language, t } from "../i18n";
import { type AdminModel, enc, modelStatusText, stageText, uploadPanel } from "./adminUpload";

interface FunctionInfo {
  name: string; model: string; resources: Record<string, unknown>; status: string;
  lastUsed: string | null; pid: number | null; createdTime: string | null;
}
interface KeyInfo { prefix: string; revoked: boolean; createdTime: string | null }
interface UserListing { name: string; role: string; disabled: boolean; createdTime: string | null; keys: KeyInfo[] }
interface UserCreated { name: string; apiKey: string; webhookSecret: string }
interface NewKey { name: string; apiKey: string }

// the sections of the page shown now (the upload panel outlives a render while it runs)
const shown = { models: async () => {} };

export async function adminPage(main: HTMLElement): Promise<void> {
  const models = h("section", { "aria-labelledby": "models-title" });
  const functions = h("section", { "aria-labelledby": "functions-title" });
  const secret = h("div", {});
  const users = h("section", { "aria-labelledby": "users-title" });
  // one after another: the local stack caps the requests a caller has in flight
  await modelsSection(models);
  await functionsSection(functions);
  await usersSection(users, secret);
  shown.models = () => modelsSection(models);
  main.replaceChildren(
    h("h1", {}, t("admin")),
    h("section", { class: "panel" }, uploadPanel(() => void shown.models().catch(() => undefined))),
    models, functions, users);
}

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString(language() === "zh" ? "zh-CN" : "en-GB") : "–";
}

function bytes(n: number | null | undefined): string {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function headers(...names: string[]): HTMLTableSectionElement {
  // an empty heading still names its column for a screen reader
  return h("thead", {}, h("tr", {}, names.map((c) => h("th", { scope: "col" }, c || h("span", { class: "sr-only" }, t("actions"))))));
}

/** A button that asks before it acts: the question, Confirm and Cancel replace it. */
function confirmButton(label: string, target: string, question: string, action: () => Promise<void>): HTMLElement {
  const wrap = h("span", { class: "confirm" });
  const first = h("button", { type: "button", class: "danger", "aria-label": `${label}: ${target}` }, label);
  first.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger", "aria-label": `${t("confirm")}: ${label} ${target}` }, t("confirm"));
    const no = h("button", { type: "button", class: "secondary" }, t("cancel"));
    no.addEventListener("click", () => { wrap.replaceChildren(first); first.focus(); });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await action();
      } catch {
        // the notice says why
      }
      yes.disabled = false;
    });
    wrap.replaceChildren(h("span", { role: "group", "aria-label": question }, h("span", {}, question), yes, no));
    yes.focus();
  });
  wrap.append(first);
  return wrap;
}

// --- models ----------------------------------------------------------------------------------
function statusLine(m: AdminModel): string {
  let text = modelStatusText(m.status);
  if (m.pending) {
    text += ` · ${stageText(m.pending.stage)}`;
    if (m.pending.progress !== null && !m.pending.error) text += ` ${Math.floor(m.pending.progress * 100)} %`;
  }
  const error = m.pending?.error ?? m.error;
  return error ? `${text}: ${error}` : text;
}

async function modelsSection(el: HTMLElement): Promise<void> {
  const models = await call<AdminModel[]>("/admin/models");
  const detail = h("div", { class: "detail" });
  const refresh = h("button", { type: "button", class: "secondary" }, t("refresh"));
  refresh.addEventListener("click", () => void modelsSection(el).catch(() => undefined));
  const rows = models.map((m) => {
    const open = h("button", { type: "button", class: "secondary", "aria-label": `${t("details")}: ${m.name}` }, t("details"));
    open.addEventListener("click", () => void modelDetail(detail, m.name, el).catch(() => undefined));
    const failed = Boolean(m.pending?.error ?? m.error);
    return h("tr", { "data-testid": "admin-model", "data-name": m.name, "data-status": m.status },
      h("td", {}, m.name), h("td", {}, m.type),
      h("td", { class: failed ? "error" : undefined, "data-testid": "model-status" }, statusLine(m)),
      h("td", {}, bytes(m.size || m.pending?.bytesDone)), h("td", {}, String(m.version)), h("td", {}, open));
  });
  el.replaceChildren(
    h("h2", { id: "models-title" }, t("adminModels")),
    refresh,
    models.length
      ? h("table", {}, headers(t("name"), t("type"), t("status"), t("size"), t("version"), ""), h("tbody", {}, rows))
      : h("p", {}, t("noModels")),
    detail);
}

async function modelDetail(host: HTMLElement, name: string, list: HTMLElement): Promise<void> {
  const m = await call<AdminModel>(`/admin/models/${enc(name)}`);
  const newName = h("input", { type: "text", value: m.name, required: true, maxlength: 128, autocomplete: "off", spellcheck: "false" });
  const rename = h("form", { class: "row" }, field(t("newName"), newName), h("button", { type: "submit" }, t("rename")));
  rename.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const renamed = await call<AdminModel>(`/admin/models/${enc(m.name)}/rename`, { body: { newName: newName.value.trim() } });
      await modelsSection(list);
      await modelDetail(list.querySelector(".detail")!, renamed.name, list);
    } catch {
      // the notice says why
    }
  });
  const gone = async () => {
    host.replaceChildren();
    await modelsSection(list);
  };
  const remove = confirmButton(t("delete"), m.name, t("deleteModelQ", { name: m.name }), async () => {
    await call<AdminModel>(`/admin/models/${enc(m.name)}`, { method: "DELETE" });
    await gone();
  });
  const abort = m.pending && !m.pending.error
    ? confirmButton(t("upAbort"), m.name, t("abortQ", { name: m.name }), async () => {
      await call<AdminModel>(`/admin/models/${enc(m.name)}/upload`, { method: "DELETE" });
      await modelsSection(list);
    })
    : "";
  const close = h("button", { type: "button", class: "secondary" }, t("close"));
  close.addEventListener("click", () => host.replaceChildren());
  const item = (label: string, value: string | Node) => [h("dt", {}, label), h("dd", {}, value)];
  const p = m.pending;
  const title = h("h3", { tabindex: -1 }, t("modelTitle", { name: m.name }));
  host.replaceChildren(
    title,
    h("dl", { class: "facts", "data-testid": "model-detail" },
      item(t("type"), m.type),
      item(t("status"), statusLine(m)),
      item(t("version"), String(m.version)),
      item(t("size"), bytes(m.size)),
      item("SHA-256", h("code", { class: "wrap" }, m.sha256 || "–")),
      item(t("format"), m.format ?? "–"),
      item(t("upConfig"), m.config),
      item(t("registered"), when(m.registeredTime)),
      item(t("modified"), when(m.lastModificationTime)),
      p ? item(t("pendingVersion"), `${stageText(p.stage)}, ${bytes(p.bytesDone)}${p.progress !== null ? ` (${Math.floor(p.progress * 100)} %)` : ""}${p.source ? `, ${p.source}` : ""}`) : [],
      m.error || p?.error ? item(t("error"), h("span", { class: "error" }, p?.error ?? m.error ?? "")) : [],
      Object.keys(m.details ?? {}).length ? item(t("modelDetails"), h("pre", { class: "infotext" }, JSON.stringify(m.details, null, 2))) : []),
    rename,
    h("div", { class: "row" }, abort, remove, close));
  title.focus();
}

// --- functions -------------------------------------------------------------------------------
function resourcesText(resources: Record<string, unknown>): string {
  const parts = Object.entries(resources).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  return parts.join(", ") || "–";
}

async function functionsSection(el: HTMLElement): Promise<void> {
  const functions = await call<FunctionInfo[]>("/admin/functions");
  const boxes = functions.map((f) => ({ model: f.model, box: h("input", { type: "checkbox", "aria-label": t("fnPick", { name: f.model }) }) }));
  const rows = functions.map((f, i) => h("tr", { "data-testid": "admin-function", "data-model": f.model },
    h("td", {}, boxes[i].box), h("td", {}, f.model), h("td", {}, f.name), h("td", {}, f.status),
    h("td", { class: "wrap" }, resourcesText(f.resources)), h("td", {}, when(f.lastUsed))));
  // empty: left as it is
  const optional = (min: number, max: number, step = 1) => h("input", { type: "number", min, max, step, inputmode: "decimal" });
  const memory = optional(128, 262144);
  const cpu = optional(0.25, 256, 0.25);
  const gpu = optional(0, 1048576);
  const timeout = optional(1, 86400);
  const image = h("input", { type: "text", autocomplete: "off", spellcheck: "false" });
  const env = h("textarea", { spellcheck: "false", rows: 2 });
  const args = h("textarea", { spellcheck: "false", rows: 2 });
  const fleet = select([["", t("unchanged")], ["lambda", "Lambda"], ["sagemaker", "SageMaker"]], "");
  const instanceType = h("input", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "ml.g5.xlarge" });
  const minimum = optional(0, 100);
  const maximum = optional(1, 100);
  const said = h("p", { "aria-live": "polite", "data-testid": "functions-status" });
  const form = h("form", { "aria-labelledby": "fn-update-title" },
    h("h3", { id: "fn-update-title" }, t("fnUpdate")),
    h("p", { class: "hint" }, t("fnUpdateHelp")),
    h("div", { class: "row" },
      field(t("fnMemory"), memory), field(t("fnCpu"), cpu), field(t("fnGpu"), gpu), field(t("fnTimeout"), timeout)),
    field(t("fnImage"), image),
    h("div", { class: "row two" }, field(t("fnEnv"), env, t("fnEnvHint")), field(t("fnArgs"), args, t("fnArgsHint"))),
    h("div", { class: "row" },
      field(t("fnFleet"), fleet), field(t("fnInstanceType"), instanceType), field(t("fnMin"), minimum), field(t("fnMax"), maximum)),
    h("button", { type: "submit" }, t("fnApply")),
    said);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body: Record<string, unknown> = {};
    const models = boxes.filter((b) => b.box.checked).map((b) => b.model);
    if (models.length) body.models = models;
    for (const [key, input] of [["memory", memory], ["cpu", cpu], ["gpuMemory", gpu], ["timeout", timeout],
      ["minInstances", minimum], ["maxInstances", maximum]] as const) {
      if (input.value.trim()) body[key] = Number(input.value);
    }
    if (image.value.trim()) body.image = image.value.trim();
    if (instanceType.value.trim()) body.instanceType = instanceType.value.trim();
    if (fleet.value) body.fleet = fleet.value;
    if (env.value.trim()) {
      body.env = Object.fromEntries(env.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const at = l.indexOf("=");
        return at < 0 ? [l, ""] : [l.slice(0, at).trim(), l.slice(at + 1)];
      }));
    }
    if (args.value.trim()) body.extraArgs = args.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (Object.keys(body).every((k) => k === "models")) {
      said.textContent = t("fnNothing");
      return;
    }
    try {
      const updated = await call<FunctionInfo[]>("/admin/functions/batch-update", { body });
      await functionsSection(el);
      el.querySelector<HTMLElement>("[data-testid=functions-status]")!.textContent = t("fnUpdated", { n: updated.length });
    } catch {
      // the notice says why (a 422 names the field)
    }
  });
  el.replaceChildren(
    h("h2", { id: "functions-title" }, t("fnTitle")),
    functions.length
      ? h("table", {}, headers(t("fnPickColumn"), t("model"), t("fnName"), t("status"), t("fnResources"), t("fnLastUsed")), h("tbody", {}, rows))
      : h("p", {}, t("noFunctions")),
    form);
}

// --- users and keys --------------------------------------------------------------------------
/** A new key (and webhook secret), shown this once: copy it now; it is kept nowhere. */
function showSecret(host: HTMLElement, user: string, secrets: [string, string][]): void {
  const done = h("button", { type: "button", class: "secondary" }, t("secretDone"));
  done.addEventListener("click", () => host.replaceChildren());
  const title = h("h3", { id: "secret-title", tabindex: -1 }, t("secretTitle", { name: user }));
  host.replaceChildren(h("div", { class: "secret", role: "region", "aria-labelledby": "secret-title", "data-testid": "secret" },
    title,
    h("p", {}, t("secretOnce")),
    secrets.map(([label, value]) => {
      const box = h("input", { type: "text", readonly: true, value, spellcheck: "false", autocomplete: "off", class: "mono" });
      const copy = h("button", { type: "button", "aria-label": `${t("copy")}: ${label}` }, t("copy"));
      const said = h("span", { "aria-live": "polite", class: "hint" });
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(value);
          said.textContent = t("copied");
        } catch {
          // no clipboard (an insecure context, or refused): the key is selected to copy by hand
          box.select();
          said.textContent = t("copyByHand");
        }
      });
      return h("div", { class: "row" }, field(label, box), copy, said);
    }),
    done));
  title.focus();
}

async function usersSection(el: HTMLElement, secret: HTMLElement): Promise<void> {
  const users = await call<UserListing[]>("/admin/users");
  const again = () => usersSection(el, secret);
  const rows = users.map((u) => {
    const issue = h("button", { type: "button", class: "secondary", disabled: u.disabled, "aria-label": `${t("newKey")}: ${u.name}` }, t("newKey"));
    issue.addEventListener("click", async () => {
      try {
        const key = await call<NewKey>(`/admin/users/${enc(u.name)}/keys`, { method: "POST" });
        await again();
        showSecret(secret, key.name, [[t("apiKey"), key.apiKey]]);
      } catch {
        // the notice says why
      }
    });
    const revoke = u.disabled ? "" : confirmButton(t("revoke"), u.name, t("revokeQ", { name: u.name }), async () => {
      await call(`/admin/users/${enc(u.name)}/revoke`, { method: "POST" });
      await again();
    });
    const keys = h("ul", { class: "keys" }, u.keys.map((k) =>
      h("li", { class: k.revoked ? "revoked" : undefined }, h("code", {}, `${k.prefix}…`), k.revoked ? ` (${t("revokedKey")})` : "")));
    return h("tr", { "data-testid": "admin-user", "data-name": u.name, "data-disabled": String(u.disabled) },
      h("td", {}, u.name), h("td", {}, u.role),
      h("td", { class: u.disabled ? "status-failed" : undefined }, u.disabled ? t("userDisabled") : t("userActive")),
      h("td", {}, keys), h("td", {}, when(u.createdTime)), h("td", {}, h("div", { class: "actions" }, issue, revoke)));
  });
  const name = h("input", { type: "text", required: true, maxlength: 63, autocomplete: "off", spellcheck: "false" });
  const role = select([["user", "user"], ["admin", "admin"]], "user");
  const create = h("form", { class: "row", "aria-labelledby": "user-new-title" },
    h("h3", { id: "user-new-title", class: "full" }, t("userNew")),
    field(t("userName"), name), field(t("role"), role), h("button", { type: "submit" }, t("userCreate")));
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const created = await call<UserCreated>("/admin/users", { body: { name: name.value.trim(), role: role.value } });
      await again();
      showSecret(secret, created.name, [[t("apiKey"), created.apiKey], [t("webhookSecret"), created.webhookSecret]]);
    } catch {
      // the notice says why (a taken name is a 409)
    }
  });
  el.replaceChildren(
    h("h2", { id: "users-title" }, t("usersTitle")),
    secret,
    h("table", {}, headers(t("name"), t("role"), t("status"), t("keys"), t("created"), ""), h("tbody", {}, rows)),
    create);
}
