// The live dashboard: refresh on server-sent events, the alarm sound, the two buttons.
const csrf = document.querySelector("meta[name=csrf]").content;
let audio = null;
window.alarmSounding = false;
function beep() {
  if (!audio || audio.state !== "running") return;
  const tone = audio.createOscillator(), gain = audio.createGain();
  tone.frequency.value = 880; gain.gain.value = 0.2;
  tone.connect(gain).connect(audio.destination);
  tone.start(); tone.stop(audio.currentTime + 0.4);
}
setInterval(() => {
  const state = document.getElementById("state");
  window.alarmSounding = !!state && Number(state.dataset.unacknowledged) > 0;
  if (window.alarmSounding) beep();
}, 1500);
document.getElementById("sound-on").addEventListener("click", () => {
  audio = audio || new AudioContext();
  audio.resume().then(() => { document.getElementById("sound-state").textContent = "on"; });
});
setInterval(() => {
  for (const span of document.querySelectorAll(".down-for")) {
    span.textContent = Math.max(0, Math.round(Date.now() / 1000 - Number(span.dataset.since))) + " s";
  }
}, 1000);
let refreshing = false, again = false;
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const response = await fetch("/fragment/dashboard", {credentials: "same-origin"});
    if (response.status === 401) { location.href = "/login"; return; }
    const board = document.getElementById("dashboard");
    // A clip being watched keeps playing through the refresh: the same player moves into the new page.
    const players = new Map([...board.querySelectorAll("video.clip")].map(v => [v.getAttribute("src"), v]));
    // A reason being typed for "Resolve here" survives the refresh (health reports come every few seconds).
    const typed = new Map([...board.querySelectorAll("input.reason")].map(i => [i.dataset.eventId, i.value]));
    const focused = document.activeElement && document.activeElement.matches("input.reason")
      ? document.activeElement.dataset.eventId : null;
    board.innerHTML = await response.text();
    for (const input of board.querySelectorAll("input.reason")) {
      if (typed.has(input.dataset.eventId)) input.value = typed.get(input.dataset.eventId);
      if (input.dataset.eventId === focused) input.focus();
    }
    for (const fresh of board.querySelectorAll("video.clip")) {
      const kept = players.get(fresh.getAttribute("src"));
      if (kept) fresh.replaceWith(kept);
    }
    localTimes(board);
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}
async function post(url, body) {
  const response = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
  if (!response.ok) alert((await response.json()).error || response.statusText);
  refresh();
}
document.addEventListener("click", (event) => {
  const target = event.target;
  if (target.matches("button.ack")) { target.disabled = true; post("/api/ack", {event_id: target.dataset.eventId}); }
  if (target.matches("button.test")) { post("/api/test", {device: target.dataset.device}); }
  if (target.matches("button.resolve")) {
    const reason = document.querySelector(`input.reason[data-event-id="${target.dataset.eventId}"]`);
    post("/api/resolve", {event_id: target.dataset.eventId, reason: reason ? reason.value : ""});
  }
});
const live = new EventSource("/stream");
live.onmessage = refresh;
live.onopen = refresh;
// Refused a live stream (too many pages open: 503) or it ended for good: refresh on a timer.
live.onerror = () => { if (live.readyState === EventSource.CLOSED && !window.polling) window.polling = setInterval(refresh, 10000); };
