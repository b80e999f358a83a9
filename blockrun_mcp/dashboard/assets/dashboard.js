// The dashboard's page: renders the ledger's figures, from one of two sources.
//  - "http": `blockrun-mcp dashboard` or a team server's /dashboard. The JSON endpoint named in
//    the page's config is fetched every few seconds (same origin; the token is in a cookie).
//  - "app": an MCP Apps host (Claude Desktop, VS Code) shows the page beside the `budget` tool's
//    result. There is no network at all: the host hands the tool's result over postMessage
//    (JSON-RPC, `ui/notifications/tool-result`); its `_meta` carries the same document as the
//    endpoint, and its structured content alone (the budget result) is enough for a smaller view.
// Everything is built with textContent and attributes, never HTML strings: every name on the page
// (models, notes, hashes) came from a gateway or a ledger and is text, not markup.
(() => {
  "use strict";

  const META_KEY = "ai.blockrun/dashboard";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const config = readConfig();
  let hostCapabilities = {};
  let request = null; // app mode: sends a JSON-RPC request to the host

  function readConfig() {
    try {
      return JSON.parse($("blockrun-config").textContent || "{}");
    } catch (error) {
      return {};
    }
  }

  // --- formatting ---------------------------------------------------------------------------

  // Dollars as the CLI writes them: every micro-dollar kept, trailing zeros past the cents gone.
  function usd(value) {
    if (value === null || value === undefined) return "–";
    const fixed = Number(value).toFixed(6).replace(/0+$/, "");
    const [whole, fraction = ""] = fixed.split(".");
    return "$" + whole + "." + fraction.padEnd(2, "0");
  }

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function money(value, attributes) {
    return el("td", { class: "num", "data-value": value, ...(attributes || {}) }, usd(value));
  }

  // A link only to an https page the server vouched for (a block explorer's).
  function link(url, text, title) {
    if (typeof url !== "string" || !url.startsWith("https://")) return el("span", { class: "mono", title }, text);
    return el("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono", title }, text);
  }

  function shortHash(hash) {
    return hash.length > 18 ? hash.slice(0, 10) + "…" + hash.slice(-6) : hash;
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function status(text, isError) {
    const node = $("status");
    node.textContent = text || "";
    node.hidden = !text;
    node.classList.toggle("error", Boolean(isError));
  }

  // --- rendering ----------------------------------------------------------------------------

  function render(data) {
    $("app").dataset.state = "ready";
    $("app").dataset.scope = data.scope || "";
    $("scope").textContent = scopeText(data);
    $("updated").textContent = data.generated_at ? `· updated ${data.generated_at} UTC` : "";
    $("today").textContent = data.today ? `(UTC day ${data.today})` : "";
    $("ledger").textContent = data.ledger || "";
    show("sandbox", Boolean(data.sandbox));
    renderTotals(data.totals);
    renderLimits(data.limits || []);
    renderChart(data.days);
    const identities = data.by_identity || [];
    const team = identities.length > 1 || identities.some((group) => group.name !== "default");
    renderGroups("by-model", "model", data.by_model);
    renderGroups("by-tool", "tool", data.by_tool);
    renderGroups("by-identity", "identity", team ? identities : null);
    renderPending(data.pending, team);
    renderJobs(data.video_jobs);
    renderReceipts(data.receipts, data.receipts_total, team);
  }

  function scopeText(data) {
    if (data.scope === "everyone") return data.viewer && data.viewer !== "local" ? `Everyone's spending (you are ${data.viewer})` : "Everyone's spending";
    if (!data.scope) return "This session's budget";
    return data.scope === "default" ? "Your spending" : `Your spending (${data.scope})`;
  }

  function renderTotals(totals) {
    show("totals-section", Boolean(totals));
    if (!totals) return;
    for (const node of document.querySelectorAll("[data-figure]")) {
      const value = totals[node.dataset.figure];
      node.dataset.value = String(value);
      node.textContent = node.dataset.figure.endsWith("_usd") ? usd(value) : String(value);
    }
  }

  function renderLimits(limits) {
    const box = $("limits");
    box.replaceChildren();
    show("limits-section", limits.length > 0);
    for (const limit of limits) {
      const card = el("div", {
        class: "limit",
        "data-limit": limit.key,
        "data-limit-usd": limit.limit_usd,
        "data-spent": limit.spent_usd,
        "data-pending": limit.pending_usd,
        "data-left": limit.left_usd,
      });
      card.append(el("div", { class: "head" }, el("span", {}, limit.label), el("span", {}, usd(limit.limit_usd))));
      if (limit.left_usd !== null && limit.left_usd !== undefined) {
        const parts = [`spent ${usd(limit.spent_usd)}`];
        if (limit.pending_usd !== null && limit.pending_usd !== undefined) parts.push(`pending ${usd(limit.pending_usd)}`);
        parts.push(`left ${usd(limit.left_usd)}`);
        card.append(el("div", { class: "figures" }, parts.join(" · ")));
        const track = el("div", { class: "track", role: "img", "aria-label": parts.join(", ") });
        const whole = limit.limit_usd > 0 ? limit.limit_usd : 1;
        const spent = el("div", { class: "spent" });
        const pending = el("div", { class: "pending" });
        spent.style.width = `${Math.min(100, (100 * (limit.spent_usd || 0)) / whole)}%`;
        pending.style.width = `${Math.min(100, (100 * (limit.pending_usd || 0)) / whole)}%`;
        track.append(spent, pending);
        card.append(track);
      }
      if (limit.note) card.append(el("div", { class: "note" }, limit.note));
      box.append(card);
    }
  }

  function renderChart(days) {
    const box = $("chart");
    box.replaceChildren();
    show("chart-section", Array.isArray(days) && days.length > 0);
    if (!Array.isArray(days) || !days.length) return;
    // Drawn at the box's own width (the page is re-rendered at each refresh): no stretched text.
    const width = Math.max(360, Math.round((box.clientWidth || 1216) - 16));
    const height = 220, left = 72, right = 8, top = 10, bottom = 24;
    const plotWidth = width - left - right, plotHeight = height - top - bottom;
    const highest = Math.max(...days.map((day) => day.total_usd), 0);
    const step = niceStep(highest / 4);
    const scale = step * 4;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "spend per day, last 30 days" });
    for (let line = 0; line <= 4; line++) {
      const y = top + plotHeight - (plotHeight * line) / 4;
      chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y, y2: y }));
      chart.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, usd(Number((step * line).toFixed(6)))));
    }
    const slot = plotWidth / days.length;
    const barWidth = Math.max(2, slot * 0.7);
    days.forEach((day, index) => {
      const x = left + index * slot + (slot - barWidth) / 2;
      const spentHeight = (plotHeight * day.spent_usd) / scale;
      const pendingHeight = (plotHeight * day.pending_usd) / scale;
      const base = top + plotHeight;
      const group = svg("g", { "data-day": day.day, "data-spent": day.spent_usd, "data-pending": day.pending_usd, "data-total": day.total_usd });
      group.append(svg("title", {}, `${day.day}: ${usd(day.spent_usd)} settled, ${usd(day.pending_usd)} pending`));
      group.append(svg("rect", { class: "bar-spent", x, width: barWidth, y: base - spentHeight, height: spentHeight }));
      group.append(svg("rect", { class: "bar-pending", x, width: barWidth, y: base - spentHeight - pendingHeight, height: pendingHeight }));
      chart.append(group);
      if (index % 5 === 0 || index === days.length - 1) {
        chart.append(svg("text", { x: x + barWidth / 2, y: height - 6, "text-anchor": "middle" }, day.day.slice(5)));
      }
    });
    box.append(chart);
  }

  // The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `raw` (a micro-dollar
  // at least): gridlines at round amounts.
  function niceStep(raw) {
    if (!(raw > 0)) return 0.0025;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const multiple of [1, 2, 2.5, 5, 10]) {
      if (multiple * power >= raw) return Math.max(1e-6, multiple * power);
    }
    return 10 * power;
  }

  function table(id, headers, rows, empty) {
    const node = $(id);
    node.replaceChildren();
    node.append(el("thead", {}, el("tr", {}, ...headers.map(([text, numeric]) => el("th", { class: numeric ? "num" : null }, text)))));
    const body = el("tbody");
    if (rows.length) body.append(...rows);
    else body.append(el("tr", {}, el("td", { class: "empty", colspan: headers.length }, empty)));
    node.append(body);
  }

  function renderGroups(id, key, groups) {
    show(`${id}-section`, Array.isArray(groups));
    if (!Array.isArray(groups)) return;
    const rows = groups.map((group) =>
      el(
        "tr",
        {
          "data-group": key,
          "data-name": group.name,
          "data-payments": group.payments,
          "data-spent": group.spent_usd,
          "data-pending": group.pending_usd,
          "data-total": group.total_usd,
        },
        el("td", { class: "wrap" }, group.name),
        el("td", { class: "num" }, group.payments),
        money(group.spent_usd),
        money(group.pending_usd),
        money(group.total_usd),
      ),
    );
    table(id, [[key], ["payments", true], ["spent", true], ["pending", true], ["total", true]], rows, "No payments yet.");
  }

  function renderPending(pending, team) {
    show("pending-section", Array.isArray(pending));
    if (!Array.isArray(pending)) return;
    const rows = pending.map((payment) => {
      const notes = [payment.job_id ? `video job ${payment.job_id}: resume with generate_video(job_id=…)` : "", payment.note || ""].filter(Boolean).join("; ");
      return el(
        "tr",
        { "data-payment-id": payment.id, "data-amount": payment.amount_usd, "data-status": payment.status },
        el("td", { class: "num" }, payment.id),
        el("td", {}, payment.created_at || payment.time || ""),
        team ? el("td", {}, payment.identity || "") : null,
        el("td", {}, payment.tool),
        el("td", {}, payment.model),
        money(payment.amount_usd),
        el("td", { class: "wrap" }, payment.why || "signed or reserved, outcome unknown: counted as spent"),
        el("td", { class: "wrap", "data-release-after": payment.release_after }, payment.release || ""),
        el("td", { class: "wrap" }, notes),
      );
    });
    const headers = [["#", true], ["created (UTC)"], ...(team ? [["identity"]] : []), ["tool"], ["model"], ["amount", true], ["why it still counts"], ["when it may be released"], ["notes"]];
    table("pending", headers, rows, "Nothing pending: every payment has settled or been released.");
  }

  function renderJobs(jobs) {
    show("jobs-section", Array.isArray(jobs) && jobs.length > 0);
    if (!Array.isArray(jobs)) return;
    const rows = jobs.map((job) =>
      el(
        "tr",
        { "data-job-id": job.job_id, "data-payment-id": job.payment_id },
        el("td", { class: "mono" }, job.job_id),
        el("td", {}, job.model),
        el("td", {}, job.created_at || ""),
        money(job.amount_usd),
        el("td", {}, job.payment_status || ""),
        el("td", {}, el("code", {}, job.resume || `generate_video(job_id='${job.job_id}')`)),
      ),
    );
    table("video-jobs", [["job"], ["model"], ["started (UTC)"], ["paid", true], ["payment"], ["resume with"]], rows, "No video job is running.");
  }

  function renderReceipts(receipts, total, team) {
    show("receipts-section", Array.isArray(receipts));
    if (!Array.isArray(receipts)) return;
    $("receipts-count").textContent = typeof total === "number" && total > receipts.length ? `${receipts.length} most recent of ${total}` : "";
    const rows = receipts.map((receipt) => {
      const hash = receipt.tx_hash || "";
      return el(
        "tr",
        { "data-receipt-id": receipt.id, "data-amount": receipt.amount_usd, "data-tx": hash },
        el("td", {}, receipt.created_at || ""),
        team ? el("td", {}, receipt.identity || "") : null,
        el("td", {}, receipt.tool),
        el("td", {}, receipt.model),
        money(receipt.amount_usd),
        el("td", {}, hash ? link(receipt.explorer_url, shortHash(hash), `${receipt.network || ""} ${hash}`.trim()) : "(no hash)"),
      );
    });
    const headers = [["created (UTC)"], ...(team ? [["identity"]] : []), ["tool"], ["model"], ["amount", true], ["transaction"]];
    table("receipts", headers, rows, "No receipts yet.");
  }

  // The budget tool's structured content, when a host gives nothing more: its limits and its
  // ten most recent payments.
  function fromBudget(budget) {
    const rounded = (value) => Math.round(value * 1e6) / 1e6;
    const limits = [
      {
        key: "session",
        label: "this session",
        limit_usd: budget.session_limit_usd,
        spent_usd: budget.session_spent_usd,
        pending_usd: null,
        left_usd: rounded(Math.max(0, budget.session_limit_usd - budget.session_spent_usd)),
        note: `left to spend now, all limits considered: ${usd(budget.budget_remaining_usd)}`,
      },
    ];
    if (budget.daily_limit_usd !== null && budget.daily_limit_usd !== undefined) {
      limits.push({
        key: "daily",
        label: "daily budget (all callers)",
        limit_usd: budget.daily_limit_usd,
        spent_usd: budget.daily_spent_usd,
        pending_usd: null,
        left_usd: rounded(Math.max(0, budget.daily_limit_usd - budget.daily_spent_usd)),
        note: "",
      });
    }
    limits.push({ key: "per_call", label: "per call", limit_usd: budget.per_call_cap_usd, note: "" });
    const recent = Array.isArray(budget.recent) ? budget.recent : [];
    const row = (receipt, index) => ({
      id: index + 1,
      created_at: receipt.time,
      tool: receipt.tool,
      model: receipt.model,
      amount_usd: receipt.cost_usd,
      status: receipt.status,
      tx_hash: receipt.transaction,
      job_id: receipt.job_id,
      explorer_url: null,
    });
    return {
      scope: "",
      limits,
      pending: recent.filter((receipt) => receipt.status === "pending").map(row),
      receipts: recent.filter((receipt) => receipt.status === "settled").map(row),
      video_jobs: recent.filter((receipt) => receipt.job_id).map((receipt) => ({ job_id: receipt.job_id, model: receipt.model, created_at: receipt.time, amount_usd: receipt.cost_usd, payment_status: receipt.status })),
    };
  }

  // --- data sources -------------------------------------------------------------------------

  async function poll() {
    try {
      const response = await fetch(config.api, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (response.ok) {
        render(await response.json());
        status("");
      } else {
        const text = (await response.text()).slice(0, 300);
        status(`The dashboard server refused the refresh (${response.status}): ${text}`, true);
      }
    } catch (error) {
      status("The dashboard server cannot be reached: is `blockrun-mcp dashboard` (or the server) still running?", true);
    } finally {
      window.setTimeout(poll, 1000 * (config.refresh_seconds || 5));
    }
  }

  function showToolResult(result) {
    if (!result || typeof result !== "object") return;
    if (result.isError) {
      const text = (result.content || []).map((part) => part.text || "").join(" ");
      status(text || "The budget tool failed.", true);
      return;
    }
    const meta = result._meta && result._meta[META_KEY];
    if (meta) render(meta);
    else if (result.structuredContent) render(fromBudget(result.structuredContent));
    status("");
  }

  function applyHostContext(context) {
    if (!context) return;
    if (context.theme === "light" || context.theme === "dark") document.documentElement.dataset.theme = context.theme;
    const variables = (context.styles && context.styles.variables) || {};
    for (const [name, value] of Object.entries(variables)) {
      if (name.startsWith("--") && typeof value === "string") document.documentElement.style.setProperty(name, value);
    }
  }

  // MCP Apps (SEP-1865): JSON-RPC 2.0 with the host over postMessage.
  function startApp() {
    let nextId = 1;
    const waiting = new Map();
    const send = (message) => window.parent.postMessage(message, "*");
    request = (method, params) => {
      const id = nextId++;
      send({ jsonrpc: "2.0", id, method, params });
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    };
    const notify = (method, params) => send({ jsonrpc: "2.0", method, params });
    window.addEventListener("message", (event) => {
      if (event.source !== window.parent) return;
      const message = event.data;
      if (!message || message.jsonrpc !== "2.0") return;
      if (message.method === undefined) {
        const pending = waiting.get(message.id);
        if (!pending) return;
        waiting.delete(message.id);
        if (message.error) pending.reject(new Error(message.error.message || "refused"));
        else pending.resolve(message.result);
        return;
      }
      if (message.method === "ui/notifications/tool-result") showToolResult(message.params);
      else if (message.method === "ui/notifications/host-context-changed") applyHostContext(message.params);
      else if (message.id !== undefined && (message.method === "ui/resource-teardown" || message.method === "ping")) send({ jsonrpc: "2.0", id: message.id, result: {} });
    });
    request("ui/initialize", {
      appInfo: { name: "blockrun-mcp dashboard", version: config.version || "0" },
      appCapabilities: { availableDisplayModes: ["inline"] },
      protocolVersion: "2026-01-26",
    })
      .then((result) => {
        hostCapabilities = (result && result.hostCapabilities) || {};
        applyHostContext(result && result.hostContext);
        notify("ui/notifications/initialized", {});
        if (hostCapabilities.serverTools) show("refresh", true);
        reportSize(notify);
      })
      .catch((error) => status(`The host did not start the view: ${error.message}`, true));
    $("refresh").addEventListener("click", () => {
      request("tools/call", { name: "budget", arguments: {} }).then(showToolResult, (error) => status(`Refresh failed: ${error.message}`, true));
    });
    // Links open through the host (the view's frame may not navigate).
    document.addEventListener("click", (event) => {
      const anchor = event.target instanceof Element ? event.target.closest("a[href]") : null;
      if (!anchor || !hostCapabilities.openLinks) return;
      event.preventDefault();
      request("ui/open-link", { url: anchor.href }).catch(() => {});
    });
  }

  // The host sizes its frame to the view (once initialized: nothing is said before that).
  function reportSize(notify) {
    if (typeof ResizeObserver !== "function") return;
    let last = "";
    new ResizeObserver(() => {
      const size = { width: Math.ceil(document.documentElement.scrollWidth), height: Math.ceil(document.documentElement.scrollHeight) };
      const key = `${size.width}x${size.height}`;
      if (key !== last) {
        last = key;
        notify("ui/notifications/size-changed", size);
      }
    }).observe(document.documentElement);
  }

  if (config.mode === "http" && config.api) {
    $("refresh-note").textContent = `Refreshes every ${config.refresh_seconds || 5} s.`;
    poll();
  } else {
    $("refresh-note").textContent = "Shown by the budget tool; call it again for new figures.";
    startApp();
  }
})();
