// The query plans of the service's own statements: a kysely builder exported by a domain
// module is compiled here exactly as the service compiles it (same dialect), and its SQL and
// bound parameters are EXPLAINed on a database file the service made. A change of the
// service's SQL changes what the tests plan.
import type Sqlite from 'better-sqlite3'
import { DummyDriver, Kysely, SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler, type Compilable } from 'kysely'
import type { DatabaseSchema, DbConn } from '../../src/db/index.js'

/** Builds and compiles the service's statements; never runs one. */
export const compileOnly: DbConn = new Kysely<DatabaseSchema>({
  dialect: {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new SqliteIntrospector(db),
    createQueryCompiler: () => new SqliteQueryCompiler(),
  },
})

export interface Statement {
  sql: string
  parameters: readonly unknown[]
}

/** A kysely builder's SQL and parameters, as the service sends them. */
export function compiled(query: Compilable): Statement {
  const { sql, parameters } = query.compile()
  return { sql, parameters }
}

export interface PlanRow {
  id: number
  parent: number
  detail: string
}

export function explain(db: Sqlite.Database, statement: Statement): PlanRow[] {
  return db.prepare(`EXPLAIN QUERY PLAN ${statement.sql}`).all(...statement.parameters) as PlanRow[]
}

/** The plan as an indented tree, to print and quote. */
export function formatPlan(rows: PlanRow[]): string {
  const depth = new Map<number, number>()
  return rows
    .map((row) => {
      const d = (depth.get(row.parent) ?? -1) + 1
      depth.set(row.id, d)
      return `${'  '.repeat(d)}${row.detail}`
    })
    .join('\n')
}
