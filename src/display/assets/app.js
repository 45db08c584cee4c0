// cardlink-display: the kiosk and clerk screens. Plain JavaScript, no
// build step, nothing loaded from the network. document.body.dataset.screen
// is one of idle, result, bind, records, offline, window.
"use strict";

const S = {
  lang: "zh",
  role: null,
  daemon: "offline",
  screen: "offline",
  card: null,          // the last CARD (kiosk)
  bind: null,          // {holder: CARD, member: CARD|null, relation}
  records: null,       // {card, months, records}
  swipes: [],          // window: recent CARDs
  readers: {},         // name -> READER
  idleMs: 30 * 1000,   // from the display (DISPLAY idle_s): when a kiosk session ends
  operator: null,      // window: the operator binds are recorded under (display config)
  elder: false,        // 长辈模式 now (kiosk): larger, slower, fewer things, spoken
  elderDefault: false, // the display's default (DISPLAY elder, cardlink-display --elder)
  speech: "elder",     // when to speak (DISPLAY speech): elder, always, never
  spoken: "",          // the last key sentence (the 再听一遍 button repeats it)
  showMembers: false,  // 长辈模式: the members covered, behind a button
  printer: undefined,  // status.printer: undefined not asked yet, null none configured, {state}
  policy: null,        // status.policy: {rebind_cooldown_days, ...}
  receiptFor: null,    // the audit_seq whose RECEIPT the screen waits for
  deadline: 0,         // kiosk: when the screen returns to idle (ms since the epoch)
  lastKeep: 0,         // when the display was last told that the person is still here
  pending: new Map(),
  nextId: 1,
  ws: null,
};

const T = (zh, en) => (S.lang === "zh" ? zh : en);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const yuan = (fen) => (fen == null ? "—" : "¥" + (fen / 100).toFixed(2));

// RELATIONS (labels) and SENTENCES (one per code) come from /codes.js,
// made by the display from its one code table.
const rel = (r) => (RELATIONS[r] ? T(RELATIONS[r][0], RELATIONS[r][1]) : r ?? "—");

const OUTCOMES = {
  ok: ["有效", "valid"], unknown: ["未登记", "not registered"], lost: ["已挂失", "reported lost"],
  frozen: ["已冻结", "frozen"], cancelled: ["已注销", "cancelled"], expired: ["已过期", "expired"],
  mismatch: ["卡信息不一致", "card data do not match"], no_card: ["无卡", "no card"],
};
// The identity document an idcard reader read (CARD `document`).
const DOCUMENTS = {
  resident_id: ["身份证", "identity card"], hmt_residence_permit: ["居住证", "residence permit"],
  foreign_permanent: ["永居证", "permanent residence card"],
};
const docLabel = (c) => (DOCUMENTS[c.document] ? T(...DOCUMENTS[c.document]) : "");

const sentence = (code, fallback) =>
  SENTENCES[code] ? `${SENTENCES[code][0]} ${SENTENCES[code][1]}` : fallback || code;
const sentenceZh = (code) => (SENTENCES[code] ? SENTENCES[code][0] : "");

// Meaning never by colour alone: a mark and a word go with the colour.
const okMark = (text) => `✓ ${text}`;
const badMark = (text) => `✗ ${text}`;
const outcomeWords = (c) => {
  const w = T(...(OUTCOMES[c.outcome] || [c.outcome, c.outcome]));
  return c.outcome === "ok" ? okMark(w) : badMark(w);
};

// The printer's states (PRINTER, status.printer) in words: why no receipt.
const PRINTER_STATES = {
  paper_end: ["打印机缺纸", "the printer is out of paper"],
  cover_open: ["打印机盖未关好", "the printer's cover is open"],
  offline: ["打印机离线", "the printer is offline"],
  error: ["打印机故障", "the printer has a fault"],
  disconnected: ["打印机未连接", "the printer is not connected"],
};
const canPrint = (state) => state === "ok" || state === "paper_near_end";
const printerWords = (state) => T(...(PRINTER_STATES[state] || [state, state]));
// A notice before a bind or a print when no receipt can be printed ("" when one can).
function printerNotice() {
  if (S.printer === undefined) return "";
  if (S.printer === null) return badMark(T("本机没有凭条打印机，本次无法打印凭条。", "This kiosk has no receipt printer: no receipt this time."));
  if (canPrint(S.printer.state)) return "";
  return badMark(`${printerWords(S.printer.state)}${T("，本次无法打印凭条。", ": no receipt can be printed this time.")}`);
}
function refreshPrinterNotice() {
  const n = document.getElementById("printer-notice");
  if (n) n.textContent = printerNotice();
}
// Both languages in normal mode; in 长辈模式 the page's language only.
const both = (zh, en) => (S.elder ? esc(T(zh, en)) : `${esc(T(zh, en))}<span class="en">${esc(S.lang === "zh" ? en : zh)}</span>`);

// ---- spoken prompts ---------------------------------------------------------
// The key sentence of each screen, in Mandarin, through the browser's
// speechSynthesis where the box has a zh-CN voice (speech-dispatcher and
// espeak-ng on Debian); silent where it has none. Never a name or a number:
// only fixed sentences are spoken. (The tests put a stand-in in
// window.__speechSynthesis.)
const synth = () => window.__speechSynthesis || window.speechSynthesis || null;
const speechOn = () => S.role !== "window" && (S.speech === "always" || (S.speech === "elder" && S.elder));
function zhVoice() {
  const s = synth();
  if (!s || typeof s.getVoices !== "function" || typeof SpeechSynthesisUtterance !== "function") return null;
  return s.getVoices().find((v) => /^zh[-_](CN|Hans)/i.test(v.lang || "")) || null;
}
function say(text) {
  S.spoken = text;
  sayButton();
  if (!text || !speechOn()) return;
  const v = zhVoice();
  if (!v) return;
  try {
    const s = synth();
    s.cancel();
    const u = new SpeechSynthesisUtterance(text);
    u.lang = "zh-CN";
    if (typeof SpeechSynthesisVoice === "function" && v instanceof SpeechSynthesisVoice) u.voice = v;
    u.rate = S.elder ? 0.85 : 1;
    s.speak(u);
  } catch (e) {
    // No voice after all: the screen says it in writing.
  }
}
function sayButton() {
  const b = document.getElementById("say");
  if (b) b.hidden = !speechOn() || !S.spoken || !zhVoice();
}

function show(screen, html, spoken) {
  const was = counting();
  S.screen = screen;
  // A screen that returns to idle by itself: its time starts now.
  if (!was && counting()) S.deadline = Date.now() + idleSpan();
  document.body.dataset.screen = screen;
  document.getElementById("main").innerHTML = html;
  header();
  tick();
  if (spoken !== undefined) say(spoken);
}

function header() {
  document.getElementById("title").textContent = T("家庭共济", "Family mutual aid");
  const d = document.getElementById("daemon");
  d.textContent = S.daemon === "connected" ? T(S.role === "kiosk" ? "自助机" : "窗口", S.role === "kiosk" ? "kiosk" : "window") : badMark(T("离线", "offline"));
  d.className = "badge" + (S.daemon === "connected" ? "" : " off");
  document.getElementById("lang").textContent = S.lang === "zh" ? "English" : "中文";
  // 长辈模式 on every kiosk screen (not at a window).
  const e = document.getElementById("elder");
  e.hidden = S.role === "window";
  e.setAttribute("aria-pressed", S.elder ? "true" : "false");
  e.textContent = S.elder ? `✓ ${T("长辈模式", "长辈模式 Elder mode")}` : T("长辈模式", "长辈模式 Elder mode");
  e.classList.toggle("primary", S.elder);
  document.body.classList.toggle("elder", S.elder);
  document.getElementById("say").textContent = T("再听一遍", "Repeat");
  document.getElementById("stay").textContent = T("继续", "Stay");
  sayButton();
}

function setElder(on) {
  S.elder = on;
  document.body.classList.toggle("elder", on);
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(t._timer);
  t._timer = setTimeout(() => (t.hidden = true), 6000);
}

// ---- requests over the WebSocket --------------------------------------
function request(cmd) {
  const id = S.nextId++;
  return new Promise((resolve) => {
    S.pending.set(id, resolve);
    if (!S.ws || S.ws.readyState !== 1) {
      S.pending.delete(id);
      resolve({ok: false, code: "daemon_offline", message: "offline"});
      return;
    }
    S.ws.send(JSON.stringify({...cmd, id}));
  });
}

// ---- kiosk screens ------------------------------------------------------
function idle() {
  // The person is done: the display ends the screen's session too, and
  // 长辈模式 goes back to the display's default.
  if (S.role === "kiosk" && (S.card || S.bind)) request({cmd: "end"});
  S.card = null; S.bind = null; S.records = null; S.showMembers = false; S.receiptFor = null;
  setElder(S.elderDefault);
  idleScreen();
}

function idleScreen() {
  show("idle", `<div class="center"><div class="big">${T("请刷社保卡", "Please swipe your card")}</div>
    ${S.elder ? "" : `<div class="sub">${S.lang === "zh" ? "Please swipe your card" : "请刷社保卡"}</div>`}</div>`, "请刷社保卡");
}

function payerText(c) {
  if (c.role === "member" || c.role === "both") {
    const p = c.payer || {};
    return `${esc(p.name)}（${rel(p.relation)}）`;
  }
  return T("本人账户", "own account");
}

function result(c) {
  if (S.card !== c) S.showMembers = false;
  S.card = c;
  const ok = c.outcome === "ok";
  const members = (c.members || []).map((m) => `<tr><td>${esc(m.name)}</td>${S.elder ? "" : `<td>${esc(m.ssn)}</td>`}<td>${rel(m.relation)}</td></tr>`).join("");
  const membersPanel = members ? `<div class="panel"><h2>${T("本账户共济的家庭成员", "Family members this account covers")}</h2>
      <table id="members"><tr><th>${T("姓名", "Name")}</th>${S.elder ? "" : `<th>${T("社会保障号码", "SSN")}</th>`}<th>${T("关系", "Relation")}</th></tr>${members}</table></div>` : "";
  const canBind = ok && (c.role === "holder" || c.role === "none" || c.role === "both");
  const spoken = ok ? "读卡成功，卡状态有效。" : `卡状态：${(OUTCOMES[c.outcome] || [""])[0]}。请到窗口办理。`;
  if (S.elder && S.showMembers) {
    // 长辈模式: the members on a view of their own.
    show("result", `${membersPanel}<div class="actions"><button id="hide-members">${T("返回", "Back")}</button></div>`);
    on("hide-members", () => { S.showMembers = false; result(c); });
    return;
  }
  show("result", `
    <div class="panel"><div class="row">
      ${c.document ? `<div class="field"><div class="k">${T("证件", "Document")}</div><div class="v" id="document">${docLabel(c)}</div></div>` : ""}
      <div class="field"><div class="k">${T("姓名", "Name")}</div><div class="v">${esc(c.name)}</div></div>
      <div class="field"><div class="k">${T("社会保障号码", "Social security number")}</div><div class="v">${esc(c.ssn)}</div></div>
      <div class="field"><div class="k">${T("卡状态", "Card status")}</div><div class="v ${ok ? "ok" : "bad"}" id="outcome-word">${esc(outcomeWords(c))}</div></div>
    </div></div>
    ${ok ? `<div class="panel"><div class="row">
      <div class="field"><div class="k">${T("医疗费用由谁支付", "Who pays")}</div><div class="v" id="payer">${payerText(c)}</div></div>
      <div class="field"><div class="k">${T("支付账户余额", "Balance of the paying account")}</div><div class="v">${yuan(c.balance_fen)}</div></div>
    </div></div>` : ""}
    ${S.elder ? "" : membersPanel}
    <div class="actions">
      ${canBind ? `<button class="primary" id="start-bind">${T("绑定家庭成员", "Bind a family member")}</button>` : ""}
      ${ok ? `<button id="show-records">${T("缴费记录", "Payment records")}</button>` : ""}
      ${S.elder && members ? `<button id="show-members">${T("查看家庭成员", "Family members")}</button>` : ""}
      <button id="done">${T("完成", "Done")}</button>
    </div>`, spoken);
  on("start-bind", async () => {
    const r = await request({cmd: "bind_start"});
    if (r.ok) { bindStart(c); refreshStatus(); } else toast(sentence(r.code, r.message));
  });
  on("show-records", () => records(c));
  on("show-members", () => { S.showMembers = true; result(c); });
  on("done", idle);
}

function on(id, f) {
  const e = document.getElementById(id);
  if (e) e.addEventListener("click", f);
}

// The printer's state and the province's policy, asked when a bind starts
// (and on connect): for the receipt notice and the cooldown sentence.
async function refreshStatus() {
  const r = await request({cmd: "status"});
  if (!r.ok || !r.result) return;
  S.printer = r.result.printer ? {state: r.result.printer.state} : null;
  S.policy = r.result.policy || null;
  refreshPrinterNotice();
}

function bindStart(holder) {
  S.bind = {holder, member: null, relation: null, step: "await"};
  show("bind", `<div class="center"><div class="big">${T("请刷家庭成员的社保卡", "Now swipe the family member's card")}</div>
    <div class="sub">${T("参保人", "Account holder")}：${esc(holder.name)} ${esc(holder.ssn)}</div>
    <div class="sub bad" id="printer-notice">${esc(printerNotice())}</div>
    <button id="cancel">${T("取消", "Cancel")}</button></div>`, "请刷家庭成员的社保卡");
  on("cancel", idle);
}

function bindChoose(member) {
  S.bind.member = member;
  S.bind.step = "choose";
  const buttons = Object.keys(RELATIONS).map((r) => `<button data-rel="${r}"${S.bind.relation === r ? ' class="primary" aria-pressed="true"' : ""}>${S.bind.relation === r ? "✓ " : ""}${rel(r)}</button>`).join("");
  show("bind", `<div class="panel">
    <div class="sub">${T("参保人", "Account holder")}：${esc(S.bind.holder.name)} · ${T("家庭成员", "Family member")}：${esc(member.name)}</div>
    <h2>${T("家庭成员是参保人的", "The member is the holder's")}</h2>
    <div class="choices" id="relations">${buttons}</div>
    <div class="actions"><button class="primary" id="next"${S.bind.relation ? "" : " disabled"}>${T("下一步：阅读绑定说明", "Next: what the bind means")}</button>
    <button id="cancel">${T("取消", "Cancel")}</button></div>
    <div class="sub" id="next-why"${S.bind.relation ? " hidden" : ""}>${T("请先选择关系，再点下一步。", "Choose the relation first.")}</div>
    <div class="sub bad" id="printer-notice">${esc(printerNotice())}</div></div>`, "请选择家庭成员与您的关系。");
  document.querySelectorAll("#relations button").forEach((b) =>
    b.addEventListener("click", () => {
      S.bind.relation = b.dataset.rel;
      document.querySelectorAll("#relations button").forEach((x) => {
        x.classList.toggle("primary", x === b);
        x.setAttribute("aria-pressed", x === b ? "true" : "false");
        x.textContent = (x === b ? "✓ " : "") + rel(x.dataset.rel);
      });
      document.getElementById("next").disabled = false;
      document.getElementById("next-why").hidden = true;
    }));
  on("cancel", idle);
  on("next", () => consent());
}

// What the bind means, in the words of registry::consent::CURRENT (/codes.js
// CONSENT), with the cooldown when the province has one; the bind is sent
// only after 我已阅读并同意, and carries the statement's version.
function consentSentences() {
  const days = (S.policy && S.policy.rebind_cooldown_days) || 0;
  const out = CONSENT.sentences.slice();
  if (days > 0) out.push(CONSENT.cooldown.map((x) => x.replace("{days}", String(days))));
  return out;
}

function consent() {
  const b = S.bind;
  b.step = "consent";
  const items = consentSentences().map(([zh, en]) => `<li>${both(zh, en)}</li>`).join("");
  const done = b.outcome;
  show("consent", `<div class="panel">
    <h2>${T("绑定说明，请仔细阅读", "What the bind means: please read")}</h2>
    <div class="sub" id="parties">${T("参保人", "Holder")}：${esc(b.holder.name)} ${S.elder ? "" : esc(b.holder.ssn)} · ${T("家庭成员", "Member")}：${esc(b.member.name)} ${S.elder ? "" : esc(b.member.ssn)} · ${T("关系", "Relation")}：<b id="relation">${rel(b.relation)}</b></div>
    <ol id="consent-text">${items}</ol>
    <div class="sub bad" id="printer-notice">${esc(printerNotice())}</div>
    ${done ? "" : `<div class="actions">
      <button id="agree" aria-pressed="false">${T("☐ 我已阅读并同意", "☐ I have read and agree")}</button>
      <button class="primary" id="confirm" disabled>${T("确认绑定", "Confirm the bind")}</button>
      <button id="cancel">${T("取消", "Cancel")}</button></div>
    <div class="sub" id="confirm-why">${T("请先点「我已阅读并同意」，再确认绑定。", "Press “I have read and agree” first, then confirm.")}</div>`}
    <div id="outcome-box">${done ? done.html : ""}</div></div>`, done ? undefined : "请阅读并确认绑定说明。" + consentSentences().map((x) => x[0]).join(""));
  if (done) { on("finish", idle); return; }
  on("agree", () => {
    b.agreed = !b.agreed;
    const a = document.getElementById("agree");
    a.setAttribute("aria-pressed", b.agreed ? "true" : "false");
    a.classList.toggle("primary", b.agreed);
    a.textContent = b.agreed ? T("✓ 我已阅读并同意", "✓ I have read and agree") : T("☐ 我已阅读并同意", "☐ I have read and agree");
    document.getElementById("confirm").disabled = !b.agreed;
    document.getElementById("confirm-why").hidden = b.agreed;
  });
  on("cancel", idle);
  on("confirm", async () => {
    if (!b.agreed) return;
    document.getElementById("confirm").disabled = true;
    const r = await request({cmd: "bind", holder_swipe: b.holder.swipe, member_swipe: b.member.swipe, relation: b.relation, consent: CONSENT.version});
    const receipt = r.ok && r.result ? receiptWords(r.result.receipt) : "";
    const words = r.ok ? okMark(T("绑定成功。", "Bound.")) + (S.elder ? "" : " " + (S.lang === "zh" ? "Bound." : "绑定成功。")) : badMark(sentence(r.code, r.message));
    b.outcome = {ok: r.ok, html: `<div class="sub ${r.ok ? "ok" : "bad"}" id="${r.ok ? "bound" : "refused"}">${esc(words)}</div>
      ${r.ok ? `<div class="sub" id="receipt">${esc(receipt)}</div>` : ""}
      <div class="actions"><button id="finish">${T("完成", "Done")}</button></div>`};
    // The bind is over (the display ended its flow): the next swipe shows its card.
    consent();
    say(r.ok ? "绑定成功。" + receiptSpoken(r.result.receipt) : sentenceZh(r.code) || "绑定未成功。");
  });
}

// What the page says of a receipt the daemon queued (bind or print_records reply).
function receiptWords(q) {
  if (!q) { S.receiptFor = null; return badMark(T("本机没有凭条打印机，本次没有凭条。", "No receipt printer here: no receipt.")); }
  if (!q.queued) { S.receiptFor = null; return badMark(`${printerWords(q.printer)}${T("，本次无法打印凭条。", ": no receipt this time.")}`); }
  S.receiptFor = q.audit_seq;
  return T("正在打印凭条……", "Printing the receipt…");
}
const receiptSpoken = (q) => (q && q.queued ? "正在打印凭条。" : "本次无法打印凭条。");

// RECEIPT: the outcome of the receipt this screen waits for.
function receiptEvent(m) {
  if (S.receiptFor == null || m.audit_seq !== S.receiptFor) return;
  S.receiptFor = null;
  const words = m.printed
    ? okMark(T("凭条已打印，请取走。", "Receipt printed: please take it."))
    : badMark(`${T("凭条未能打印", "The receipt could not be printed")}（${printerWords(m.state)}）`);
  const e = document.getElementById("receipt") || document.getElementById("print-outcome");
  if (e) { e.textContent = words; e.className = "sub " + (m.printed ? "ok" : "bad"); }
  if (S.bind && S.bind.outcome) S.bind.outcome.html = S.bind.outcome.html.replace(/<div class="sub" id="receipt">[^<]*<\/div>/, `<div class="sub" id="receipt">${esc(words)}</div>`);
  say(m.printed ? "凭条已打印，请取走。" : "凭条未能打印。");
}

function chart(rows) {
  const w = 600, h = 120, max = Math.max(1, ...rows.map((r) => r.account_fen));
  const bw = w / Math.max(rows.length, 1);
  const bars = rows.slice().reverse().map((r, i) => {
    const bh = Math.round((r.account_fen / max) * (h - 30));
    return `<rect x="${i * bw + 4}" y="${h - 20 - bh}" width="${bw - 8}" height="${bh}"><title>${esc(r.month)} ${yuan(r.account_fen)}</title></rect>
      <text x="${i * bw + bw / 2}" y="${h - 5}" text-anchor="middle">${esc(r.month.slice(2))}</text>`;
  }).join("");
  return `<svg class="chart" id="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="${T("个人账户每月划入", "Monthly credit to the personal account")}">${bars}</svg>`;
}

async function records(c) {
  // 长辈模式: the last six months, fewer columns, no chart.
  const months = S.elder ? 6 : 12;
  const kiosk = c.swipe != null && S.role === "kiosk";
  const r = kiosk
    ? await request({cmd: "contributions", swipe: c.swipe, months})
    : await request({cmd: "contributions", number: S.windowNumber, months});
  if (!r.ok) { toast(sentence(r.code, r.message)); return; }
  S.records = r.result;
  const rows = r.result.records;
  const body = rows.map((x) => S.elder
    ? `<tr><td>${esc(x.month)}</td><td class="num">${yuan(x.account_fen)}</td></tr>`
    : `<tr><td>${esc(x.month)}</td><td>${esc(x.employer)}</td><td class="num">${yuan(x.base_fen)}</td><td class="num">${yuan(x.employee_fen)}</td><td class="num">${yuan(x.employer_fen)}</td><td class="num">${yuan(x.account_fen)}</td></tr>`).join("");
  const head = S.elder
    ? `<tr><th>${T("月份", "Month")}</th><th class="num">${T("划入个人账户", "To the account")}</th></tr>`
    : `<tr><th>${T("月份", "Month")}</th><th>${T("单位", "Employer")}</th><th class="num">${T("缴费基数", "Base")}</th><th class="num">${T("个人缴纳", "Employee")}</th><th class="num">${T("单位缴纳", "Employer")}</th><th class="num">${T("划入个人账户", "To the account")}</th></tr>`;
  const title = S.elder ? T(`近${months}个月缴费`, `Last ${months} months`) : `${T("缴费记录（近12个月）", "Payment records (last 12 months)")} · ${esc(c.name)}`;
  show("records", `<div class="panel"><div class="titlebar"><h2>${title}</h2>
    <div class="buttons">${rows.length ? `<button id="print">${T("打印", "Print")}</button>` : ""}<button id="back">${T("返回", "Back")}</button></div></div>
    <div class="sub" id="print-outcome"></div>
    ${rows.length && !S.elder ? chart(rows) : ""}
    <table id="records">${head}${body}</table>
    ${rows.length ? "" : `<p>${T("没有缴费记录。", "No payment records.")}</p>`}</div>`, "这是您的缴费记录。");
  on("back", () => (S.role === "kiosk" ? result(c) : windowScreen()));
  on("print", async () => {
    const out = document.getElementById("print-outcome");
    const notice = printerNotice();
    const req = kiosk ? {cmd: "print_records", swipe: c.swipe, months} : {cmd: "print_records", number: S.windowNumber, months};
    const p = await request(req);
    const o = document.getElementById("print-outcome");
    if (!o || o !== out) return;
    if (p.ok && p.result) {
      const words = receiptWords(p.result.receipt);
      o.textContent = words; o.className = "sub" + (p.result.receipt && p.result.receipt.queued ? "" : " bad");
      say(receiptSpoken(p.result.receipt));
    } else {
      o.textContent = badMark(sentence(p.code, p.message) + (notice ? ` ${notice}` : ""));
      o.className = "sub bad";
      say(sentenceZh(p.code) || "无法打印凭条。");
    }
  });
}

// ---- window (clerk) screen ----------------------------------------------
function swipeItems() {
  return S.swipes.map((c) => `<li>#${c.swipe} ${esc(c.reader)}${c.document ? " · " + docLabel(c) : ""} · ${esc(c.name)} ${esc(c.ssn)} · <b>${esc(outcomeWords(c))}</b>${c.outcome === "ok" ? ` · ${T("支付", "paid by")} ${payerText(c)} ${yuan(c.balance_fen)}` : ""}</li>`).join("")
    || `<li>${T("暂无", "none yet")}</li>`;
}

function readerItems() {
  return Object.values(S.readers).map((r) => `<li>${esc(r.reader)}: ${r.state === "connected" ? T("已连接", "connected") : r.state === "error" ? T("故障", "fault") : T("未连接", "disconnected")}${r.error ? " · " + esc(r.error) : ""}</li>`).join("")
    || `<li>${T("无", "none")}</li>`;
}

// Events update the lists only, so that what the clerk is typing stays.
function refreshWindowLists() {
  const s = document.getElementById("swipes");
  const r = document.getElementById("readers");
  if (s) s.innerHTML = swipeItems();
  if (r) r.innerHTML = readerItems();
}

function windowScreen() {
  const options = Object.keys(RELATIONS).map((r) => `<option value="${r}">${rel(r)}</option>`).join("");
  show("window", `<div class="grid2">
    <div><div class="panel"><h2>${T("刷卡记录", "Swipes")}</h2><ul class="swipes" id="swipes">${swipeItems()}</ul></div>
      <div class="panel"><h2>${T("读卡器", "Readers")}</h2><ul class="swipes" id="readers">${readerItems()}</ul></div></div>
    <div><div class="panel"><h2>${T("手工查询", "Look up")}</h2>
      <form id="lookup"><input name="number" placeholder="${T("社会保障号码或卡号", "SSN or card number")}" required><button class="primary">${T("查询", "Look up")}</button><button type="button" id="win-records">${T("缴费记录", "Payment records")}</button></form></div>
    <div class="panel"><h2>${T("绑定 / 解绑", "Bind / unbind")}</h2>
      <form id="link"><input name="holder" placeholder="${T("参保人号码", "Holder number")}" required><input name="member" placeholder="${T("家庭成员号码", "Member number")}" required>
      <select name="relation">${options}</select>
      <button class="primary" data-act="bind"${S.operator ? "" : " disabled"}>${T("绑定", "Bind")}</button><button type="button" id="unbind"${S.operator ? "" : " disabled"}>${T("解绑", "Unbind")}</button></form>
      <div class="sub" id="operator">${S.operator ? `${T("操作员", "Operator")}：${esc(S.operator)}` : sentence("operator_required")}</div>
      <div id="link-outcome" class="sub"></div></div></div></div>`);
  const f = document.getElementById("lookup");
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    S.windowNumber = f.number.value.trim();
    const r = await request({cmd: "lookup", number: S.windowNumber});
    if (!r.ok) toast(sentence(r.code, r.message));
  });
  on("win-records", () => { S.windowNumber = f.number.value.trim(); records({name: S.windowNumber}); });
  const l = document.getElementById("link");
  const link = async (cmd) => {
    // The operator is the display's (its configuration), not typed here.
    const req = {cmd, holder: l.holder.value.trim(), member: l.member.value.trim()};
    if (cmd === "bind") req.relation = l.relation.value;
    const r = await request(req);
    const out = document.getElementById("link-outcome");
    out.className = r.ok ? "sub ok" : "sub bad";
    out.textContent = r.ok ? okMark(T("已完成。", "Done.")) : badMark(sentence(r.code, r.message));
  };
  l.addEventListener("submit", (e) => { e.preventDefault(); link("bind"); });
  on("unbind", () => link("unbind"));
}

// ---- events -------------------------------------------------------------
function home() {
  if (S.daemon !== "connected") {
    show("offline", `<div class="center"><div class="big">${T("读卡服务离线", "Card service offline")}</div>
      <div class="sub">${T("请稍候，正在重新连接……", "Please wait, reconnecting…")}</div></div>`, "读卡服务离线，请稍候。");
  } else if (S.role === "kiosk") {
    idle();
  } else {
    windowScreen();
  }
}

// The current screen again (another language, 长辈模式 on or off).
function rerender() {
  ({idle: idleScreen, offline: home, window: windowScreen, result: () => result(S.card),
    records: () => (S.card ? records(S.card) : home()),
    consent: () => (S.bind && S.bind.member ? consent() : home()),
    bind: () => (!S.bind ? home() : S.bind.member ? bindChoose(S.bind.member) : bindStart(S.bind.holder))}[S.screen] || home)();
}

function handle(m) {
  switch (m.class) {
    case "DISPLAY":
      S.daemon = m.daemon; S.role = m.role ?? S.role;
      S.operator = m.operator ?? null;
      if (m.idle_s) S.idleMs = m.idle_s * 1000;
      S.elderDefault = !!m.elder;
      S.speech = m.speech || "elder";
      home();
      if (S.daemon === "connected" && S.role === "kiosk") refreshStatus();
      break;
    case "READER":
      S.readers[m.reader] = m;
      if (S.role === "kiosk" && m.state === "error") toast(badMark(T("读卡器故障，请联系工作人员。", "The card reader is out of order; please ask staff.")));
      if (S.screen === "window") refreshWindowLists();
      break;
    case "PRINTER":
      S.printer = {state: m.state};
      refreshPrinterNotice();
      break;
    case "RECEIPT":
      receiptEvent(m);
      break;
    case "CARD":
      touch(false);
      if (S.role === "kiosk") {
        if (S.screen === "bind" && S.bind && !S.bind.member) {
          if (m.outcome === "ok") bindChoose(m); else toast(badMark(sentence("card_not_usable")));
        } else {
          // Any other swipe is a new person (the display starts a new
          // session for it): show their card.
          S.bind = null; S.receiptFor = null;
          result(m);
        }
      } else {
        S.swipes.unshift(m); S.swipes.length = Math.min(S.swipes.length, 50);
        if (S.screen === "window") refreshWindowLists();
      }
      break;
    case "SESSION":
      // The display ended this screen's session (idle): back to the start.
      if (S.role === "kiosk" && S.screen !== "offline") { S.card = null; S.bind = null; idle(); }
      break;
    case "REMOVED":
      // Back to idle at once when the card is taken out (not while a bind
      // waits for the second card).
      if (S.role === "kiosk" && (S.screen === "result" || S.screen === "records")) idle();
      break;
    case "ERROR":
      toast(badMark(sentence(m.code, m.zh ? `${m.zh} ${m.en}` : m.message)));
      break;
    case "REPLY": {
      const f = S.pending.get(m.id);
      if (f) { S.pending.delete(m.id); f(m); }
      break;
    }
  }
}

// ---- the return to idle -------------------------------------------------
// A kiosk screen returns to idle after the display's idle time without a
// touch or a swipe; in 长辈模式 after at least 60 s (the 适老化 rules: no
// time limits where they are not essential). The last 15 s (20 s in
// 长辈模式) are counted down on the screen with a button to stay.
const idleSpan = () => (S.elder ? Math.max(S.idleMs, 60 * 1000) : S.idleMs);
const countdownSpan = () => (S.elder ? 20 : 15) * 1000;
const counting = () => S.role === "kiosk" && S.screen !== "idle" && S.screen !== "offline";

// The person did something: the screen's time starts again; the display's
// session too (`keep`), at most every few seconds unless `now`.
function touch(tell, now) {
  if (S.role !== "kiosk") return;
  S.deadline = Date.now() + idleSpan();
  if (tell && (now || Date.now() - S.lastKeep > 3000)) {
    S.lastKeep = Date.now();
    request({cmd: "keep", elder: S.elder});
  }
  tick();
}

function tick() {
  const box = document.getElementById("countdown");
  if (!counting()) { if (!box.hidden) box.hidden = true; return; }
  const left = S.deadline - Date.now();
  if (left <= 0) { idle(); return; }
  if (left > countdownSpan()) { if (!box.hidden) box.hidden = true; return; }
  const secs = String(Math.ceil(left / 1000));
  if (box.hidden || box.dataset.countdown !== secs) {
    const first = box.hidden;
    box.dataset.countdown = secs;
    document.getElementById("countdown-text").textContent = T(`${secs} 秒后返回首页`, `Back to the start in ${secs} s`);
    box.hidden = false;
    if (first) say("即将返回首页，如需继续请点继续。");
  }
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  S.ws = ws;
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    const arrived = performance.timeOrigin + performance.now();
    handle(m);
    if (m.class === "CARD") {
      // For tests and the latency benchmark: when this swipe's screen was
      // painted (after the next frame), on the same clock as the host's.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        window.__painted = window.__painted || {};
        window.__painted[m.swipe] = {arrived, painted: performance.timeOrigin + performance.now()};
        document.body.dataset.painted = m.swipe;
      }));
    }
  };
  ws.onclose = () => {
    S.daemon = "offline";
    home();
    setTimeout(connect, 1000);
  };
}

document.getElementById("lang").addEventListener("click", () => {
  S.lang = S.lang === "zh" ? "en" : "zh";
  document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
  rerender();
});
document.getElementById("elder").addEventListener("click", () => {
  setElder(!S.elder);
  touch(true, true);
  rerender();
});
document.getElementById("say").addEventListener("click", () => say(S.spoken));
document.getElementById("stay").addEventListener("click", () => touch(true, true));
["pointerdown", "keydown"].forEach((e) => document.addEventListener(e, () => touch(true, false)));
setInterval(tick, 250);
header();
home();
connect();
