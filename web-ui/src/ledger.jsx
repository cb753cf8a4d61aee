// Shared pieces of the ledger pages: documents neighbours sent (agreements and payments) that
// wait for the owner, and an agreement's terms in words.
import { useState } from 'preact/hooks';
import { post } from './api.js';
import { Badge, Empty, ErrorNote, Notice, useAction } from './components.jsx';
import { docState, hoursText, weekdaysText } from './logic.js';
import {
  exactMoney, formatEnergy, formatMoney, formatOffset, formatOffsetDate, formatPrice, formatTime, shortId,
} from './format.js';

export const who = (d) => d.counterparty_name || shortId(d.counterparty) || 'Neighbour';

/** "Monday to Friday, 10:00–16:00 (UTC+01:00)" */
export function scheduleText(d) {
  return `${weekdaysText(d.weekdays)}, ${hoursText(d.from_min, d.to_min)} (${formatOffset(d.utc_offset_min)})`;
}

/** "3 Jun – 9 Jun 2026": the period's first and last day, in the agreement's offset. */
export function periodText(d) {
  const last = Math.max(d.start_ms, d.end_ms - 1);
  return `${formatOffsetDate(d.start_ms, d.utc_offset_min)} – ${formatOffsetDate(last, d.utc_offset_min)}`;
}

/** One sentence for a document, from our side. */
export function docSummary(d, currency) {
  if (d.kind === 'payment') {
    const amt = formatMoney(Math.abs(d.amount ?? 0), currency);
    const ref = d.reference ? ` (“${d.reference}”)` : '';
    return d.amount >= 0 ? `${who(d)} says they paid you ${amt}${ref}.` : `You paid ${who(d)} ${amt}${ref}.`;
  }
  const verb = d.side === 'sell' ? `You sell ${formatEnergy(d.per_slot_wh)} to` : `You buy ${formatEnergy(d.per_slot_wh)} from`;
  return `${verb} ${who(d)} in every slot at ${formatPrice(d.price, currency)}: ${scheduleText(d)}, ${periodText(d)}.`;
}

export function DocBadge({ d }) {
  const s = docState(d);
  return <Badge kind={s.kind}>{s.label}</Badge>;
}

/** Countersign or decline a document a neighbour sent. */
export function Decide({ d, onDone, trading, currency }) {
  const { run, busy, error } = useAction();
  const [done, setDone] = useState(null);
  const decide = async (decision) => {
    const r = await run(() => post(`/api/documents/${encodeURIComponent(d.id)}`, { decision }));
    if (r) {
      setDone(decision);
      onDone?.();
    }
  };
  const what = d.kind === 'payment' ? `the payment of ${formatMoney(Math.abs(d.amount ?? 0), currency)}` : 'the agreement';
  return (
    <div class="decide">
      <div class="decide-buttons" role="group" aria-label={`Decide on ${what} from ${who(d)}`}>
        <button type="button" class="primary" disabled={!trading || busy || !!done} onClick={() => decide('accept')} data-testid="doc-accept">
          {d.kind === 'payment' ? 'Confirm' : 'Accept'}
          <span class="sr-only"> {what} from {who(d)}</span>
        </button>
        <button type="button" disabled={!trading || busy || !!done} onClick={() => decide('decline')} data-testid="doc-decline">
          Decline<span class="sr-only"> {what} from {who(d)}</span>
        </button>
      </div>
      <ErrorNote error={error} />
    </div>
  );
}

/**
 * Withdraw an agreement or payment this owner sent that the neighbour has not countersigned.
 * (If the neighbour signed it meanwhile, the node gets the signed copy back and it stays.)
 */
export function Withdraw({ d, onDone, trading, currency }) {
  const { run, busy, error } = useAction();
  const [done, setDone] = useState(false);
  const what = d.kind === 'payment' ? `the payment of ${formatMoney(Math.abs(d.amount ?? 0), currency)}` : 'the agreement';
  const withdraw = async () => {
    const r = await run(() => post(`/api/documents/${encodeURIComponent(d.id)}`, { decision: 'withdraw' }));
    if (r) {
      setDone(true);
      onDone?.();
    }
  };
  return (
    <div class="decide">
      <button type="button" disabled={!trading || busy || done} onClick={withdraw} data-testid="doc-withdraw">
        {busy ? 'Withdrawing…' : 'Withdraw'}
        <span class="sr-only"> {what} with {who(d)}</span>
      </button>
      <ErrorNote error={error} />
    </div>
  );
}

/** The agreements and payments neighbours sent that wait for this owner. */
export function WaitingForYou({ docs, ctx, onDone, trading }) {
  const waiting = (docs ?? []).filter((d) => !d.outgoing && d.state === 'offered').sort((a, b) => b.created_ms - a.created_ms);
  if (!waiting.length) return <Empty>Nothing waits for you.</Empty>;
  return (
    <ul class="doc-list" data-testid="waiting-list">
      {waiting.map((d) => (
        <li key={d.id} data-testid="waiting-doc" data-id={d.id} data-kind={d.kind}>
          <div>
            <strong>{d.kind === 'payment' ? 'Payment' : 'Standing agreement'}</strong>{' '}
            <span class="muted small">from {who(d)}, {formatTime(d.created_ms, ctx.now)}</span>
            <p title={d.kind === 'payment' ? exactMoney(d.amount, ctx.currency) : undefined}>{docSummary(d, ctx.currency)}</p>
            {d.kind === 'payment' && (
              <p class="muted small">Confirm only once the money has arrived: it then counts in both statements.</p>
            )}
          </div>
          <Decide d={d} onDone={onDone} trading={trading} currency={ctx.currency} />
        </li>
      ))}
    </ul>
  );
}

export function ReadOnlyNote({ trading }) {
  return trading ? null : <Notice>Your account can see these but not sign or decide.</Notice>;
}
