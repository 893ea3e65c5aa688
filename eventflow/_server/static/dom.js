// DOM helpers: build nodes (`h`, `s` for SVG) and patch a live page in place, so what
// a user reads, selects or has folded open never jumps.

export const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el[k] = v; // a property, so a patch can hand it on
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const HANDLERS = ["onclick", "onchange", "onkeydown", "onfocus"];
export const USER_ATTRIBUTES = new Set(["open"]); // <details> folded or unfolded by the user

export function keyOf(node) {
  return node.nodeType === 1 ? node.getAttribute("data-key") || node.id || null : null;
}

// Make `el`'s children look like `children` (fresh, detached nodes), reusing every
// existing node that can be kept: keyed ones by key, others by position and tag.
export function patch(el, ...children) {
  const wanted = [];
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    wanted.push(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  const keyed = new Map();
  for (const node of el.childNodes) {
    const key = keyOf(node);
    if (key !== null) keyed.set(key, node);
  }
  wanted.forEach((want, i) => {
    const current = el.childNodes[i] || null;
    const key = keyOf(want);
    let keep = null;
    if (key !== null) keep = keyed.get(key) || null;
    else if (current && keyOf(current) === null && current.nodeName === want.nodeName) keep = current;
    if (keep) {
      if (key !== null) keyed.delete(key);
      morph(keep, want);
      if (keep !== current) el.insertBefore(keep, current);
    } else {
      el.insertBefore(want, current);
    }
  });
  while (el.childNodes.length > wanted.length) el.lastChild.remove();
}

export function morph(node, want) {
  if (node.nodeType !== 1) {
    if (node.nodeValue !== want.nodeValue) node.nodeValue = want.nodeValue;
    return;
  }
  for (const { name } of [...node.attributes]) {
    if (!want.hasAttribute(name) && !USER_ATTRIBUTES.has(name)) node.removeAttribute(name);
  }
  for (const { name, value } of want.attributes) {
    if (USER_ATTRIBUTES.has(name)) continue;
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }
  for (const handler of HANDLERS) {
    if (node[handler] !== want[handler]) node[handler] = want[handler];
  }
  patch(node, [...want.childNodes]);
}

// A list row that opens `href`: clickable, focusable, Enter opens it, arrows move.
export function linkRow(href, attrs, ...cells) {
  return h("tr", {
    ...attrs,
    class: `clickable${attrs.class ? ` ${attrs.class}` : ""}`,
    tabindex: 0,
    onclick: (e) => { if (!e.target.closest("a")) location.hash = href; },
    onkeydown: (e) => {
      const row = e.currentTarget;
      if (e.key === "Enter") location.hash = href;
      else if (e.key === "ArrowDown" && row.nextElementSibling) { e.preventDefault(); row.nextElementSibling.focus(); }
      else if (e.key === "ArrowUp" && row.previousElementSibling) { e.preventDefault(); row.previousElementSibling.focus(); }
    },
  }, ...cells);
}
