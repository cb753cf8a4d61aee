// First-run setup, sign-in, and the page shown when the node cannot be reached.
import { useState } from 'preact/hooks';
import { boot, login, setup } from '../api.js';
import { ErrorNote, Field, useAction } from '../components.jsx';
import { setTheme, themeChoice } from '../theme.js';

function AuthFrame({ title, children }) {
  return (
    <main class="auth" id="main">
      <div class="auth-card card">
        <p class="brand big">
          <span class="logo" aria-hidden="true">⚡</span> wattmesh
        </p>
        <h1 id="page-title" tabIndex={-1}>{title}</h1>
        {children}
      </div>
      <p class="auth-foot">
        <button
          type="button"
          class="link"
          onClick={() => setTheme(themeChoice() === 'dark' ? 'light' : 'dark')}
        >
          Switch to {themeChoice() === 'dark' ? 'light' : 'dark'} mode
        </button>
      </p>
    </main>
  );
}

export function SetupPage() {
  const [code, setCode] = useState('');
  const [name, setName] = useState('');
  const [pw, setPw] = useState('');
  const [pw2, setPw2] = useState('');
  const [problem, setProblem] = useState(null);
  const { run, busy, error } = useAction();

  const submit = (e) => {
    e.preventDefault();
    setProblem(null);
    if (pw.length < 8) return setProblem('The password needs at least 8 characters.');
    if (pw !== pw2) return setProblem('The two passwords differ.');
    run(() => setup(code.trim(), name.trim(), pw));
  };

  return (
    <AuthFrame title="Set up this node">
      <p>
        Create the owner account. You need the one-time <strong>setup code</strong> this node
        printed to its console (and journal) when it started, so that nobody else on your network
        can claim it first.
      </p>
      <form onSubmit={submit} class="stack" data-testid="setup-form">
        <Field label="Setup code" id="setup-code" hint="From the node's console: look for “setup code”.">
          <input
            id="setup-code"
            name="code"
            required
            autocomplete="one-time-code"
            spellcheck={false}
            autocapitalize="off"
            value={code}
            onInput={(e) => setCode(e.currentTarget.value)}
            aria-describedby="setup-code-hint"
          />
        </Field>
        <Field label="Your user name" id="setup-user">
          <input
            id="setup-user"
            name="username"
            maxLength={32}
            required
            autocomplete="username"
            autocapitalize="off"
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        <Field label="Password" id="setup-pw" hint="At least 8 characters.">
          <input
            id="setup-pw"
            name="password"
            type="password"
            required
            minLength={8}
            autocomplete="new-password"
            value={pw}
            onInput={(e) => setPw(e.currentTarget.value)}
            aria-describedby="setup-pw-hint"
          />
        </Field>
        <Field label="Password again" id="setup-pw2">
          <input
            id="setup-pw2"
            name="password2"
            type="password"
            required
            autocomplete="new-password"
            value={pw2}
            onInput={(e) => setPw2(e.currentTarget.value)}
          />
        </Field>
        {problem && <ErrorNote error={{ message: problem }} />}
        <ErrorNote error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Creating…' : 'Create owner account'}
        </button>
      </form>
    </AuthFrame>
  );
}

export function LoginPage() {
  const [name, setName] = useState('');
  const [pw, setPw] = useState('');
  const { run, busy, error } = useAction();
  const submit = (e) => {
    e.preventDefault();
    run(() => login(name.trim(), pw));
  };
  return (
    <AuthFrame title="Sign in">
      <form onSubmit={submit} class="stack" data-testid="login-form">
        <Field label="User name" id="login-user">
          <input
            id="login-user"
            name="username"
            maxLength={32}
            required
            autocomplete="username"
            autocapitalize="off"
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        <Field label="Password" id="login-pw">
          <input
            id="login-pw"
            name="password"
            type="password"
            required
            autocomplete="current-password"
            value={pw}
            onInput={(e) => setPw(e.currentTarget.value)}
          />
        </Field>
        <ErrorNote error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
      <p class="muted small">
        Household accounts are created by the node's owner under Settings.
      </p>
    </AuthFrame>
  );
}

export function OfflinePage({ message }) {
  return (
    <AuthFrame title="Node not reachable">
      <p role="alert">{message}</p>
      <button type="button" class="primary" onClick={() => boot()}>
        Try again
      </button>
    </AuthFrame>
  );
}
