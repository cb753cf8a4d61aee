// The node's JSON API: session, CSRF token, errors, and a small shared store.
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import { parseJson, stringifyJson } from './json.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The app's shared state. phase: loading | setup | login | app | offline
const state = { phase: 'loading', user: null, csrf: null, bootError: null };
const listeners = new Set();

export const getState = () => state;
export function setState(patch) {
  Object.assign(state, patch);
  for (const l of [...listeners]) l(state);
}
export function useAppState() {
  const [, force] = useState(0);
  useEffect(() => {
    const l = () => force((n) => n + 1);
    listeners.add(l);
    return () => listeners.delete(l);
  }, []);
  return state;
}

/** Called when any API route answers 401: the session is gone. */
async function sessionLost() {
  if (state.phase !== 'app') return;
  setState({ user: null, csrf: null, phase: 'loading' });
  await boot();
}

/**
 * One API call. `auth: false` for the routes that answer 401 as a normal answer (login).
 * State-changing methods carry the CSRF token from the session.
 */
export async function api(method, path, body, { auth = true, raw = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = state.csrf ?? '';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : stringifyJson(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'The node cannot be reached. Is it running, and is this device on its network?');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = parseJson(text);
    } catch {
      data = null;
    }
  }
  if (res.status === 401 && auth) {
    sessionLost();
    throw new ApiError(401, data?.error || 'Your session has ended. Please sign in again.');
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.error || `${res.status} ${res.statusText || 'error'}`);
  }
  return raw ? text : data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

/** Decides what to show first: setup (no owner yet), login, or the app. */
export async function boot() {
  try {
    const setup = await api('GET', '/api/setup', undefined, { auth: false });
    if (setup?.needed) {
      setState({ phase: 'setup', user: null, csrf: null, bootError: null });
      return;
    }
    try {
      const s = await api('GET', '/api/session', undefined, { auth: false });
      setState({ phase: 'app', user: s.user, csrf: s.csrf, bootError: null });
    } catch (e) {
      if (e.status === 401) setState({ phase: 'login', user: null, csrf: null, bootError: null });
      else throw e;
    }
  } catch (e) {
    setState({ phase: 'offline', bootError: e.message });
  }
}

export async function login(username, password) {
  const s = await api('POST', '/api/login', { username, password }, { auth: false });
  setState({ phase: 'app', user: s.user, csrf: s.csrf });
}

export async function setup(code, username, password) {
  const s = await api('POST', '/api/setup', { code, username, password }, { auth: false });
  setState({ phase: 'app', user: s.user, csrf: s.csrf });
}

export async function logout() {
  try {
    await api('POST', '/api/logout', {}, { auth: false });
  } finally {
    resetLive();
    setState({ phase: 'login', user: null, csrf: null });
    location.hash = '#/';
  }
}

// The node's clock, which the browser's may not match (or, on an accelerated test network, run
// at a different speed): learned from /api/status, used for slots, ages and ranges.
let skewMs = 0;
export function noteNodeTime(nowMs) {
  if (Number.isFinite(nowMs)) skewMs = nowMs - Date.now();
}
export const nodeNow = () => Date.now() + skewMs;

export const canTrade = (user) => user?.role === 'owner' || user?.role === 'trader';
export const isOwner = (user) => user?.role === 'owner';

/**
 * Loads a GET route and keeps it fresh: reloads every `every` ms while the page is visible.
 * Returns { data, error, loading, reload }.
 */
export function useApi(path, { every = 0 } = {}) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const reload = useCallback(async () => {
    if (!path) return;
    const n = ++seq.current;
    try {
      const d = await get(path);
      if (n === seq.current) {
        setData(d);
        setError(null);
      }
    } catch (e) {
      if (n === seq.current) setError(e);
    } finally {
      if (n === seq.current) setLoading(false);
    }
  }, [path]);
  useEffect(() => {
    setLoading(true);
    reload();
    if (!every) return undefined;
    const id = setInterval(() => {
      if (!document.hidden) reload();
    }, every);
    const onVis = () => !document.hidden && reload();
    document.addEventListener('visibilitychange', onVis);
    return () => {
      clearInterval(id);
      document.removeEventListener('visibilitychange', onVis);
      seq.current++;
    };
  }, [reload, every]);
  return { data, error, loading, reload };
}

// Live power from server-sent events, shared by every page that shows it.
const live = { last: null, receivedAt: 0, history: [], connected: false, es: null, users: 0 };
const liveListeners = new Set();
const LIVE_KEEP_MS = 15 * 60 * 1000;

function liveNotify() {
  for (const l of [...liveListeners]) l();
}

function liveOpen() {
  if (live.es) return;
  const es = new EventSource('/api/live');
  live.es = es;
  es.addEventListener('open', () => {
    live.connected = true;
    liveNotify();
  });
  es.addEventListener('power', (ev) => {
    let p;
    try {
      p = parseJson(ev.data);
    } catch {
      return;
    }
    live.last = p;
    live.receivedAt = Date.now(); // the browser's clock: ages do not depend on the node's
    live.connected = true;
    live.history.push(p);
    const cut = (p.at_ms ?? Date.now()) - LIVE_KEEP_MS;
    while (live.history.length && live.history[0].at_ms < cut) live.history.shift();
    liveNotify();
  });
  es.addEventListener('error', () => {
    live.connected = false;
    liveNotify();
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (for example a 401): check the session, then try again later.
      live.es = null;
      get('/api/session').catch(() => {});
      setTimeout(() => {
        if (live.users > 0 && state.phase === 'app') liveOpen();
      }, 5000);
    }
  });
}

function liveClose() {
  if (live.es) live.es.close();
  live.es = null;
  live.connected = false;
}

/** { last, history, connected } of the live power stream while the component is mounted. */
export function useLive() {
  const [, force] = useState(0);
  useEffect(() => {
    const l = () => force((n) => n + 1);
    liveListeners.add(l);
    live.users++;
    liveOpen();
    return () => {
      liveListeners.delete(l);
      live.users--;
      if (live.users === 0) liveClose();
    };
  }, []);
  return live;
}

/** Reset the live stream (on logout). */
export function resetLive() {
  liveClose();
  live.last = null;
  live.history = [];
}
