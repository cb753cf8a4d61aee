// Statements: per-neighbour balances per month, netted.
import { useMemo, useState } from 'preact/hooks';
import { useApi } from '../api.js';
import { Empty, ErrorNote, Field, Loading, PageHeader, Section, Stat } from '../components.jsx';
import { exactMoney, formatEnergy, formatMoney, formatMonth, shortId } from '../format.js';

export function StatementsPage({ ctx }) {
  const st = useApi('/api/statements', { every: 60000 });
  const c = ctx.currency;
  const list = st.data ?? [];
  const months = useMemo(() => [...new Set(list.map((r) => r.month))].sort().reverse(), [st.data]);
  const [month, setMonth] = useState('');
  const m = month || months[0] || '';
  const rows = list.filter((r) => r.month === m).sort((a, b) => b.net - a.net);
  const sum = (k) => rows.reduce((acc, r) => acc + (r[k] ?? 0), 0);
  const net = sum('net');

  return (
    <>
      <PageHeader title="Statements" sub="What you and each neighbour owe each other, month by month." />
      <Section
        title={m ? formatMonth(m) : 'Balances'}
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
        <ErrorNote error={st.error} />
        {!st.data ? (
          <Loading />
        ) : rows.length === 0 ? (
          <Empty>No settled trades yet, so nothing is owed either way.</Empty>
        ) : (
          <>
            <div class="stats">
              <Stat label="Owed to you" value={formatMoney(sum('receivable'), c)} kind="good" title={exactMoney(sum('receivable'), c)} />
              <Stat label="You owe" value={formatMoney(sum('payable'), c)} kind="import" title={exactMoney(sum('payable'), c)} />
              <Stat
                label={net >= 0 ? 'Net, to receive' : 'Net, to pay'}
                value={formatMoney(Math.abs(net), c)}
                title={exactMoney(net, c)}
                kind={net >= 0 ? 'good' : 'warn'}
              />
            </div>
            <table class="table responsive" data-testid="statements-table">
              <caption class="sr-only">Balances per neighbour for {formatMonth(m)}</caption>
              <thead>
                <tr>
                  <th scope="col">Neighbour</th>
                  <th scope="col" class="num">Sold to them</th>
                  <th scope="col" class="num">Bought from them</th>
                  <th scope="col" class="num">They owe</th>
                  <th scope="col" class="num">You owe</th>
                  <th scope="col" class="num">Net</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={r.counterparty}>
                    <th scope="row" data-label="Neighbour">
                      {r.counterparty_name || 'Neighbour'} <code class="muted" title={r.counterparty}>{shortId(r.counterparty)}</code>
                    </th>
                    <td data-label="Sold to them" class="num">{formatEnergy(r.sold_wh)}</td>
                    <td data-label="Bought from them" class="num">{formatEnergy(r.bought_wh)}</td>
                    <td data-label="They owe" class="num" title={exactMoney(r.receivable, c)}>{formatMoney(r.receivable, c)}</td>
                    <td data-label="You owe" class="num" title={exactMoney(r.payable, c)}>{formatMoney(r.payable, c)}</td>
                    <td data-label="Net" class={`num ${r.net >= 0 ? 'pos' : 'neg'}`} title={exactMoney(r.net, c)}>
                      <strong>
                        {r.net >= 0 ? `they pay you ${formatMoney(r.net, c)}` : `you pay ${formatMoney(-r.net, c)}`}
                      </strong>
                    </td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row" data-label="">All neighbours</th>
                  <td data-label="Sold" class="num">{formatEnergy(sum('sold_wh'))}</td>
                  <td data-label="Bought" class="num">{formatEnergy(sum('bought_wh'))}</td>
                  <td data-label="They owe" class="num">{formatMoney(sum('receivable'), c)}</td>
                  <td data-label="You owe" class="num">{formatMoney(sum('payable'), c)}</td>
                  <td data-label="Net" class="num">
                    <strong>{formatMoney(net, c, { signed: true })}</strong>
                  </td>
                </tr>
              </tfoot>
            </table>
            <p class="muted small">
              Netting: with each neighbour only the difference changes hands: what they owe you for
              energy you sold them, minus what you owe them for energy you bought. A settled trade
              counts at the energy the meters showed delivered, one not yet settled at the energy
              agreed.
            </p>
          </>
        )}
      </Section>
    </>
  );
}
