/* Requests to the API (its contract: shared/API.md): JSON both ways, CSRF on unsafe methods. */

import { API } from "./config.js";
import { setOffline } from "./connection.js";

/* A failed request as an Error whose message is the server's `detail`, word for word: the API writes it for
 * people, in the labels they see. `fields` keeps the machine-readable map, for placing messages by inputs. */
export function apiError(status, body) {
  const { detail = "Something went wrong; please try again.", code = "error", fields = {} } = body || {};
  return Object.assign(new Error(detail), { status, code, fields, body: body || {} });
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/* One request; failures thrown as apiError. Answers {status, data, etag}; a 304 answers with data null. */
export async function api(method, path, body, headers = {}) {
  const init = { method, credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET") {
    Object.assign(init.headers, { "X-CSRFToken": csrfToken(), "Content-Type": "application/json" });
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (error) {
    setOffline(true);
    throw apiError(0, { detail: "Connection lost — reconnecting…", code: "network" });
  }
  setOffline(response.status >= 500);
  const data = response.status === 304 || response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok && response.status !== 304) {
    if (data && data.code === "not_authenticated") window.location.assign("/accounts/login/?next=/");
    throw apiError(response.status, data);
  }
  return { status: response.status, data, etag: response.headers.get("ETag") };
}
