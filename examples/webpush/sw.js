// pushhub Web Push example: the service worker.
//
// The browser runs this file on its own, without the page: when a push
// arrives for a closed tab, this is the only code that sees it. It must be
// served from the site itself (not a file:// URL, not another origin), and
// its place sets its scope: served as /sw.js, it covers the whole site.
//
// The hub sends, as the message's text, the push's `webpush.data`: a
// string as it is, anything else as its JSON. The example backend sends
// {"title":..,"body":..,"url":..}; any other text is shown as the body.

"use strict";

const DEFAULT_TITLE = "pushhub";

// Take over at once: without this, a new version of this file waits until
// every tab of the site is closed, and an example that is edited and
// reloaded would keep running the old one.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// What the push's text asks to show. Never throws: a message that is not
// JSON, or JSON of another shape, still shows as a notification.
function readMessage(data) {
  // A push may carry no data at all (a "tickle"); it must still show
  // something, since the page subscribed with userVisibleOnly.
  const text = data ? data.text() : "";
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    parsed = null;
  }
  if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
    return {
      title: typeof parsed.title === "string" && parsed.title !== "" ? parsed.title : DEFAULT_TITLE,
      body: typeof parsed.body === "string" ? parsed.body : "",
      url: typeof parsed.url === "string" ? parsed.url : "",
    };
  }
  return { title: DEFAULT_TITLE, body: text, url: "" };
}

self.addEventListener("push", (event) => {
  const message = readMessage(event.data);
  // waitUntil keeps the worker alive until the notification is shown: the
  // browser may stop a worker as soon as its event handler returns. And
  // with userVisibleOnly, a push that shows nothing counts against the
  // site (Chrome then shows a notification of its own, and may end the
  // subscription).
  event.waitUntil(
    self.registration.showNotification(message.title, {
      body: message.body,
      // The URL travels with the notification, for the click below.
      data: { url: message.url },
      // One tag: a newer test push replaces the older one instead of
      // piling up. A real app would tag by conversation, order, ...
      tag: "pushhub-example",
      renotify: true,
    }),
  );
});

// Only this site's pages: a notification is no way to send the user
// elsewhere, whoever managed to get a message through.
function targetUrl(url) {
  const scope = new URL(self.registration.scope);
  try {
    const target = new URL(url || scope.href, scope.href);
    return target.origin === scope.origin ? target.href : scope.href;
  } catch (e) {
    return scope.href;
  }
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = targetUrl(event.notification.data && event.notification.data.url);
  // Again inside waitUntil: the browser lets a worker focus or open a
  // window only while it handles the click, and only if it is still alive.
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      // A tab already showing the page: bring it forward rather than open
      // a second one.
      for (const client of windows) {
        if (client.url === url && "focus" in client) return client.focus();
      }
      return self.clients.openWindow(url);
    })(),
  );
});
