// Times come as <time datetime="...Z">... UTC</time>: shown here in the operator's own time zone
// (the event log keeps UTC). Called on load and after each live refresh of the dashboard.
function localTimes(root) {
  for (const element of (root || document).querySelectorAll("time[datetime]:not([data-local])")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (isNaN(moment)) continue;
    element.title = element.textContent;  // the UTC text stays on hover
    element.textContent = moment.toLocaleString(undefined, {year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short"});
    element.dataset.local = "1";
  }
}
localTimes();
