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
  timer: null,
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

function show(screen, html) {
  S.screen = screen;
  document.body.dataset.screen = screen;
  document.getElementById("main").innerHTML = html;
  header();
}

function header() {
  document.getElementById("title").textContent = T("家庭共济", "Family mutual aid");
  const d = document.getElementById("daemon");
  d.textContent = S.daemon === "connected" ? T(S.role === "kiosk" ? "自助机" : "窗口", S.role === "kiosk" ? "kiosk" : "window") : T("离线", "offline");
  d.className = "badge" + (S.daemon === "connected" ? "" : " off");
  document.getElementById("lang").textContent = S.lang === "zh" ? "English" : "中文";
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
  // The person is done: the display ends the screen's session too.
  if (S.role === "kiosk" && (S.card || S.bind)) request({cmd: "end"});
  S.card = null; S.bind = null; S.records = null;
  show("idle", `<div class="center"><div class="big">${T("请刷社保卡", "Please swipe your card")}</div>
    <div class="sub">${S.lang === "zh" ? "Please swipe your card" : "请刷社保卡"}</div></div>`);
}

function payerText(c) {
  if (c.role === "member" || c.role === "both") {
    const p = c.payer || {};
    return `${esc(p.name)}（${rel(p.relation)}）`;
  }
  return T("本人账户", "own account");
}

function result(c) {
  S.card = c;
  const ok = c.outcome === "ok";
  const members = (c.members || []).map((m) => `<tr><td>${esc(m.name)}</td><td>${esc(m.ssn)}</td><td>${rel(m.relation)}</td></tr>`).join("");
  show("result", `
    <div class="panel"><div class="row">
      ${c.document ? `<div class="field"><div class="k">${T("证件", "Document")}</div><div class="v" id="document">${docLabel(c)}</div></div>` : ""}
      <div class="field"><div class="k">${T("姓名", "Name")}</div><div class="v">${esc(c.name)}</div></div>
      <div class="field"><div class="k">${T("社会保障号码", "Social security number")}</div><div class="v">${esc(c.ssn)}</div></div>
      <div class="field"><div class="k">${T("卡状态", "Card status")}</div><div class="v ${ok ? "ok" : "bad"}">${esc(T(...(OUTCOMES[c.outcome] || [c.outcome, c.outcome])))}</div></div>
    </div></div>
    ${ok ? `<div class="panel"><div class="row">
      <div class="field"><div class="k">${T("医疗费用由谁支付", "Who pays")}</div><div class="v" id="payer">${payerText(c)}</div></div>
      <div class="field"><div class="k">${T("支付账户余额", "Balance of the paying account")}</div><div class="v">${yuan(c.balance_fen)}</div></div>
    </div></div>` : ""}
    ${members ? `<div class="panel"><h2>${T("本账户共济的家庭成员", "Family members this account covers")}</h2>
      <table id="members"><tr><th>${T("姓名", "Name")}</th><th>${T("社会保障号码", "SSN")}</th><th>${T("关系", "Relation")}</th></tr>${members}</table></div>` : ""}
    <div class="actions">
      ${ok && (c.role === "holder" || c.role === "none" || c.role === "both") ? `<button class="primary" id="start-bind">${T("绑定家庭成员", "Bind a family member")}</button>` : ""}
      ${ok ? `<button id="show-records">${T("缴费记录", "Payment records")}</button>` : ""}
      <button id="done">${T("完成", "Done")}</button>
    </div>`);
  on("start-bind", async () => {
    const r = await request({cmd: "bind_start"});
    if (r.ok) bindStart(c); else toast(sentence(r.code, r.message));
  });
  on("show-records", () => records(c));
  on("done", idle);
}

function on(id, f) {
  const e = document.getElementById(id);
  if (e) e.addEventListener("click", f);
}

function bindStart(holder) {
  S.bind = {holder, member: null, relation: null};
  show("bind", `<div class="center"><div class="big">${T("请刷家庭成员的社保卡", "Now swipe the family member's card")}</div>
    <div class="sub">${T("参保人", "Account holder")}：${esc(holder.name)} ${esc(holder.ssn)}</div>
    <button id="cancel">${T("取消", "Cancel")}</button></div>`);
  on("cancel", idle);
}

function bindChoose(member) {
  S.bind.member = member;
  const buttons = Object.keys(RELATIONS).map((r) => `<button data-rel="${r}">${rel(r)}</button>`).join("");
  show("bind", `<div class="panel">
    <div class="sub">${T("参保人", "Account holder")}：${esc(S.bind.holder.name)} · ${T("家庭成员", "Family member")}：${esc(member.name)}</div>
    <h2>${T("家庭成员是参保人的", "The member is the holder's")}</h2>
    <div class="choices" id="relations">${buttons}</div>
    <div class="actions"><button class="primary" id="confirm" disabled>${T("确认绑定", "Confirm")}</button>
    <button id="cancel">${T("取消", "Cancel")}</button></div>
    <div id="outcome" class="sub"></div></div>`);
  document.querySelectorAll("#relations button").forEach((b) =>
    b.addEventListener("click", () => {
      S.bind.relation = b.dataset.rel;
      document.querySelectorAll("#relations button").forEach((x) => x.classList.toggle("primary", x === b));
      document.getElementById("confirm").disabled = false;
    }));
  on("cancel", idle);
  on("confirm", async () => {
    const r = await request({cmd: "bind", holder_swipe: S.bind.holder.swipe, member_swipe: member.swipe, relation: S.bind.relation});
    const out = document.getElementById("outcome");
    if (!out) return;
    out.className = r.ok ? "sub ok" : "sub bad";
    out.id = r.ok ? "bound" : "refused";
    out.textContent = r.ok ? T("绑定成功。", "Bound.") + " " + (S.lang === "zh" ? "Bound." : "绑定成功。") : sentence(r.code, r.message);
    document.getElementById("confirm").disabled = true;
    // The bind is over: the next swipe shows its card again.
    S.bind = null;
  });
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
  const r = c.swipe != null && S.role === "kiosk"
    ? await request({cmd: "contributions", swipe: c.swipe, months: 12})
    : await request({cmd: "contributions", number: S.windowNumber, months: 12});
  if (!r.ok) { toast(sentence(r.code, r.message)); return; }
  S.records = r.result;
  const rows = r.result.records;
  const body = rows.map((x) => `<tr><td>${esc(x.month)}</td><td>${esc(x.employer)}</td><td class="num">${yuan(x.base_fen)}</td><td class="num">${yuan(x.employee_fen)}</td><td class="num">${yuan(x.employer_fen)}</td><td class="num">${yuan(x.account_fen)}</td></tr>`).join("");
  show("records", `<div class="panel"><div class="titlebar"><h2>${T("缴费记录（近12个月）", "Payment records (last 12 months)")} · ${esc(c.name)}</h2>
    <button id="back">${T("返回", "Back")}</button></div>
    ${rows.length ? chart(rows) : ""}
    <table id="records"><tr><th>${T("月份", "Month")}</th><th>${T("单位", "Employer")}</th><th class="num">${T("缴费基数", "Base")}</th><th class="num">${T("个人缴纳", "Employee")}</th><th class="num">${T("单位缴纳", "Employer")}</th><th class="num">${T("划入个人账户", "To the account")}</th></tr>${body}</table>
    ${rows.length ? "" : `<p>${T("没有缴费记录。", "No payment records.")}</p>`}</div>`);
  on("back", () => (S.role === "kiosk" ? result(c) : windowScreen()));
}

// ---- window (clerk) screen ----------------------------------------------
function swipeItems() {
  return S.swipes.map((c) => `<li>#${c.swipe} ${esc(c.reader)}${c.document ? " · " + docLabel(c) : ""} · ${esc(c.name)} ${esc(c.ssn)} · <b>${esc(T(...(OUTCOMES[c.outcome] || [c.outcome, c.outcome])))}</b>${c.outcome === "ok" ? ` · ${T("支付", "paid by")} ${payerText(c)} ${yuan(c.balance_fen)}` : ""}</li>`).join("")
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
    out.textContent = r.ok ? T("已完成。", "Done.") : sentence(r.code, r.message);
  };
  l.addEventListener("submit", (e) => { e.preventDefault(); link("bind"); });
  on("unbind", () => link("unbind"));
}

// ---- events -------------------------------------------------------------
function home() {
  if (S.daemon !== "connected") {
    show("offline", `<div class="center"><div class="big">${T("读卡服务离线", "Card service offline")}</div>
      <div class="sub">${T("请稍候，正在重新连接……", "Please wait, reconnecting…")}</div></div>`);
  } else if (S.role === "kiosk") {
    idle();
  } else {
    windowScreen();
  }
}

function handle(m) {
  switch (m.class) {
    case "DISPLAY":
      S.daemon = m.daemon; S.role = m.role ?? S.role;
      S.operator = m.operator ?? null;
      if (m.idle_s) S.idleMs = m.idle_s * 1000;
      home();
      break;
    case "READER":
      S.readers[m.reader] = m;
      if (S.role === "kiosk" && m.state === "error") toast(T("读卡器故障，请联系工作人员。", "The card reader is out of order; please ask staff."));
      if (S.screen === "window") refreshWindowLists();
      break;
    case "CARD":
      if (S.role === "kiosk") {
        if (S.screen === "bind" && S.bind && !S.bind.member) {
          if (m.outcome === "ok") bindChoose(m); else toast(sentence("card_not_usable"));
        } else {
          // Any other swipe is a new person (the display starts a new
          // session for it): show their card.
          S.bind = null;
          result(m);
        }
      } else {
        S.swipes.unshift(m); S.swipes.length = Math.min(S.swipes.length, 50);
        if (S.screen === "window") refreshWindowLists();
      }
      touch();
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
      toast(sentence(m.code, m.zh ? `${m.zh} ${m.en}` : m.message));
      break;
    case "REPLY": {
      const f = S.pending.get(m.id);
      if (f) { S.pending.delete(m.id); f(m); }
      break;
    }
  }
}

function touch() {
  clearTimeout(S.timer);
  if (S.role !== "kiosk") return;
  S.timer = setTimeout(() => {
    if (S.screen !== "idle" && S.screen !== "offline") idle();
  }, S.idleMs);
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
  // Re-render the current screen in the other language.
  ({idle, offline: home, window: windowScreen, result: () => result(S.card), records: () => (S.card ? records(S.card) : home()), bind: () => (!S.bind ? home() : S.bind.member ? bindChoose(S.bind.member) : bindStart(S.bind.holder))}[S.screen] || home)();
});
["pointerdown", "keydown"].forEach((e) => document.addEventListener(e, touch));
header();
home();
connect();
