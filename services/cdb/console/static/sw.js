// cdb console service worker: shows the notifier's WebPush messages and opens the
// console where they point. A click opens the page; deciding still takes the page's
// button (with its CSRF token): a notification action never approves by itself.
"use strict";

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

self.addEventListener("push", function (event) {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (error) {
    message = { title: "cdb", body: event.data ? event.data.text() : "" };
  }
  const data = message.data || {};
  const options = {
    body: message.body || "",
    tag: message.tag || undefined,
    renotify: Boolean(message.tag),
    requireInteraction: message.severity === "critical" || Boolean(data.order_id),
    data: data,
  };
  if (Array.isArray(message.actions)) {
    options.actions = message.actions.slice(0, 2).map(function (action) {
      return { action: String(action.action || action), title: String(action.title || action) };
    });
  }
  event.waitUntil(self.registration.showNotification(message.title || "cdb", options));
});

function target(data) {
  if (data && data.order_id) return "/approvals/" + encodeURIComponent(data.order_id);
  if (data && typeof data.url === "string" && data.url.startsWith("/") &&
      !data.url.startsWith("//")) return data.url;
  return "/";
}

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  const url = new URL(target(event.notification.data), self.location.origin).href;
  event.waitUntil((async function () {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      try {
        // navigate first: focus() may be refused (no user activation on some platforms)
        const moved = (await client.navigate(url)) || client;
        await moved.focus().catch(function () { /* shown, just not in front */ });
        return moved;
      } catch (error) {
        // not controlled by this worker (opened before it took over): try the next one
      }
    }
    return self.clients.openWindow(url);
  })());
});
