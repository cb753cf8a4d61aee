// Settings: household accounts and roles, password, appearance.
import { useState } from 'preact/hooks';
import { del, isOwner, post, useApi } from '../api.js';
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
      <Appearance />
    </>
  );
}
