// Disputes about trades: the notes both owners wrote (open, answer, resolve), and forms to open
// a dispute, answer it, and propose or accept the amount the buyer owes for the trade.
import { useState } from 'preact/hooks';
import { canTrade, post, useApi } from '../api.js';
import { rawInt } from '../json.js';
import { Badge, Empty, ErrorNote, Field, Loading, Notice, Section, useAction, useNow } from '../components.jsx';
import { who } from '../ledger.jsx';
import { byteLength, lastResolve, noteStage, tradeValue } from '../logic.js';
import { exactMoney, formatEnergy, formatMoney, formatPrice, formatSlot, formatTime, moneyInput, parseMoney } from '../format.js';

const MAX_NOTE_BYTES = 280;

const STATUS = {
  open: ['dispute open', 'bad'],
  answered: ['dispute answered', 'warn'],
  resolved: ['dispute resolved', 'good'],
};

export function DisputeBadge({ status }) {
  if (!status) return null;
  const [label, kind] = STATUS[status] ?? [`dispute ${status}`, ''];
  return <Badge kind={kind}>{label}</Badge>;
}

const STAGE = { open: 'opened the dispute', answer: 'answered', resolve: 'proposed a resolution' };

/** What a note did: a resolution naming the amount the other side last proposed agrees to it. */
function stageText(notes, i) {
  const n = notes[i];
  if (n.stage === 'resolve' && n.amount != null && lastResolve(notes.slice(0, i), !n.ours) === n.amount) {
    return 'agreed to the resolution';
  }
  return STAGE[n.stage] ?? n.stage;
}

/** An amount for display, with the exact value when it is not a whole minor unit. */
function Amount({ v, c }) {
  return (
    <strong title={exactMoney(v, c)}>
      {formatMoney(v, c)}
      {v % 1000 !== 0 && <span class="muted small"> ({exactMoney(v, c)})</span>}
    </strong>
  );
}

function sendNote(d, stage, text, amount) {
  const body = { taker: d.taker, nonce: rawInt(d.nonce), stage, text };
  if (amount != null) body.amount = amount;
  return post('/api/disputes', body);
}

function NoteText({ id, label, value, onInput, hint }) {
  const n = byteLength(value);
  return (
    <Field label={label} id={id} hint={`${hint ? `${hint} ` : ''}${n} of ${MAX_NOTE_BYTES} bytes.`}>
      <textarea id={id} rows={3} value={value} onInput={(e) => onInput(e.currentTarget.value)} aria-describedby={`${id}-hint`} />
    </Field>
  );
}

/** Open a dispute about a trade that has none yet. */
export function OpenDispute({ t, ctx, trading, onOpened }) {
  const [text, setText] = useState('');
  const [problem, setProblem] = useState(null);
  const { run, busy, error } = useAction();
  const id = `open-${t.nonce}`;
  const submit = async (e) => {
    e.preventDefault();
    setProblem(null);
    if (!text.trim()) return setProblem('Say what went wrong, so your neighbour can answer.');
    if (byteLength(text.trim()) > MAX_NOTE_BYTES) return setProblem(`The note is too long: at most ${MAX_NOTE_BYTES} bytes.`);
    const r = await run(() => sendNote(t, 'open', text.trim()));
    if (r) {
      setText('');
      onOpened();
    }
  };
  if (!trading) return <Empty>No dispute about this trade.</Empty>;
  return (
    <form class="stack" onSubmit={submit} data-testid="open-dispute" noValidate>
      <p class="muted small">
        Something wrong with this trade? Write to {t.counterparty_name || 'your neighbour'}: both of you see the notes,
        and the trade stays pending in your statements until you both name the same amount.
      </p>
      <NoteText id={id} label="What went wrong?" value={text} onInput={setText} />
      {problem && <ErrorNote error={{ message: problem }} />}
      <ErrorNote error={error} />
      <div class="form-actions">
        <button type="submit" class="danger" disabled={busy}>
          {busy ? 'Sending…' : 'Open a dispute'}
        </button>
      </div>
    </form>
  );
}

/** One dispute: what the trade was, how it settled, the notes, and what the owner can do next. */
export function DisputeCard({ d, ctx, trading, onChange, headless }) {
  const c = ctx.currency;
  const now = useNow(30000);
  const notes = d.notes ?? [];
  const ours = lastResolve(notes, true);
  const theirs = lastResolve(notes, false);
  const value = tradeValue(d.energy_wh, d.price);
  const buyer = d.side === 'buy' ? 'you' : who(d);
  const [text, setText] = useState('');
  const [amount, setAmount] = useState(theirs != null ? moneyInput(theirs) : '');
  const [problem, setProblem] = useState(null);
  const [sent, setSent] = useState(null);
  const { run, busy, error } = useAction();
  const stage = noteStage(notes);
  const wroteAny = notes.some((n) => n.ours);
  const prefix = `d-${d.nonce}`;

  const send = async (kind, amt) => {
    setProblem(null);
    setSent(null);
    const t = text.trim();
    if (byteLength(t) > MAX_NOTE_BYTES) return setProblem(`The note is too long: at most ${MAX_NOTE_BYTES} bytes.`);
    if (kind !== 'resolve' && !t) return setProblem('Write a note first.');
    if (kind === 'resolve' && (amt == null || amt < 0)) {
      return setProblem(`Enter what the buyer pays for this trade in ${c}, for example 0.40.`);
    }
    if (kind === 'resolve' && amt > value) {
      return setProblem(`A resolution cannot be more than the trade's full value, ${formatMoney(value, c)}.`);
    }
    const r = await run(() => sendNote(d, kind, t, kind === 'resolve' ? amt : undefined));
    if (r) {
      setText('');
      setSent(kind === 'resolve' ? `You proposed that ${buyer} pay${buyer === 'you' ? '' : 's'} ${formatMoney(amt, c)}.` : 'Sent.');
      onChange();
    }
  };

  return (
    <article class="dispute" data-testid="dispute" data-taker={d.taker} data-nonce={d.nonce} data-status={d.status}>
      <div class="dispute-head">
        <h3>
          {formatSlot(d.slot_ms, ctx.slotMinutes, now)}: you {d.side === 'sell' ? 'sold' : 'bought'} {formatEnergy(d.energy_wh)}{' '}
          {d.side === 'sell' ? 'to' : 'from'} {who(d)} at {formatPrice(d.price, c)}
        </h3>
        <DisputeBadge status={d.status} />
      </div>
      {!headless && (
        <p class="small">
          <a href={`#/trades/${encodeURIComponent(d.taker)}/${encodeURIComponent(d.nonce)}`}>Trade details</a>
          <span class="muted" title={exactMoney(value, c)}>
            {' '}
            · full value {formatMoney(value, c)}
            {value % 1000 !== 0 && ` (${exactMoney(value, c)})`}
          </span>
        </p>
      )}
      {(d.settlement === 'unilateral' || d.settlement === 'disputed') && (
        <Notice kind="warn">
          {d.settlement === 'unilateral'
            ? 'Settled one-sided: your neighbour did not co-sign the settlement, so this node recorded it alone'
            : 'The meters disagreed, so the settlement is disputed'}
          {d.reason ? `. Reason: ${d.reason}.` : '.'}
        </Notice>
      )}
      {notes.length > 0 ? (
        <ol class="thread" aria-label="Notes">
          {notes.map((n, i) => (
            <li key={i} class={n.ours ? 'ours' : 'theirs'} data-testid="dispute-note" data-stage={n.stage} data-ours={n.ours ? 'yes' : 'no'}>
              <div class="note-meta">
                <strong>{n.ours ? 'You' : who(d)}</strong> {stageText(notes, i)} ·{' '}
                <time dateTime={new Date(n.created_ms).toISOString()}>{formatTime(n.created_ms, now)}</time>
              </div>
              {n.text && <p>{n.text}</p>}
              {n.stage === 'resolve' && n.amount != null && (
                <p class="note-amount">
                  The buyer pays <Amount v={n.amount} c={c} /> for this trade.
                </p>
              )}
            </li>
          ))}
        </ol>
      ) : (
        <p class="muted small">No notes yet.</p>
      )}
      {d.status === 'resolved' ? (
        <Notice kind="ok">
          Resolved: {buyer} pay{buyer === 'you' ? '' : 's'} <Amount v={d.resolved_amount} c={c} /> for this trade; it now counts
          at that amount in both statements.
        </Notice>
      ) : (
        trading && (
          <div class="dispute-actions">
            {theirs != null && theirs !== ours && (
              <div class="accept-row">
                <p>
                  {who(d)} proposes that {buyer} pay{buyer === 'you' ? '' : 's'} <Amount v={theirs} c={c} />.
                </p>
                <button type="button" class="primary" disabled={busy} onClick={() => send('resolve', theirs)} data-testid="accept-resolution">
                  Accept {formatMoney(theirs, c)}
                </button>
              </div>
            )}
            {ours != null && ours !== theirs && (
              <p class="muted small">You proposed {formatMoney(ours, c)}; waiting for {who(d)} to agree or answer.</p>
            )}
            <NoteText
              id={`${prefix}-text`}
              label={!wroteAny && notes.length ? 'Your answer' : 'Your note'}
              value={text}
              onInput={setText}
              hint="Sent with either button below."
            />
            <div class="dispute-forms">
              <button type="button" disabled={busy} onClick={() => send(stage)} data-testid="send-note">
                {!wroteAny && notes.length ? 'Send answer' : stage === 'open' ? 'Open the dispute' : 'Send note'}
              </button>
              <div class="input-row resolve-row">
                <Field label={`${buyer === 'you' ? 'You pay' : `${who(d)} pays`} (${c})`} id={`${prefix}-amount`} hint={`At most ${formatMoney(value, c)}, the trade's full value.`}>
                  <input
                    id={`${prefix}-amount`}
                    inputMode="decimal"
                    value={amount}
                    onInput={(e) => setAmount(e.currentTarget.value)}
                    aria-describedby={`${prefix}-amount-hint`}
                  />
                </Field>
                <button type="button" disabled={busy} onClick={() => send('resolve', parseMoney(amount))} data-testid="propose-resolution">
                  Propose this amount
                </button>
              </div>
            </div>
            {problem && <ErrorNote error={{ message: problem }} />}
            <ErrorNote error={error} />
            {sent && <Notice kind="ok">{sent}</Notice>}
          </div>
        )
      )}
    </article>
  );
}

/** Every trade with a dispute or a one-sided settlement. */
export function Disputes({ ctx, onChange }) {
  const led = useApi('/api/ledger', { every: 5000 });
  const trading = canTrade(ctx.user);
  const list = [...(led.data?.disputes ?? [])].sort(
    (a, b) => (a.status === 'resolved') - (b.status === 'resolved') || b.slot_ms - a.slot_ms,
  );
  const resolved = list.filter((d) => d.status === 'resolved');
  const changed = () => {
    led.reload();
    onChange?.();
  };
  return (
    <Section title="Disputes" id="disputes">
      <ErrorNote error={led.error} />
      {!led.data ? (
        <Loading />
      ) : list.length === 0 ? (
        <Empty>No disputes. To dispute a trade, open its details and say what went wrong.</Empty>
      ) : (
        <div class="disputes" data-testid="disputes">
          {list.filter((d) => d.status !== 'resolved').map((d) => (
            <DisputeCard key={`${d.taker}/${d.nonce}`} d={d} ctx={ctx} trading={trading} onChange={changed} />
          ))}
          {resolved.length > 0 && (
            <details class="resolved" open={resolved.length < 3 && resolved.length === list.length}>
              <summary>
                {resolved.length} resolved dispute{resolved.length === 1 ? '' : 's'}
              </summary>
              <div class="disputes">
                {resolved.map((d) => (
                  <DisputeCard key={`${d.taker}/${d.nonce}`} d={d} ctx={ctx} trading={trading} onChange={changed} />
                ))}
              </div>
            </details>
          )}
        </div>
      )}
      <p class="muted small">
        A dispute is open while one side wrote, answered once both did, and resolved when both sides' latest
        proposals name the same amount. Until then the trade is pending in both statements.
      </p>
    </Section>
  );
}
