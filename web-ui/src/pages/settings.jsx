// Settings: household accounts and roles, password, key backup, data retention, appearance.
import { useEffect, useState } from 'preact/hooks';
import { api, del, isOwner, post, put, useApi } from '../api.js';
import { Badge, ErrorNote, Field, Loading, Notice, PageHeader, Section, useAction } from '../components.jsx';
import { setTheme, themeChoice, useTheme } from '../theme.js';

const ROLES = {
  owner: 'Owner: everything',
  trader: 'Trader: may trade',
  viewer: 'Viewer: read only',
};

function Accounts({ me }) {
  const users = useApi('/api/users');
  const [name, setName] = useState('');
  const [pw, setPw] = useState('');
  const [role, setRole] = useState('viewer');
  const [done, setDone] = useState(null);
  const add = useAction();
  const remove = useAction();
  const submit = async (e) => {
    e.preventDefault();
    setDone(null);
    if (pw.length < 8) return add.setError({ message: 'The password needs at least 8 characters.' });
    const r = await add.run(() => post('/api/users', { username: name.trim(), password: pw, role }));
    if (r !== undefined) {
      setDone(`Account “${name.trim()}” created.`);
      setName('');
      setPw('');
      users.reload();
    }
  };
  const doRemove = (u) => {
    if (!window.confirm(`Delete the account “${u.name}”?`)) return;
    remove.run(async () => {
      await del(`/api/users/${encodeURIComponent(u.name)}`);
      users.reload();
    });
  };
  return (
    <Section title="Household accounts" id="accounts">
      <ErrorNote error={users.error} />
      <ErrorNote error={remove.error} />
      {!users.data ? (
        <Loading />
      ) : (
        <ul class="list" data-testid="users">
          {users.data.map((u) => (
            <li key={u.name}>
              <span>
                <strong>{u.name}</strong> <Badge>{u.role}</Badge> {u.name === me.name && <small class="muted">(you)</small>}
              </span>
              {u.name !== me.name && (
                <button type="button" class="danger" onClick={() => doRemove(u)} disabled={remove.busy}>
                  Delete<span class="sr-only"> account {u.name}</span>
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      <h3>Add an account</h3>
      <form class="form-grid" onSubmit={submit} data-testid="add-user-form">
        <Field label="User name" id="u-name">
          <input id="u-name" maxLength={32} required autocomplete="off" autocapitalize="off" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Password" id="u-pw" hint="At least 8 characters.">
          <input id="u-pw" type="password" required minLength={8} autocomplete="new-password" value={pw} onInput={(e) => setPw(e.currentTarget.value)} aria-describedby="u-pw-hint" />
        </Field>
        <Field label="Role" id="u-role">
          <select id="u-role" value={role} onChange={(e) => setRole(e.currentTarget.value)}>
            {Object.entries(ROLES).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </Field>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={add.busy}>
            Add account
          </button>
        </div>
      </form>
      <ErrorNote error={add.error} />
      {done && <Notice kind="ok">{done}</Notice>}
    </Section>
  );
}

function Password() {
  const [old, setOld] = useState('');
  const [pw, setPw] = useState('');
  const [pw2, setPw2] = useState('');
  const [done, setDone] = useState(false);
  const { run, busy, error, setError } = useAction();
  const submit = async (e) => {
    e.preventDefault();
    setDone(false);
    if (pw.length < 8) return setError({ message: 'The new password needs at least 8 characters.' });
    if (pw !== pw2) return setError({ message: 'The two new passwords differ.' });
    const r = await run(() => post('/api/password', { old, new: pw }));
    if (r !== undefined) {
      setDone(true);
      setOld('');
      setPw('');
      setPw2('');
    }
  };
  return (
    <Section title="Change your password" id="password">
      <form class="form-grid" onSubmit={submit} data-testid="password-form">
        <input type="text" name="username" autocomplete="username" hidden />
        <Field label="Current password" id="p-old">
          <input id="p-old" type="password" required autocomplete="current-password" value={old} onInput={(e) => setOld(e.currentTarget.value)} />
        </Field>
        <Field label="New password" id="p-new" hint="At least 8 characters.">
          <input id="p-new" type="password" required minLength={8} autocomplete="new-password" value={pw} onInput={(e) => setPw(e.currentTarget.value)} aria-describedby="p-new-hint" />
        </Field>
        <Field label="New password again" id="p-new2">
          <input id="p-new2" type="password" required autocomplete="new-password" value={pw2} onInput={(e) => setPw2(e.currentTarget.value)} />
        </Field>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy}>
            Change password
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {done && <Notice kind="ok">Password changed.</Notice>}
    </Section>
  );
}

/** Downloads the node's key sealed with a passphrase (the owner's password is asked again). */
function KeyBackup() {
  const [pw, setPw] = useState('');
  const [phrase, setPhrase] = useState('');
  const [phrase2, setPhrase2] = useState('');
  const [done, setDone] = useState(false);
  const { run, busy, error, setError } = useAction();
  const submit = async (e) => {
    e.preventDefault();
    setDone(false);
    if (phrase.length < 12) return setError({ message: 'The passphrase needs at least 12 characters.' });
    if (phrase !== phrase2) return setError({ message: 'The two passphrases differ.' });
    const text = await run(() => api('POST', '/api/keys/backup', { password: pw, passphrase: phrase }, { raw: true }));
    if (typeof text === 'string' && text.startsWith('wattmesh key backup')) {
      const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = 'wattmesh-key.backup';
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      setDone(true);
      setPw('');
      setPhrase('');
      setPhrase2('');
    }
  };
  return (
    <Section title="Back up the node's key" id="key-backup">
      <p class="muted">
        The key is this home's identity in the neighbourhood: without it, a new Pi cannot take over this home's trades and balances.
        The backup is encrypted with a passphrase you choose; keep the file and the passphrase apart. Restore it with{' '}
        <code>wattmesh keys restore FILE</code>.
      </p>
      <form class="form-grid" onSubmit={submit} data-testid="key-backup-form">
        <input type="text" name="username" autocomplete="username" hidden />
        <Field label="Your password" id="kb-pw">
          <input id="kb-pw" type="password" required autocomplete="current-password" value={pw} onInput={(e) => setPw(e.currentTarget.value)} />
        </Field>
        <Field label="Backup passphrase" id="kb-phrase" hint="At least 12 characters; not your password.">
          <input id="kb-phrase" type="password" required minLength={12} autocomplete="new-password" value={phrase} onInput={(e) => setPhrase(e.currentTarget.value)} aria-describedby="kb-phrase-hint" />
        </Field>
        <Field label="Passphrase again" id="kb-phrase2">
          <input id="kb-phrase2" type="password" required autocomplete="new-password" value={phrase2} onInput={(e) => setPhrase2(e.currentTarget.value)} />
        </Field>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy}>
            Download encrypted backup
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {done && <Notice kind="ok">Backup downloaded as wattmesh-key.backup.</Notice>}
    </Section>
  );
}

/** How long the node keeps its per-minute readings (the owner may change it). */
function Retention({ owner }) {
  const current = useApi('/api/settings/retention');
  const [days, setDays] = useState('');
  const [done, setDone] = useState(false);
  const { run, busy, error, setError } = useAction();
  useEffect(() => {
    if (current.data) setDays(String(current.data.days));
  }, [current.data]);
  const submit = async (e) => {
    e.preventDefault();
    setDone(false);
    const n = Number(days);
    if (!Number.isInteger(n) || n < 7 || n > 3650) return setError({ message: 'Keep readings for 7 to 3650 days.' });
    const r = await run(() => put('/api/settings/retention', { days: n }));
    if (r !== undefined) {
      setDone(true);
      current.reload();
    }
  };
  return (
    <Section title="Data retention" id="retention">
      <ErrorNote error={current.error} />
      <p class="muted">
        Per-minute readings stay on this node only. Older ones are deleted; per-slot attestations, trades and statements are kept.
      </p>
      {!current.data ? (
        <Loading />
      ) : owner ? (
        <form class="form-grid" onSubmit={submit} data-testid="retention-form">
          <Field label="Keep per-minute readings for (days)" id="ret-days" hint="7 to 3650.">
            <input id="ret-days" type="number" min={7} max={3650} step={1} required value={days} onInput={(e) => setDays(e.currentTarget.value)} aria-describedby="ret-days-hint" />
          </Field>
          <div class="form-actions">
            <button type="submit" class="primary" disabled={busy}>
              Save
            </button>
          </div>
        </form>
      ) : (
        <p>Readings are kept for {current.data.days} days.</p>
      )}
      <ErrorNote error={error} />
      {done && <Notice kind="ok">Saved: readings are kept for {current.data?.days} days.</Notice>}
    </Section>
  );
}

function Appearance() {
  useTheme();
  const c = themeChoice();
  return (
    <Section title="Appearance" id="appearance">
      <fieldset class="radios">
        <legend>Colour scheme</legend>
        {[
          ['auto', 'Like this device'],
          ['light', 'Light'],
          ['dark', 'Dark'],
        ].map(([k, l]) => (
          <label key={k}>
            <input type="radio" name="theme" value={k} checked={c === k} onChange={() => setTheme(k)} /> {l}
          </label>
        ))}
      </fieldset>
    </Section>
  );
}

export function SettingsPage({ ctx }) {
  const u = ctx.user;
  return (
    <>
      <PageHeader title="Settings" sub={`Signed in as ${u.name} (${u.role}).`} />
      {isOwner(u) ? <Accounts me={u} /> : <Notice>Only the owner manages household accounts.</Notice>}
      <Password />
      {isOwner(u) && <KeyBackup />}
      <Retention owner={isOwner(u)} />
      <Appearance />
    </>
  );
}
