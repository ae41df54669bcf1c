// The logged-in user on every page (issue 12). A classic script loaded first in <head>, so that it wraps
// fetch() before any page script calls it:
// - a state-changing request carries the session's CSRF token (X-CSRF-Token, read from the hf_csrf cookie:
//   the server refuses such a request from a session without it);
// - a 401 (the session expired or was ended elsewhere) takes the page to the login form and back here after;
// - the header's user menu (#user-menu) shows who is logged in, the role, and a Log out button;
// - what needs a permission the role lacks ([data-needs="admin"], …) is hidden, the rest shown (the server
//   refuses it anyway: this only spares a click on what would be refused).
// With logins off (/api/me says so) the menu stays hidden and every permission counts as held.
"use strict";
(() => {
  const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
  const plainFetch = window.fetch.bind(window);
  const csrfToken = () => {
    const match = document.cookie.match(/(?:^|;\s*)hf_csrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  };
  const toLogin = () => {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search + location.hash));
  };
  window.fetch = async (input, init = {}) => {
    const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
    const token = csrfToken();
    if (!SAFE.has(method) && token) {
      const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
      headers.set("X-CSRF-Token", token);
      init = { ...init, headers };
    }
    const response = await plainFetch(input, init);
    if (response.status === 401 && token) toLogin(); // was logged in: the session is over
    return response;
  };
  async function showUser() {
    const menu = document.getElementById("user-menu");
    const response = await plainFetch("/api/me", { headers: { Accept: "application/json" } });
    if (response.status === 401) { toLogin(); return; }
    const me = response.ok ? await response.json() : null;
    if (!me) return;
    const held = new Set(me.permissions);
    for (const node of document.querySelectorAll("[data-needs]")) node.hidden = !held.has(node.dataset.needs);
    if (!me.logins || !menu) return;
    document.getElementById("user-name").textContent = `${me.name} (${me.role})`;
    menu.hidden = false;
  }
  document.addEventListener("DOMContentLoaded", showUser);
})();
