// hetex console: progressive enhancement only (every page works without it); no inline script, no CDN.
// A table marked data-live="N" is refreshed every N seconds from the same page (export progress).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-live][data-testid]").forEach((table) => {
    const seconds = Math.max(5, Number(table.dataset.live) || 15);
    const id = table.dataset.testid;
    setInterval(async () => {
      try {
        const resp = await fetch(window.location.pathname + window.location.search, { credentials: "same-origin" });
        if (!resp.ok) return;
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const fresh = doc.querySelector(`table[data-testid="${id}"]`);
        if (fresh) table.replaceWith(fresh);
      } catch (e) { /* offline: keep the last table */ }
    }, seconds * 1000);
  });
});
