// Statements: per-neighbour balances per month (opening, trades, payments, closing, pending),
// balances now with a way to record a payment, payments and documents waiting for the owner.
import { useMemo, useState } from 'preact/hooks';
import { canTrade, nodeNow, post, useApi } from '../api.js';
import {
  Badge, Dialog, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, Stat, useAction, useNow,
} from '../components.jsx';
import { DocBadge, ReadOnlyNote, WaitingForYou, Withdraw, who } from '../ledger.jsx';
import { byteLength } from '../logic.js';
import {
  exactMoney, formatEnergy, formatMoney, formatMonth, formatTime, moneyInput, offsetDateInput, parseMoney, shortId,
} from '../format.js';

const MAX_REFERENCE_BYTES = 64;

/** "they owe you €1.23" / "you owe €0.50" / "settled up", for a balance (positive: they owe us). */
function owed(v, c) {
  if (!v) return 'settled up';
  return v > 0 ? `they owe you ${formatMoney(v, c)}` : `you owe ${formatMoney(-v, c)}`;
}

function Money({ v, c, signed }) {
  return <span title={exactMoney(v, c)}>{formatMoney(v, c, { signed })}</span>;
}

function PayDialog({ line, ctx, onClose, onPaid }) {
  const c = ctx.currency;
  const [amount, setAmount] = useState(line.closing < 0 ? moneyInput(-line.closing) : '');
  const [reference, setReference] = useState('');
  const [problem, setProblem] = useState(null);
  const [done, setDone] = useState(null);
  const { run, busy, error } = useAction();
  const name = line.counterparty_name || shortId(line.counterparty);
  const submit = async (e) => {
    e.preventDefault();
    setProblem(null);
    const v = parseMoney(amount);
    if (v == null || v <= 0) return setProblem(`Enter the amount you paid in ${c}, for example 12.50.`);
    if (byteLength(reference.trim()) > MAX_REFERENCE_BYTES) return setProblem(`The reference is too long (at most ${MAX_REFERENCE_BYTES} bytes).`);
    const r = await run(() => post('/api/payments', { payee: line.counterparty, amount: v, reference: reference.trim() }));
    if (r) {
      setDone(v);
      onPaid();
    }
  };
  return (
    <Dialog open title={`Record a payment to ${name}`} onClose={onClose}>
      {done != null ? (
        <>
          <Notice kind="ok">
            Recorded: you paid {name} {formatMoney(done, c)}. It counts in both statements once {name} confirms it arrived.
          </Notice>
          <div class="form-actions">
            <button type="button" class="primary" onClick={onClose}>
              Done
            </button>
          </div>
        </>
      ) : (
        <form class="stack" onSubmit={submit} data-testid="pay-form" noValidate>
          <p>
            Balance now: <strong>{owed(line.closing, c)}</strong>
            {line.pending ? ` (and ${formatMoney(Math.abs(line.pending), c)} in trades not settled yet)` : ''}.
          </p>
          <Field label={`Amount (${c})`} id="pay-amount" hint={line.closing < 0 ? 'Prefilled with what you owe.' : null}>
            <input id="pay-amount" inputMode="decimal" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} aria-describedby="pay-amount-hint" />
          </Field>
          <Field label="Reference" id="pay-ref" hint="How you paid, so they can find it: “bank transfer 12 June”.">
            <input id="pay-ref" value={reference} maxLength={MAX_REFERENCE_BYTES} onInput={(e) => setReference(e.currentTarget.value)} aria-describedby="pay-ref-hint" />
          </Field>
          {problem && <ErrorNote error={{ message: problem }} />}
          <ErrorNote error={error} />
          <div class="form-actions">
            <button type="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Recording…' : 'Record payment'}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

function MonthTable({ rows, c, month }) {
  const sum = (k) => rows.reduce((acc, r) => acc + (r[k] ?? 0), 0);
  return (
    <table class="table responsive" data-testid="statements-table">
      <caption class="sr-only">Balances per neighbour for {formatMonth(month)}</caption>
      <thead>
        <tr>
          <th scope="col">Neighbour</th>
          <th scope="col" class="num">Opening</th>
          <th scope="col" class="num">Energy</th>
          <th scope="col" class="num">Trades</th>
          <th scope="col" class="num">Payments</th>
          <th scope="col" class="num">Closing</th>
          <th scope="col" class="num">Pending</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.counterparty} data-testid="statement-row" data-peer={r.counterparty}>
            <th scope="row" data-label="Neighbour">
              <span>
                {r.counterparty_name || 'Neighbour'} <code class="muted" title={r.counterparty}>{shortId(r.counterparty)}</code>
              </span>
            </th>
            <td data-label="Opening" class="num"><Money v={r.opening} c={c} /></td>
            <td data-label="Energy" class="num">
              <span>
                sold {formatEnergy(r.sold_wh)}
                <br />
                bought {formatEnergy(r.bought_wh)}
              </span>
            </td>
            <td data-label="Trades" class={`num ${r.net >= 0 ? 'pos' : 'neg'}`}>
              <span title={`They owe ${exactMoney(r.receivable, c)}, you owe ${exactMoney(r.payable, c)}`}>
                {formatMoney(r.net, c, { signed: true })}
              </span>
            </td>
            <td data-label="Payments" class="num" data-testid="statement-payments">
              <span>
                {r.payments_received ? <>received <Money v={r.payments_received} c={c} /></> : null}
                {r.payments_received && r.payments_made ? <br /> : null}
                {r.payments_made ? <>paid <Money v={r.payments_made} c={c} /></> : null}
                {!r.payments_received && !r.payments_made ? '–' : null}
              </span>
            </td>
            <td data-label="Closing" class={`num ${r.closing >= 0 ? 'pos' : 'neg'}`}>
              <strong title={exactMoney(r.closing, c)}>{owed(r.closing, c)}</strong>
            </td>
            <td data-label="Pending" class="num">
              <span>
                {r.pending ? <Money v={r.pending} c={c} signed /> : '–'}
                {r.open_disputes > 0 && (
                  <>
                    {' '}
                    <Badge kind="bad">
                      {r.open_disputes} open dispute{r.open_disputes === 1 ? '' : 's'}
                    </Badge>
                  </>
                )}
              </span>
            </td>
          </tr>
        ))}
      </tbody>
      {rows.length > 1 && (
        <tfoot>
          <tr>
            <th scope="row" data-label="">All neighbours</th>
            <td data-label="Opening" class="num"><Money v={sum('opening')} c={c} /></td>
            <td data-label="Energy" class="num">
              <span>
                sold {formatEnergy(sum('sold_wh'))}
                <br />
                bought {formatEnergy(sum('bought_wh'))}
              </span>
            </td>
            <td data-label="Trades" class="num"><Money v={sum('net')} c={c} signed /></td>
            <td data-label="Payments" class="num"><Money v={sum('payments_received') - sum('payments_made')} c={c} signed /></td>
            <td data-label="Closing" class="num"><strong><Money v={sum('closing')} c={c} signed /></strong></td>
            <td data-label="Pending" class="num"><Money v={sum('pending')} c={c} signed /></td>
          </tr>
        </tfoot>
      )}
    </table>
  );
}

export function StatementsPage({ ctx }) {
  const led = useApi('/api/ledger', { every: 10000 });
  const trader = useApi('/api/trader');
  const now = useNow(30000);
  const trading = canTrade(ctx.user);
  const c = ctx.currency;
  const list = led.data?.statements ?? [];
  const months = useMemo(() => [...new Set(list.map((r) => r.month))].sort().reverse(), [led.data]);
  const [month, setMonth] = useState('');
  const [paying, setPaying] = useState(null);
  // Statements run in the owner's time zone (the trader settings): open on the current month.
  const offset = trader.data?.limits?.utc_offset_minutes ?? -new Date().getTimezoneOffset();
  const current = offsetDateInput(nodeNow(), offset).slice(0, 7);
  const m = month || (months.includes(current) ? current : months.find((k) => k <= current) || months[0] || '');
  const rows = list.filter((r) => r.month === m).sort((a, b) => b.closing - a.closing);
  const sum = (k) => rows.reduce((acc, r) => acc + (r[k] ?? 0), 0);
  const balances = [...(led.data?.balances ?? [])].sort((a, b) => a.closing - b.closing);
  const docs = led.data?.documents ?? [];
  const payments = docs.filter((d) => d.kind === 'payment').sort((a, b) => b.created_ms - a.created_ms);
  const closing = sum('closing');

  return (
    <>
      <PageHeader title="Statements" sub="What you and each neighbour owe each other, month by month, and the payments between you." />
      <ReadOnlyNote trading={trading} />
      <ErrorNote error={led.error} />
      {docs.some((d) => !d.outgoing && d.state === 'offered') && (
        <Section title="Waiting for you" id="waiting">
          <WaitingForYou docs={docs} ctx={{ ...ctx, now }} trading={trading} onDone={led.reload} />
        </Section>
      )}
      <Section
        title={m ? formatMonth(m) : 'Statement'}
        id="statement"
        actions={
          months.length > 1 && (
            <Field label="Month" id="s-month" class="inline">
              <select id="s-month" value={m} onChange={(e) => setMonth(e.currentTarget.value)}>
                {months.map((k) => (
                  <option key={k} value={k}>
                    {formatMonth(k)}
                  </option>
                ))}
              </select>
            </Field>
          )
        }
      >
        {!led.data ? (
          <Loading />
        ) : rows.length === 0 ? (
          <Empty>No trades or payments yet, so nothing is owed either way.</Empty>
        ) : (
          <>
            <div class="stats">
              <Stat label="Opening balance" value={formatMoney(sum('opening'), c, { signed: true })} title={exactMoney(sum('opening'), c)} />
              <Stat label="Trades this month" value={formatMoney(sum('net'), c, { signed: true })} title={exactMoney(sum('net'), c)} kind={sum('net') >= 0 ? 'good' : 'import'} />
              <Stat
                label="Payments received"
                value={formatMoney(sum('payments_received'), c)}
                sub={`you paid ${formatMoney(sum('payments_made'), c)}`}
                title={exactMoney(sum('payments_received'), c)}
              />
              <Stat
                label={closing >= 0 ? 'Closing, to receive' : 'Closing, to pay'}
                value={formatMoney(Math.abs(closing), c)}
                title={exactMoney(closing, c)}
                kind={closing >= 0 ? 'good' : 'warn'}
              />
              <Stat
                label="Pending"
                value={formatMoney(sum('pending'), c, { signed: true })}
                sub={sum('open_disputes') ? `${sum('open_disputes')} open dispute${sum('open_disputes') === 1 ? '' : 's'}` : 'not settled yet'}
                title={exactMoney(sum('pending'), c)}
              />
            </div>
            <MonthTable rows={rows} c={c} month={m} />
            <p class="muted small">
              Closing = opening + trades − payments received + payments made; positive means the neighbour
              owes you. A trade counts once both meters' settlement is signed (at the energy delivered) or
              its dispute is resolved (at the amount you both named). Trades not settled yet, settled by one
              side alone or in open dispute are pending: shown, never counted as owed. Netting: with each
              neighbour only the difference changes hands.
            </p>
          </>
        )}
      </Section>
      <Section title="Balances now" id="balances">
        {!led.data ? (
          <Loading />
        ) : balances.length === 0 ? (
          <Empty>No balances with any neighbour yet.</Empty>
        ) : (
          <ul class="doc-list" data-testid="balances">
            {balances.map((l) => (
              <li key={l.counterparty} data-testid="balance" data-peer={l.counterparty}>
                <div>
                  <strong>{l.counterparty_name || 'Neighbour'}</strong> <code class="muted">{shortId(l.counterparty)}</code>
                  <p>
                    <span class={l.closing < 0 ? 'neg' : 'pos'} title={exactMoney(l.closing, c)}>
                      {owed(l.closing, c).replace(/^./, (x) => x.toUpperCase())}
                    </span>
                    {l.pending ? <span class="muted small"> · pending <Money v={l.pending} c={c} signed /></span> : null}
                    {l.open_disputes ? <span class="muted small"> · {l.open_disputes} open dispute{l.open_disputes === 1 ? '' : 's'}</span> : null}
                  </p>
                </div>
                <button type="button" class={l.closing < 0 ? 'primary' : ''} disabled={!trading} onClick={() => setPaying(l)} data-testid="record-payment">
                  Record a payment<span class="sr-only"> to {l.counterparty_name || shortId(l.counterparty)}</span>
                </button>
              </li>
            ))}
          </ul>
        )}
      </Section>
      <Section title="Payments" id="payments">
        {!led.data ? (
          <Loading />
        ) : payments.length === 0 ? (
          <Empty>No payments recorded yet.</Empty>
        ) : (
          <table class="table responsive" data-testid="payments-table">
            <caption class="sr-only">Payments between you and your neighbours</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col" class="num">Amount</th>
                <th scope="col">Reference</th>
                <th scope="col">State</th>
                <th scope="col"><span class="sr-only">Action</span></th>
              </tr>
            </thead>
            <tbody>
              {payments.map((d) => (
                <tr key={d.id} data-testid="payment-row" data-id={d.id} data-state={d.state}>
                  <td data-label="When">{formatTime(d.created_ms, now)}</td>
                  <td data-label="Who">{d.amount >= 0 ? `${who(d)} paid you` : `You paid ${who(d)}`}</td>
                  <td data-label="Amount" class={`num ${d.amount >= 0 ? 'pos' : 'neg'}`}>
                    <Money v={Math.abs(d.amount)} c={c} />
                  </td>
                  <td data-label="Reference">{d.reference || <span class="muted">–</span>}</td>
                  <td data-label="State">
                    <DocBadge d={d} />
                  </td>
                  <td class="actions">
                    {d.outgoing && d.state === 'proposed' && trading && (
                      <Withdraw d={d} trading={trading} currency={c} onDone={led.reload} />
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <p class="muted small">
          A payment counts once the neighbour who received it confirms it on their node. Until then you
          may withdraw one you recorded by mistake.
        </p>
      </Section>
      {paying && <PayDialog line={paying} ctx={ctx} onClose={() => setPaying(null)} onPaid={led.reload} />}
    </>
  );
}
