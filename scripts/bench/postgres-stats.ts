// What a PostgreSQL run's holds asked of the server, statement by statement, from
// pg_stat_statements (`--pg-statements`): each statement is one round trip from a node, so
// their count per hold is the round trips a hold waits for, and their execution time includes
// the waits for row locks.
import pg from 'pg'

/** The server settings that make pg_stat_statements count every statement, BEGIN and COMMIT included. */
export const STATEMENT_COUNTING_SETTINGS = {
  shared_preload_libraries: 'pg_stat_statements',
  'pg_stat_statements.track_utility': 'on',
  'pg_stat_statements.max': 1000,
  // Each statement arrives unnamed, so the server parses and plans it every time: count that too.
  'pg_stat_statements.track_planning': 'on',
}

export interface StatementShare {
  /** The normalised statement, whitespace folded. */
  query: string
  /** Executions per hold answered. */
  perHold: number
  /** Server time per execution, lock waits included. */
  meanMs: number
  /** Server time planning it, per execution. */
  meanPlanMs: number
}

export interface StatementCount {
  perHold: number
  /** Server execution time per hold, all statements, lock waits included. */
  serverMsPerHold: number
  /** Server planning time per hold, all statements. */
  planMsPerHold: number
  statements: StatementShare[]
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** Makes the view readable in the database `url` names and forgets what was counted so far. */
export async function startCountingStatements(url: string): Promise<void> {
  await withClient(url, async (client) => {
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
    await client.query('SELECT pg_stat_statements_reset()')
  })
}

/** The statements run in the database `url` names since `startCountingStatements`, per hold. */
export async function countStatements(url: string, requests: number): Promise<StatementCount> {
  const rows = await withClient(url, (client) =>
    client.query<{ query: string; calls: string; total_exec_time: number; total_plan_time: number }>(
      `SELECT query, calls, total_exec_time, total_plan_time FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    ),
  )
  const statements = rows.rows
    .map((row) => ({
      query: row.query.replace(/\s+/g, ' ').trim(),
      perHold: Number(row.calls) / requests,
      meanMs: row.total_exec_time / Number(row.calls),
      meanPlanMs: row.total_plan_time / Number(row.calls),
      totalMs: row.total_exec_time,
      totalPlanMs: row.total_plan_time,
    }))
    // The sweeper's and the deliverer's polls, and this query itself, run a few times a second
    // whatever the load: only what runs about once per hundred holds or more is the holds' own.
    .filter((statement) => statement.perHold >= 0.01)
    .sort((a, b) => b.perHold - a.perHold || b.totalMs - a.totalMs)
  return {
    perHold: statements.reduce((sum, statement) => sum + statement.perHold, 0),
    serverMsPerHold: statements.reduce((sum, statement) => sum + statement.totalMs, 0) / requests,
    planMsPerHold: statements.reduce((sum, statement) => sum + statement.totalPlanMs, 0) / requests,
    statements: statements.map(({ query, perHold, meanMs, meanPlanMs }) => ({ query, perHold, meanMs, meanPlanMs })),
  }
}

export function formatStatements(count: StatementCount): string {
  const lines = [
    `  ${count.perHold.toFixed(1)} statements per hold; server time per hold: ${count.serverMsPerHold.toFixed(3)} ms executing (lock waits included), ${count.planMsPerHold.toFixed(3)} ms planning`,
    '  per hold × mean ms executing + planning:',
  ]
  for (const statement of count.statements) {
    const text = statement.query.length > 110 ? `${statement.query.slice(0, 107)}...` : statement.query
    lines.push(`  ${statement.perHold.toFixed(2).padStart(6)} × ${statement.meanMs.toFixed(3).padStart(7)} + ${statement.meanPlanMs.toFixed(3)}  ${text}`)
  }
  return lines.join('\n')
}
