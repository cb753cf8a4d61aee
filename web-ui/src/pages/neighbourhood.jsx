// Neighbourhood: members and whether they are online, connections, the charter, invites.
import { useMemo, useState } from 'preact/hooks';
import qrcode from 'qrcode-generator';
import { del, isOwner, post, useApi } from '../api.js';
import {
  Badge, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, useAction,
} from '../components.jsx';
import { formatDate, formatDuration, formatEnergy, formatPower, formatPrice, formatTime, shortId } from '../format.js';

/** An invite code as an SVG QR code (no network, no canvas). */
function QrCode({ text }) {
  const svg = useMemo(() => {
    const qr = qrcode(0, 'M');
    qr.addData(text, 'Byte');
    qr.make();
    return qr.createSvgTag({ cellSize: 4, margin: 16, scalable: true });
  }, [text]);
  // The SVG is generated locally from the code; it contains no script.
  return <div class="qr" role="img" aria-label="QR code of the invite code" dangerouslySetInnerHTML={{ __html: svg }} />;
}

function IssueInvite({ onIssued }) {
  const [note, setNote] = useState('');
  const [days, setDays] = useState('7');
  const [invite, setInvite] = useState(null);
  const [copied, setCopied] = useState(false);
  const { run, busy, error } = useAction();
  const submit = async (e) => {
    e.preventDefault();
    const d = Number(days);
    const r = await run(() => post('/api/invites', { note: note.trim(), valid_secs: Math.round(d * 86400) }));
    if (r) {
      setInvite(r);
      setCopied(false);
      onIssued();
    }
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(invite.code);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  return (
    <div>
      <form class="form-grid" onSubmit={submit} data-testid="invite-form">
        <Field label="Who is it for?" id="inv-note" hint="A note for yourself, e.g. “Number 12”.">
          <input id="inv-note" value={note} maxLength={64} onInput={(e) => setNote(e.currentTarget.value)} aria-describedby="inv-note-hint" />
        </Field>
        <Field label="Valid for" id="inv-days">
          <select id="inv-days" value={days} onChange={(e) => setDays(e.currentTarget.value)}>
            <option value="1">1 day</option>
            <option value="3">3 days</option>
            <option value="7">1 week</option>
            <option value="14">2 weeks</option>
          </select>
        </Field>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Issuing…' : 'Issue invite'}
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {invite && (
        <div class="invite" data-testid="invite-result">
          <QrCode text={invite.code} />
          <div>
            <p>
              Give this code to the new neighbour. They run <code>wattmesh join &lt;code&gt;</code> on their
              node. It admits one node and expires {formatTime(invite.expires_ms)}.
            </p>
            <label for="inv-code">Invite code</label>
            <textarea id="inv-code" readOnly rows={4} class="code" value={invite.code} onFocus={(e) => e.currentTarget.select()} />
            <div class="form-actions">
              <button type="button" onClick={copy}>
                {copied ? 'Copied' : 'Copy code'}
              </button>
              <span role="status" class="sr-only">{copied ? 'Invite code copied' : ''}</span>
            </div>
          </div>
        </div>
      )}
    </div>
  );
}

function Invites({ canIssue }) {
  const inv = useApi('/api/invites', { every: 30000 });
  const revoke = useAction();
  const list = inv.data ?? [];
  const doRevoke = (i) => {
    if (!window.confirm(`Revoke the invite “${i.note || i.id}”? It can no longer be used.`)) return;
    revoke.run(async () => {
      await del(`/api/invites/${encodeURIComponent(i.id)}`);
      inv.reload();
    });
  };
  return (
    <Section title="Invites" id="invites">
      {canIssue ? (
        <IssueInvite onIssued={inv.reload} />
      ) : (
        <Notice>Only the owner of an admin node can issue invites.</Notice>
      )}
      <ErrorNote error={inv.error} />
      <ErrorNote error={revoke.error} />
      {inv.data && list.length > 0 && (
        <table class="table responsive">
          <caption class="sr-only">Invites issued by this node</caption>
          <thead>
            <tr>
              <th scope="col">For</th>
              <th scope="col">Issued</th>
              <th scope="col">Expires</th>
              <th scope="col">Status</th>
              <th scope="col"><span class="sr-only">Action</span></th>
            </tr>
          </thead>
          <tbody>
            {[...list].sort((a, b) => b.issued_ms - a.issued_ms).map((i) => (
              <tr key={i.id}>
                <td data-label="For">{i.note || <span class="muted">(no note)</span>}</td>
                <td data-label="Issued">{formatTime(i.issued_ms)}</td>
                <td data-label="Expires">{formatTime(i.expires_ms)}</td>
                <td data-label="Status">
                  <Badge kind={i.status === 'open' ? 'good' : ''}>{i.status}</Badge>
                </td>
                <td class="actions">
                  {i.status === 'open' && canIssue && (
                    <button type="button" class="danger" onClick={() => doRevoke(i)} disabled={revoke.busy}>
                      Revoke<span class="sr-only"> invite {i.note}</span>
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

/** How much of what a neighbour sold us it delivered, by the co-signed settlements. */
function DeliveryRecord({ r, me }) {
  if (me) return '–';
  if (!r) return <span class="muted">no settled trades</span>;
  const pct = r.delivered_permille == null ? null : r.delivered_permille / 10;
  return (
    <span>
      {pct == null ? (
        <span class="muted">nothing bought yet</span>
      ) : (
        <Badge kind={pct >= 95 ? 'good' : pct >= 80 ? 'warn' : 'bad'}>{`${pct % 1 ? pct.toFixed(1) : pct} % delivered`}</Badge>
      )}
      {r.promised_wh > 0 && (
        <small class="muted"> {formatEnergy(r.delivered_wh)} of {formatEnergy(r.promised_wh)} promised</small>
      )}
      {r.disputed > 0 && <small class="muted"> · {r.disputed} disputed or one-sided</small>}
    </span>
  );
}

export function NeighbourhoodPage({ ctx }) {
  const members = useApi('/api/members', { every: 15000 });
  const led = useApi('/api/ledger', { every: 60000 });
  const record = new Map((led.data?.reputation ?? []).map((r) => [r.peer, r]));
  const s = ctx.status;
  const ch = ctx.charter;
  const list = members.data ?? [];
  const me = list.find((m) => m.me);
  const canIssue = isOwner(ctx.user) && !!me?.admin;
  const peersByNode = new Map((s?.peers ?? []).map((p) => [p.node, p]));

  return (
    <>
      <PageHeader title="Neighbourhood" sub={s?.neighbourhood ? `${s.neighbourhood} · ${list.length} members` : null} />
      <Section title="Members" id="members">
        <ErrorNote error={members.error} />
        {!members.data ? (
          <Loading />
        ) : list.length === 0 ? (
          <Empty>No members known yet.</Empty>
        ) : (
          <table class="table responsive" data-testid="members-table">
            <caption class="sr-only">Members of the neighbourhood</caption>
            <thead>
              <tr>
                <th scope="col">Member</th>
                <th scope="col">Online</th>
                <th scope="col" class="num">Solar</th>
                <th scope="col">Member since</th>
                <th scope="col">Connection</th>
                <th scope="col">Delivery record</th>
              </tr>
            </thead>
            <tbody>
              {[...list]
                .sort((a, b) => (b.me - a.me) || (b.online - a.online) || (a.name ?? '').localeCompare(b.name ?? ''))
                .map((m) => {
                  const p = peersByNode.get(m.node_id) ?? peersByNode.get(m.short_id);
                  return (
                    <tr key={m.node_id} class={m.me ? 'mine' : ''}>
                      <th scope="row" data-label="Member">
                        {m.name || 'Neighbour'} <code class="muted" title={m.node_id}>{m.short_id}</code>{' '}
                        {m.me && <Badge kind="good">this node</Badge>} {m.admin && <Badge>admin</Badge>}
                        {m.previous && <small class="muted"> (moved from {shortId(m.previous)})</small>}
                      </th>
                      <td data-label="Online">
                        <span>
                          <span class={`dot ${m.online || m.me ? 'on' : ''}`} aria-hidden="true" />{' '}
                          {m.me ? 'this node' : m.online ? 'online' : 'offline'}
                        </span>
                      </td>
                      <td data-label="Solar" class="num">{m.pv_capacity_w ? formatPower(m.pv_capacity_w) : '–'}</td>
                      <td data-label="Member since">
                        <span>
                          {m.since_ms ? formatDate(m.since_ms) : '–'} {m.how && <small class="muted">({m.how})</small>}
                        </span>
                      </td>
                      <td data-label="Connection">
                        {p ? (
                          <span>
                            {p.reach}
                            {p.score != null && <small class="muted"> · score {Math.round(p.score * 10) / 10}</small>}
                          </span>
                        ) : (
                          '–'
                        )}
                      </td>
                      <td data-label="Delivery record" data-testid="delivery-record">
                        <DeliveryRecord me={m.me} r={record.get(m.node_id)} />
                      </td>
                    </tr>
                  );
                })}
            </tbody>
          </table>
        )}
        <p class="muted small">
          Delivery record: of the energy each neighbour sold you in settled trades, how much the meters
          counted as delivered.
        </p>
      </Section>

      {s && (
        <Section title="Connections" id="peers">
          {(s.peers ?? []).length === 0 ? (
            <Empty>No neighbour connected right now.</Empty>
          ) : (
            <table class="table responsive">
              <caption class="sr-only">Open connections to neighbours</caption>
              <thead>
                <tr>
                  <th scope="col">Node</th>
                  <th scope="col">Address</th>
                  <th scope="col">Reach</th>
                  <th scope="col">Direction</th>
                  <th scope="col" class="num">Score</th>
                  <th scope="col">Connected</th>
                </tr>
              </thead>
              <tbody>
                {s.peers.map((p) => (
                  <tr key={p.peer_id}>
                    <td data-label="Node"><code title={p.peer_id}>{shortId(p.node) || shortId(p.peer_id)}</code></td>
                    <td data-label="Address"><code class="wrap">{p.address}</code></td>
                    <td data-label="Reach">{p.reach}</td>
                    <td data-label="Direction">{p.outbound ? 'we dialled' : 'they dialled'}</td>
                    <td data-label="Score" class="num">{p.score != null ? Math.round(p.score * 10) / 10 : '–'}</td>
                    <td data-label="Connected">{formatDuration(p.connected_secs)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <p class="muted small">
            This node: <code>{s.short_id}</code> · listening on{' '}
            {(s.listening ?? []).length
              ? s.listening.map((a, i) => (
                  <span key={a}>
                    {i > 0 && ', '}
                    <code>{a}</code>
                  </span>
                ))
              : '–'}
          </p>
        </Section>
      )}

      <Section title="Charter" id="charter">
        {!ch ? (
          <Loading />
        ) : (
          <dl class="facts wide" data-testid="charter">
            <dt>Name</dt>
            <dd>{ch.name}</dd>
            <dt>Version</dt>
            <dd>
              {ch.version}
              {ch.effective_ms ? ` (in effect since ${formatDate(ch.effective_ms)})` : ''}
            </dd>
            <dt>Delivery slots</dt>
            <dd>{ch.slot_minutes} minutes</dd>
            <dt>Utility retail price</dt>
            <dd>{formatPrice(ch.retail_price, ch.currency)}</dd>
            <dt>Utility feed-in price</dt>
            <dd>{formatPrice(ch.feed_in_price, ch.currency)}</dd>
            <dt>Currency</dt>
            <dd>{ch.currency}</dd>
            <dt>Time zone</dt>
            <dd>{ch.time_zone}</dd>
            <dt>Gate closure</dt>
            <dd>{formatDuration(ch.gate_closure_secs)} before each slot</dd>
            <dt>Settlement grace</dt>
            <dd>{formatDuration(ch.settlement_grace_secs)}</dd>
            <dt>Most power per home</dt>
            <dd>{formatPower(ch.max_power_w)}</dd>
            <dt>Admins</dt>
            <dd>
              {(ch.admins ?? []).map((a) => (
                <code key={a} title={a} class="chip">
                  {shortId(a)}
                </code>
              ))}
            </dd>
          </dl>
        )}
      </Section>

      <Invites canIssue={canIssue} />
    </>
  );
}
