/* Small helpers for finding, making and showing elements. */

export const $ = (selector, scope = document) => scope.querySelector(selector);
export const $$ = (selector, scope = document) => Array.from(scope.querySelectorAll(selector));

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/* Scroll `element` into the middle of the screen unless it is wholly on it already: on a phone the
 * workspace and the list are one long column, and what just changed may be far from where the person is. */
export function bringIntoView(element) {
  if (!element || element.closest("[hidden]")) return;
  const box = element.getBoundingClientRect();
  const height = window.innerHeight || document.documentElement.clientHeight;
  if (box.top >= 0 && box.bottom <= height) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  element.scrollIntoView({ block: box.height > height ? "start" : "center", behavior: still ? "auto" : "smooth" });
}
