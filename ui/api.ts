/**
 * The admin API as the browser reads it: the session cookie goes with every
 * request (same origin), and only GET is used (a session only reads).
 */

export class NotSignedIn extends Error {}

export async function getJson<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const res = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (res.status === 401) throw new NotSignedIn('the session has ended: run `meshid ui` again');
  const body = await res.json() as T & { error?: { message: string } };
  if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body;
}

/** NDJSON lines of a streaming answer until it ends or `signal` aborts. */
export async function streamLines(path: string, query: Record<string, string | number | undefined>, onLine: (line: string) => void, signal: AbortSignal): Promise<void> {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  let res: Response;
  try {
    res = await fetch(url, { credentials: 'same-origin', signal });
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  }
  if (res.status === 401) throw new NotSignedIn('the session has ended: run `meshid ui` again');
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line) onLine(line);
      }
    }
  } catch (err) {
    if (!signal.aborted) throw err;
  }
}

/** An element with children, for the few views built here. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

export function status(text: string): void {
  document.getElementById('status')!.textContent = text;
}

/** The side panel: shown with `content`, hidden with nothing. */
export function panel(...content: Array<Node | string>): void {
  const p = document.getElementById('panel')!;
  p.replaceChildren(...content);
  p.hidden = content.length === 0;
}

export function fields(pairs: Array<[string, string]>): HTMLElement {
  const dl = el('dl');
  for (const [k, v] of pairs) dl.append(el('dt', {}, k), el('dd', {}, v));
  return dl;
}
