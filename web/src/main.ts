// The app's shell: sign-in, the navigation (pages by #/hash), the language switch and the one
// notice every refused request reports to.
import { type Account, ApiError, call, loadConfig, onAccepted, onApiError, session } from "./api";
import { field, h } from "./dom";
import { type Key, language, setLanguage, t } from "./i18n";
import { adminPage } from "./pages/admin";
import { generatePage } from "./pages/generate";
import { historyPage } from "./pages/history";
import { removePage } from "./pages/remove";
import { templatesPage } from "./pages/templates";

interface Page { path: string; label: Key; render: (main: HTMLElement) => Promise<void>; admin?: boolean }

// admin pages join this list with `admin: true`: shown to an admin key only (the API enforces it)
const PAGES: Page[] = [
  { path: "generate", label: "navGenerate", render: generatePage },
  { path: "history", label: "navHistory", render: historyPage },
  { path: "templates", label: "navTemplates", render: templatesPage },
  { path: "remove", label: "navRemove", render: removePage },
  { path: "admin", label: "admin", render: adminPage, admin: true },
];

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const notice = document.getElementById("notice")!;
const signOut = document.getElementById("signout") as HTMLButtonElement;
const lang = document.getElementById("lang") as HTMLSelectElement;
let account: Account | null = null;
let countdown: number | undefined;

function say(text: string, kind: "error" | "info" = "error"): void {
  window.clearInterval(countdown);
  notice.textContent = text;
  notice.className = kind === "info" ? "info" : "";
  notice.hidden = false;
}

function quiet(): void {
  window.clearInterval(countdown);
  notice.hidden = true;
  notice.textContent = "";
}

onAccepted(() => quiet());

onApiError((error: ApiError) => {
  if (error.status === 401) {
    session.signOut();
    account = null;
    say(t("err401"));
    void route();
  } else if (error.status === 403) {
    say(t("err403"));
  } else if (error.status === 429) {
    let left = Math.max(1, error.retryAfter);
    say(t("err429", { s: left }));
    countdown = window.setInterval(() => {
      left -= 1;
      if (left <= 0) {
        window.clearInterval(countdown);
        notice.textContent = t("err429Done");
        notice.className = "info";
      } else {
        notice.textContent = t("err429", { s: left });
      }
    }, 1000);
  } else if (error.status === 0) {
    say(t("errNetwork"));
  } else {
    say(t("errOther", { status: error.status, message: error.message }));
  }
});

function current(): string {
  return location.hash.replace(/^#\/?/, "") || "generate";
}

function chrome(): void {
  document.getElementById("brand")!.textContent = t("brand");
  document.querySelector(".skip")!.textContent = t("skip");
  document.getElementById("lang-label")!.textContent = t("language");
  signOut.textContent = t("signOut");
  signOut.hidden = !account;
  const here = current();
  nav.replaceChildren(...(account
    ? PAGES.filter((p) => !p.admin || account!.role === "admin").map((p) =>
        h("a", { href: `#/${p.path}`, "aria-current": p.path === here ? "page" : undefined }, t(p.label)))
    : []));
}

function signInPage(): void {
  const key = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false" });
  const button = h("button", { type: "submit" }, t("signIn"));
  const form = h("form", { class: "card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, t("signInTitle")),
    h("p", { class: "hint" }, t("signInHelp")),
    field(t("apiKey"), key),
    button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = key.value.trim();
    if (!value) return;
    session.signIn(value);
    try {
      account = await call<Account>("/account");
      quiet();
      await route();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) session.signOut();
    }
  });
  main.replaceChildren(form);
  key.focus();
}

// each route() renders its page into a fresh element and shows it only if no later route()
// began meanwhile (a slow page must not replace the one the user went on to)
let routes = 0;

async function route(): Promise<void> {
  const mine = ++routes;
  if (session.key() && !account) {
    try {
      account = await call<Account>("/account");
    } catch {
      account = null;
    }
  }
  if (mine !== routes) return;
  chrome();
  if (!account) {
    main.removeAttribute("data-page");
    main.removeAttribute("aria-busy");
    return signInPage();
  }
  const page = PAGES.find((p) => p.path === current() && (!p.admin || account!.role === "admin")) ?? PAGES[0];
  document.title = `${t(page.label)} · ${t("brand")}`;
  const view = h("div", { class: "view" });
  main.setAttribute("aria-busy", "true");
  try {
    await page.render(view);
  } catch {
    // the notice says why
  }
  if (mine !== routes) return;
  main.replaceChildren(view);
  main.setAttribute("data-page", page.path);
  main.removeAttribute("aria-busy");
}

signOut.addEventListener("click", () => {
  session.signOut();
  account = null;
  quiet();
  void route();
});
lang.value = language();
setLanguage(language());
lang.addEventListener("change", () => {
  setLanguage(lang.value);
  void route();
});
window.addEventListener("hashchange", () => {
  quiet();
  void route();
});
await loadConfig();
await route();
main.setAttribute("data-ready", "true");
