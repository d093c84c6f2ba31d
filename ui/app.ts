/** The web UI: one page per view, chosen by the URL's fragment (#/map, #/flows, #/entries, ...). */
import { NotSignedIn, panel, status } from './api.js';
import { FlowTable } from './flows.js';
import { LISTS, showList } from './lists.js';
import { IdentityMap } from './map.js';

let current: { unmount(): void } | undefined;

async function route(): Promise<void> {
  const view = location.hash.replace(/^#\//, '') || 'map';
  current?.unmount();
  current = undefined;
  panel();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.getAttribute('href') === `#/${view}`);
  const main = document.getElementById('main')!;
  try {
    if (view === 'map') { const m = new IdentityMap(); current = m; await m.mount(main); }
    else if (view === 'flows') { const f = new FlowTable(); current = f; f.mount(main); }
    else if (LISTS[view]) await showList(main, LISTS[view]!);
    else main.textContent = `no view "${view}"`;
  } catch (err) {
    status(err instanceof NotSignedIn ? err.message : `error: ${(err as Error).message}`);
  }
}

window.addEventListener('hashchange', () => { void route(); });
void route();
