// cdb console: live updates (server-sent events), the service worker, WebPush subscribe.
// Written for this console, no library; the CSP allows only scripts from this origin.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  if (!page) return; // the login page
  const csrf = body.dataset.csrf;
  const live = document.getElementById("live");
  const status = document.getElementById("connection");

  function showDecisionForm() {
    // once the held order is decided (or expired), the buttons go away
    const card = document.getElementById("approval");
    const form = document.getElementById("decide");
    if (card && form && card.dataset.state !== "pending") form.hidden = true;
  }

  function connect() {
    const url = "/events/" + encodeURIComponent(page) + "?arg=" +
      encodeURIComponent(body.dataset.arg || "");
    const source = new EventSource(url);
    source.addEventListener("open", function () {
      status.textContent = "live";
      status.className = "good";
    });
    source.addEventListener("update", function (event) {
      live.innerHTML = JSON.parse(event.data); // rendered and escaped by the server
      showDecisionForm();
      status.textContent = "live · updated " + new Date().toLocaleTimeString();
    });
    source.addEventListener("logout", function () {
      source.close();
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    });
    source.addEventListener("error", function () {
      status.textContent = "live updates: reconnecting…";
      status.className = "bad";
      if (source.readyState === EventSource.CLOSED) {
        // a 401 closes the stream for good: the session ended
        window.location.reload();
      }
    });
  }

  function keyBytes(base64url) {
    const padded = base64url + "=".repeat((4 - (base64url.length % 4)) % 4);
    const raw = atob(padded.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(raw, function (c) { return c.charCodeAt(0); });
  }

  async function subscribe(registration) {
    const state = document.getElementById("push-state");
    try {
      const key = await fetch("/push/key", { credentials: "same-origin" });
      if (!key.ok) throw new Error("the notifier has no WebPush key (" + key.status + ")");
      const { applicationServerKey } = await key.json();
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes(applicationServerKey),
      });
      const reply = await fetch("/push/subscribe", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(subscription.toJSON()),
      });
      if (!reply.ok) throw new Error("subscribe refused (" + reply.status + ")");
      state.textContent = "this device gets notifications";
    } catch (error) {
      state.textContent = "notifications: " + error.message;
    }
  }

  async function setUpPush() {
    if (!("serviceWorker" in navigator)) return;
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    if (!("PushManager" in window)) return;
    const existing = await registration.pushManager.getSubscription();
    const button = document.getElementById("push");
    if (existing) {
      document.getElementById("push-state").textContent = "this device gets notifications";
      return;
    }
    button.hidden = false;
    button.addEventListener("click", async function () {
      button.disabled = true;
      const permission = await Notification.requestPermission();
      if (permission === "granted") await subscribe(registration);
      button.disabled = false;
    });
  }

  showDecisionForm();
  connect();
  setUpPush().catch(function () { /* no service worker here (http on a LAN name) */ });
})();
