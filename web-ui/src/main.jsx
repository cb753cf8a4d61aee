// The wattmesh node's browser UI: boot, hash routing and the page shell.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState, useRef } from 'preact/hooks';
import { boot, logout, noteNodeTime, useAppState, useApi } from './api.js';
import { applyTheme, setTheme, themeChoice, useTheme } from './theme.js';
import { Notice } from './components.jsx';
import { SetupPage, LoginPage, OfflinePage } from './pages/auth.jsx';
import { DashboardPage } from './pages/dashboard.jsx';
import { MarketPage } from './pages/market.jsx';
import { AgreementsPage } from './pages/agreements.jsx';
import { TradesPage } from './pages/trades.jsx';
import { StatementsPage } from './pages/statements.jsx';
import { AutomationPage } from './pages/automation.jsx';
import { NeighbourhoodPage } from './pages/neighbourhood.jsx';
import { MeterPage } from './pages/meter.jsx';
import { SettingsPage } from './pages/settings.jsx';
import { DownloadsPage } from './pages/downloads.jsx';

const PAGES = [
  { path: 'dashboard', title: 'Dashboard', icon: '⌂', page: DashboardPage },
  { path: 'market', title: 'Market', icon: '⇄', page: MarketPage },
  { path: 'agreements', title: 'Agreements', icon: '⇉', page: AgreementsPage },
  { path: 'trades', title: 'Trades', icon: '✓', page: TradesPage },
  { path: 'statements', title: 'Statements', icon: '≡', page: StatementsPage },
  { path: 'automation', title: 'Automation', icon: '⚙', page: AutomationPage },
  { path: 'neighbourhood', title: 'Neighbourhood', icon: '☷', page: NeighbourhoodPage },
  { path: 'meter', title: 'Meter', icon: '◔', page: MeterPage },
  { path: 'settings', title: 'Settings', icon: '☰', page: SettingsPage },
  { path: 'downloads', title: 'Downloads', icon: '↓', page: DownloadsPage },
];

/** The route from the location hash: "#/trades/abc/5" -> ["trades", "abc", "5"]. */
function parseHash() {
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [path, query = ''] = h.split('?');
  const parts = path.split('/').filter(Boolean);
  return { parts: parts.length ? parts : ['dashboard'], query: new URLSearchParams(query) };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const on = () => setRoute(parseHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

function ThemeToggle() {
  useTheme();
  const choice = themeChoice();
  const next = { auto: 'dark', dark: 'light', light: 'auto' }[choice];
  const label = { auto: 'Theme: system', dark: 'Theme: dark', light: 'Theme: light' }[choice];
  return (
    <button
      type="button"
      class="ghost theme-toggle"
      onClick={() => setTheme(next)}
      title={`${label} (switch to ${next})`}
      aria-label={`${label}. Switch to ${next}`}
      data-testid="theme-toggle"
    >
      <span aria-hidden="true">{choice === 'dark' ? '☾' : choice === 'light' ? '☀' : '◐'}</span>
      <span class="tt-text">{label.replace('Theme: ', '')}</span>
    </button>
  );
}

function Shell({ user }) {
  const route = useRoute();
  const [menuOpen, setMenuOpen] = useState(false);
  const status = useApi('/api/status', { every: 10000 });
  const charter = useApi('/api/charter', { every: 60000 });
  const first = useRef(true);
  const page = PAGES.find((p) => p.path === route.parts[0]);
  useEffect(() => noteNodeTime(status.data?.now_ms), [status.data]);

  useEffect(() => {
    setMenuOpen(false);
    document.title = `${page ? page.title : 'Not found'} · wattmesh`;
    // Move focus to the new page's heading so keyboard and screen reader users follow along.
    if (first.current) first.current = false;
    else requestAnimationFrame(() => document.getElementById('page-title')?.focus());
    window.scrollTo(0, 0);
  }, [route.parts.join('/')]);

  const ctx = {
    user,
    status: status.data,
    charter: charter.data,
    currency: charter.data?.currency ?? 'EUR',
    slotMinutes: charter.data?.slot_minutes ?? 15,
    reloadStatus: status.reload,
    route,
  };
  const Page = page?.page;
  const s = status.data;
  const clockBad = s && s.clock && s.clock !== 'synced';

  return (
    <div class={`shell ${menuOpen ? 'menu-open' : ''}`}>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('page-title')?.focus(); }}>
        Skip to content
      </a>
      <header class="topbar">
        <button
          type="button"
          class="ghost menu-button"
          aria-expanded={menuOpen}
          aria-controls="mainnav"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          <span aria-hidden="true">☰</span> Menu
        </button>
        <a class="brand" href="#/dashboard">
          <span class="logo" aria-hidden="true">⚡</span>
          <span>
            wattmesh
            <small>{s ? `${s.neighbourhood ?? ''} · ${s.short_id ?? ''}` : ' '}</small>
          </span>
        </a>
        <div class="top-right">
          <span class={`peers ${s?.peers?.length ? 'ok' : ''}`} title="Connected neighbours">
            <span class="dot" aria-hidden="true" /> {s ? `${s.peers?.length ?? 0} online` : '…'}
          </span>
          <ThemeToggle />
          <span class="who" title={`Signed in as ${user.name} (${user.role})`}>
            {user.name} <small>{user.role}</small>
          </span>
          <button type="button" class="ghost signout-top" onClick={() => logout()} data-testid="logout">
            Sign out
          </button>
        </div>
      </header>
      <nav id="mainnav" aria-label="Main">
        <ul>
          {PAGES.map((p) => (
            <li key={p.path}>
              <a href={`#/${p.path}`} aria-current={page === p ? 'page' : undefined}>
                <span class="nav-icon" aria-hidden="true">{p.icon}</span>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
        <div class="nav-account">
          <span>
            Signed in as <strong>{user.name}</strong> ({user.role})
          </span>
          <button type="button" onClick={() => logout()}>
            Sign out
          </button>
        </div>
      </nav>
      <main id="main">
        {clockBad && (
          <Notice kind="warn">
            This node's clock is {s.clock}. Offers and trades need a synchronised clock (check NTP).
          </Notice>
        )}
        {status.error && status.error.status !== 401 && <Notice kind="error">{status.error.message}</Notice>}
        {!status.data && !status.error ? (
          <p class="loading" role="status">Loading…</p>
        ) : Page ? (
          <Page ctx={ctx} />
        ) : (
          <>
            <h1 id="page-title" tabIndex={-1}>Page not found</h1>
            <p>
              <a href="#/dashboard">Back to the dashboard</a>
            </p>
          </>
        )}
      </main>
    </div>
  );
}

function App() {
  const app = useAppState();
  useEffect(() => {
    boot();
  }, []);
  if (app.phase === 'loading') return <p class="boot">Loading wattmesh…</p>;
  if (app.phase === 'offline') return <OfflinePage message={app.bootError} />;
  if (app.phase === 'setup') return <SetupPage />;
  if (app.phase === 'login') return <LoginPage />;
  return <Shell user={app.user} />;
}

applyTheme();
render(<App />, document.getElementById('app'));
