// Light and dark: follows the system (prefers-color-scheme) unless the owner picks one.
import { useEffect, useState } from 'preact/hooks';

const KEY = 'wattmesh-theme';
const media = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
const listeners = new Set();

export function themeChoice() {
  try {
    const v = localStorage.getItem(KEY);
    return v === 'light' || v === 'dark' ? v : 'auto';
  } catch {
    return 'auto';
  }
}

export function resolvedTheme() {
  const c = themeChoice();
  if (c !== 'auto') return c;
  return media?.matches ? 'dark' : 'light';
}

export function applyTheme() {
  const t = resolvedTheme();
  document.documentElement.dataset.theme = t;
  document.documentElement.style.colorScheme = t;
  for (const l of [...listeners]) l(t);
}

export function setTheme(choice) {
  try {
    if (choice === 'auto') localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, choice);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
  applyTheme();
}

media?.addEventListener?.('change', applyTheme);

/** The theme in effect ('light' | 'dark'); re-renders when it changes. */
export function useTheme() {
  const [t, setT] = useState(resolvedTheme());
  useEffect(() => {
    listeners.add(setT);
    return () => listeners.delete(setT);
  }, []);
  return t;
}

/** A CSS custom property's value from the root element. */
export const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
